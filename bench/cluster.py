"""A local Redis Cluster for the benchmark: three masters (no replicas), each a RedisProcess
(bench.procs) with ``--cluster-enabled yes`` on a free loopback port and its own free cluster
bus port, joined by ``redis-cli --cluster create``. The same approach as the test suite's
tests/redis_cluster.py, which the benchmark does not import."""

import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis

from bench.procs import HOST, RedisProcess, free_port

logger = logging.getLogger(__name__)

NODES = 3
SLOTS = 16384
CREATE_TIMEOUT = 30.0
OK_TIMEOUT = 20.0
POLL = 0.05


class RedisClusterProcesses:
    """Three cluster nodes the harness owns (each stopped by its PID); the same interface as
    RedisProcess (url, pids, flush, connections, client) for the harness."""

    def __init__(self, workdir: Path, size: int = NODES) -> None:
        ports: list[int] = []
        for _ in range(20 * size):  # bounded: distinct free ports, a client and a bus port per node
            if len(ports) == 2 * size:
                break
            port = free_port()
            if port not in ports:
                ports.append(port)
        if len(ports) < 2 * size:
            raise RuntimeError("could not find enough distinct free ports for a Redis Cluster")
        self.workdir = workdir = workdir.resolve()
        self.nodes = [
            RedisProcess(workdir, port=port, extra=[
                "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                "--cluster-node-timeout", "2000",
            ])
            for port, bus in zip(ports[:size], ports[size:], strict=True)
        ]
        self.start_seconds = 0.0

    @property
    def url(self) -> str:
        """Every node, in the form the server takes for a cluster."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes]

    def start(self) -> None:
        """Start every node, join them, and wait (bounded) until every node serves all slots."""
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.glob("nodes-*.conf"):  # a previous run's cluster, on other ports
            old.unlink()
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        logger.info("Redis Cluster of %d masters on ports %s ready in %.1f s", len(self.nodes),
                    ",".join(str(n.port) for n in self.nodes), self.start_seconds)

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server)")
        result = subprocess.run(
            [cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=CREATE_TIMEOUT, check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise RuntimeError(f"redis-cli --cluster create exited {result.returncode}:\n{output}")

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + OK_TIMEOUT
        for _ in range(int(OK_TIMEOUT / POLL) + 1):
            if all(self._node_ok(node) for node in self.nodes):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        raise RuntimeError(f"the Redis Cluster did not reach cluster_state:ok in {OK_TIMEOUT:.0f} s")

    def _node_ok(self, node: RedisProcess) -> bool:
        try:
            with node.client() as client:
                info = client.cluster("INFO")
        except redis.exceptions.RedisError:
            return False
        return (info.get("cluster_state") == "ok"
                and int(info.get("cluster_slots_assigned", 0)) == SLOTS
                and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))

    def client(self) -> redis.Redis:
        """A plain client of the first node (for INFO)."""
        return self.nodes[0].client()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def connections(self) -> tuple[int, int]:
        """Client connections and pub/sub connections, summed over every node (the cluster bus
        between nodes is not a client connection and is not counted)."""
        counts = [node.connections() for node in self.nodes]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
