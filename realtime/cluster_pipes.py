"""A command pipe (realtime.command_pipe) per Redis Cluster primary, for the commands a change
adds on a cluster: noting its outbox as pending, publishing the outbox's entries on their
slots, deleting them and the note.

redis-py's cluster client spends about 200 µs of Python on each command (routing, its
connection pool, the retry wrapper, encoding); three more of them per change made a cluster's
agent message cost 2.4 times what it did (docs/benchmarks.md, "Redis Cluster"). The slot map
still comes from the cluster client; a reply that says the slot moved (MOVED, ASK) sends the
command through the cluster client, which follows the redirect and learns the new map.
"""

import logging
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import RedisError, ResponseError

from realtime.command_pipe import CommandPipe, PipeScript
from realtime.errors import ShardUnavailable

logger = logging.getLogger(__name__)

REDIRECTS = ("MOVED", "ASK")


def owner_node(cluster: RedisCluster, key: str) -> ClusterNode:
    """The primary that owns ``key``'s slot, as the slot map says now."""
    try:
        node = cluster.get_node_from_key(key)
    except RedisError as exc:
        raise ShardUnavailable(f"no node owns the slot of {key}: {exc}") from exc
    if node is None:
        raise ShardUnavailable(f"no node owns the slot of {key}")
    return node


class ClusterPipes:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._pipes: dict[str, CommandPipe] = {}

    def _pipe(self, key: str) -> CommandPipe | None:
        """The pipe to the primary that owns ``key``'s slot; None if the node's connections
        are not plain TCP (TLS: the cluster client serves them)."""
        node = owner_node(self._cluster, key)
        pipe = self._pipes.get(node.name)
        if pipe is None:
            if node.connection_class is not Connection:
                return None
            options: dict[str, Any] = node.connection_kwargs
            pipe = CommandPipe(
                node.host,
                int(node.port),
                username=options.get("username"),
                password=options.get("password"),
                timeout=options.get("socket_timeout") or 5.0,
                connect_timeout=options.get("socket_connect_timeout") or 1.0,
            )
            self._pipes[node.name] = pipe
        return pipe

    async def execute(self, key: str, *args: Any) -> Any:
        """One command on the node of ``key`` (its only key, or all on its slot)."""
        pipe = self._pipe(key)
        if pipe is not None:
            try:
                return await pipe.execute(*args)
            except ResponseError as exc:
                if not str(exc).startswith(REDIRECTS):
                    raise
                logger.info("slot of %s moved (%s): through the cluster client", key, str(exc).split()[0])
        return await self._cluster.execute_command(*args)

    async def run_script(self, script: PipeScript, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on the node of ``keys`` (all on one slot), loading it there if need be."""
        pipe = self._pipe(keys[0])
        if pipe is not None:
            try:
                return await pipe.run_script(script, keys, args)
            except ResponseError as exc:
                if not str(exc).startswith(REDIRECTS):
                    raise
                logger.info("slot of %s moved (%s): through the cluster client", keys[0], str(exc).split()[0])
        return await self._cluster.eval(script.text, len(keys), *keys, *args)

    async def close(self) -> None:
        for pipe in self._pipes.values():
            await pipe.close()
        self._pipes.clear()
