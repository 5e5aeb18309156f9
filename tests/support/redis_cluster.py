"""A Redis Cluster the test suite starts itself: three masters (no replicas) on free loopback
ports, joined with ``redis-cli --cluster create``, so cluster behaviour (slots, MOVED, sharded
pub/sub, a node that dies and comes back) is tested against real servers, not mocks."""

import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from tests.support.processes import HOST, free_port
from tests.support.redis_server import answers_ping
from tests.support.wait import until_sync

logger = logging.getLogger(__name__)

NODES = 3
SLOTS = 16384
NODE_TIMEOUT_MS = 2000  # how long before peers mark a dead node as failed
PING_TIMEOUT = 10.0
CREATE_TIMEOUT = 30.0
CLUSTER_OK_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
MAX_PORT_TRIES = 50


class RedisCluster:
    """Three (``size``) ``redis-server --cluster-enabled yes`` processes the test owns (by PID).

    start() takes ~2 s, and so does restart_node(): a master that starts (or restarts) keeps
    ``cluster_state:fail`` for a fixed 2 s (Redis' CLUSTER_WRITABLE_DELAY), whatever the join.

    Each node also gets its own free cluster-bus port (``--cluster-port``): the default bus
    port is the client port + 10000, which for an ephemeral port may be taken or above 65535.
    """

    def __init__(
        self, workdir: Path, *, size: int = NODES, preexec_fn: Callable[[], None] | None = None
    ) -> None:
        assert size >= 3, "redis-cli --cluster create needs at least 3 masters"
        self.workdir = workdir.resolve()  # redis-server changes into it: no relative paths
        self.preexec_fn = preexec_fn
        self.ports: list[int] = []
        self.bus_ports: list[int] = []
        taken: set[int] = set()
        for _ in range(MAX_PORT_TRIES):
            if len(self.ports) == size and len(self.bus_ports) == size:
                break
            port = free_port()
            if port in taken:
                continue
            taken.add(port)
            (self.ports if len(self.ports) < size else self.bus_ports).append(port)
        assert len(self.bus_ports) == size, "could not find enough distinct free ports"
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size
        self.start_seconds: float | None = None

    @property
    def urls(self) -> list[str]:
        return [f"redis://{HOST}:{port}/0" for port in self.ports]

    @property
    def url(self) -> str:
        """The first node: enough for a cluster client to discover the others."""
        return self.urls[0]

    @property
    def cluster_url(self) -> str:
        """Every node, in the form the app accepts for a cluster."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def log_path(self, i: int) -> Path:
        return self.workdir / f"redis-{self.ports[i]}.log"

    def start(self) -> None:
        """Start every node, join them into one cluster and wait until it serves all slots."""
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(len(self.ports)):
                self._spawn(i)
            for i in range(len(self.ports)):
                self._wait_ping(i)
            self._create()
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        logger.info("redis cluster on ports %s ready in %.2fs", self.ports, self.start_seconds)

    def stop(self) -> None:
        """SIGTERM every node by PID, wait (bounded), SIGKILL the ones still alive."""
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused server must die too
                process.terminate()
        for i, process in enumerate(self.processes):
            if process is None:
                continue
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("redis node %s ignored SIGTERM; killing it", self.ports[i])
                process.kill()
                process.wait(STOP_TIMEOUT)
            self.processes[i] = None

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i``: no goodbye to clients or peers, exactly like a crash."""
        process = self.processes[i]
        self.processes[i] = None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server must die too
            process.send_signal(signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
            logger.info("redis node %s killed", self.ports[i])

    def restart_node(self, i: int) -> None:
        """Start node ``i`` again on its port with its nodes.conf, and wait until it rejoined.

        With no replicas, peers keep a failed master's slots; they clear its FAIL flag only
        some time after it answers again, hence the wait on every node.
        """
        self.kill_node(i)
        started = time.monotonic()
        self._spawn(i)
        self._wait_ping(i)
        self.wait_ok()
        logger.info("redis node %s back in %.2fs", self.ports[i], time.monotonic() - started)

    def is_running(self, i: int) -> bool:
        process = self.processes[i]
        return process is not None and process.poll() is None

    def cluster_info(self, i: int) -> dict[str, str]:
        """CLUSTER INFO of node ``i`` (e.g. to wait for ``cluster_state:fail`` after a kill)."""
        client = self._client(self.ports[i])
        try:
            return dict(client.cluster("info"))
        finally:
            client.close()

    def wait_ok(self, timeout: float = CLUSTER_OK_TIMEOUT) -> None:
        """Every node says ``cluster_state:ok``, knows every node and sees all slots assigned."""
        clients = [self._client(port) for port in self.ports]
        try:
            until_sync(
                lambda: all(self._node_ok(c) for c in clients),
                timeout=timeout,
                what=f"redis cluster on ports {self.ports} did not reach cluster_state:ok",
            )
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{self._states(clients)}") from None
        finally:
            for client in clients:
                client.close()

    def _spawn(self, i: int) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is not installed (make test installs it)"
        port = self.ports[i]
        self.processes[i] = subprocess.Popen(
            [
                executable,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(self.bus_ports[i]),
                "--cluster-config-file",
                str(self.workdir / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.log_path(i)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=self.preexec_fn,  # safe as preexec_fn: the harness starts it from one thread
        )

    def _wait_ping(self, i: int) -> None:
        try:
            answered = answers_ping(self.ports[i], PING_TIMEOUT, self.processes[i])
        except RuntimeError:
            raise RuntimeError(f"redis node {self.ports[i]} exited:\n{self._log_tail(i)}") from None
        if not answered:
            raise RuntimeError(f"redis node {self.ports[i]} did not answer PING within {PING_TIMEOUT}s")

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not installed (it comes with redis-server; make test installs it)"
        result = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"{HOST}:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=CREATE_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"redis-cli --cluster create exited {result.returncode}:\n{output}")

    @staticmethod
    def _client(port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=port, socket_connect_timeout=0.5, socket_timeout=1.0, decode_responses=True
        )

    def _node_ok(self, client: redis.Redis) -> bool:
        try:
            info = client.cluster("info")
        except redis.exceptions.RedisError:
            return False
        return (
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_slots_assigned", 0)) == SLOTS
            and int(info.get("cluster_known_nodes", 0)) == len(self.ports)
        )

    @staticmethod
    def _states(clients: list[redis.Redis]) -> str:
        lines = []
        for client in clients:
            try:
                info = client.cluster("info")
                state = {
                    k: info.get(k)
                    for k in (
                        "cluster_state",
                        "cluster_slots_assigned",
                        "cluster_slots_ok",
                        "cluster_known_nodes",
                    )
                }
            except redis.exceptions.RedisError as error:
                state = {"error": repr(error)}
            lines.append(f"  {client.connection_pool.connection_kwargs['port']}: {state}")
        return "\n".join(lines)

    def _log_tail(self, i: int, lines: int = 20) -> str:
        path = self.log_path(i)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
