"""Load-generator processes and how the harness talks to them: each worker runs an asyncio
loop in its own (spawned) process and answers commands sent over a pipe, every call bounded
by a timeout; a worker is stopped by its PID if it does not leave when asked."""

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


class WorkerError(RuntimeError):
    """A command failed in the worker, or the worker did not answer in time."""


class Worker:
    """The harness's handle on one load-generator process (``role``: receiver or publisher)."""

    def __init__(self, role: str, name: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.role = role
        self.process = context.Process(
            target=worker_main, args=(child, role, logging.getLogger().level), name=name, daemon=True
        )

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def send(self, op: str, **kwargs: Any) -> None:
        self._conn.send({"op": op, **kwargs})

    def receive(self, timeout: float) -> Any:
        """The answer to the last command sent; WorkerError if it failed or is late."""
        if not self._conn.poll(timeout):
            raise WorkerError(f"{self.process.name} did not answer within {timeout:.0f} s")
        reply = self._conn.recv()
        if not reply["ok"]:
            raise WorkerError(f"{self.process.name}: {reply['error']}")
        return reply.get("result")

    def call(self, op: str, timeout: float, **kwargs: Any) -> Any:
        self.send(op, **kwargs)
        return self.receive(timeout)

    def stop(self) -> None:
        """Ask it to leave; SIGTERM, then SIGKILL, by PID if it does not."""
        if self.process.pid is None:
            return
        if self.process.is_alive():
            with contextlib.suppress(WorkerError, OSError, EOFError):
                self.call("exit", STOP_TIMEOUT)
            self.process.join(STOP_TIMEOUT)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.process.is_alive():
                break
            logger.warning("%s (pid %d) did not leave: %s", self.process.name, self.pid, sig.name)
            os.kill(self.pid, sig)
            self.process.join(STOP_TIMEOUT)
        self._conn.close()


def call_all(workers: list[Worker], op: str, timeout: float, per_worker: list[dict[str, Any]]) -> list[Any]:
    """Send a command to every worker at once, then collect every answer."""
    for worker, kwargs in zip(workers, per_worker, strict=True):
        worker.send(op, **kwargs)
    return [worker.receive(timeout) for worker in workers]


def worker_main(conn: Connection, role: str, log_level: int) -> None:
    """Entry point of a worker process."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(processName)s: %(message)s")
    asyncio.run(_serve(conn, _handler(role)))


def _handler(role: str) -> Any:
    if role == "receiver":
        from bench.receiver import Receiver

        return Receiver()
    from bench.publisher import Publisher

    return Publisher()


async def _serve(conn: Connection, handler: Any) -> None:
    """Answer commands until told to exit or the harness goes away."""
    try:
        while True:
            try:
                message = await asyncio.to_thread(conn.recv)
            except (EOFError, OSError):
                return  # the harness is gone
            op = message.pop("op")
            if op == "exit":
                await handler.close()
                conn.send({"ok": True})
                return
            try:
                result = await getattr(handler, f"do_{op}")(**message)
            except Exception as exc:  # reported to the harness, which records the failure
                logging.getLogger(__name__).exception("command %s failed", op)
                conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                conn.send({"ok": True, "result": result})
    finally:
        await handler.close()
