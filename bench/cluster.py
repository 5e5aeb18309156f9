"""A local Redis Cluster for the benchmark: the test suite's (tests/support/redis_cluster.py:
three masters, no replicas, each on a free loopback port with its own free cluster bus port,
joined by ``redis-cli --cluster create``), whose nodes die with the harness, with the
interface the harness asks of a Redis (url, pids, flush, connections, client)."""

import logging
from pathlib import Path

import redis

from bench.procs import die_with_parent, redis_connections
from tests.support.redis_cluster import NODES, RedisCluster

logger = logging.getLogger(__name__)


class RedisClusterProcesses(RedisCluster):
    """Three cluster nodes the harness owns (each stopped by its PID); the same interface as
    RedisProcess (url, pids, flush, connections, client) for the harness."""

    def __init__(self, workdir: Path, size: int = NODES) -> None:
        super().__init__(workdir, size=size, preexec_fn=die_with_parent)

    @property
    def url(self) -> str:
        """Every node, in the form the server takes for a cluster."""
        return self.cluster_url

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process is not None]

    def start(self) -> None:
        """Start every node, join them, and wait (bounded) until every node serves all slots."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.glob("nodes-*.conf"):  # a previous run's cluster, on other ports
            old.unlink()
        super().start()

    def client(self) -> redis.Redis:
        """A plain client of the first node (for INFO)."""
        return self._node(0)

    def _node(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_connect_timeout=1, socket_timeout=10)

    def flush(self) -> None:
        for i in range(len(self.ports)):
            with self._node(i) as client:
                client.flushall()

    def connections(self) -> tuple[int, int]:
        """Client connections and pub/sub connections, summed over every node (the cluster bus
        between nodes is not a client connection and is not counted)."""
        counts = []
        for i in range(len(self.ports)):
            with self._node(i) as client:
                counts.append(redis_connections(client))
        return sum(c[0] for c in counts), sum(c[1] for c in counts)
