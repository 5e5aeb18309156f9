"""Imported at start-up by every Python process that has this directory on its PYTHONPATH: the
server under bench.contact_center, and the workers its supervisor starts (they inherit the
environment, where a wrapper script would not reach them). With ``BENCH_GC_LOG=<directory>``,
each garbage collection that takes at least ``BENCH_GC_MIN_MS`` (10) milliseconds is appended
to ``<directory>/gc-<pid>.log`` as ``<unix time it started> <generation> <milliseconds>``.

Why: with thousands of streams open a full collection walks every object they hold, and its
pause stops the event loop, every stream and request with it; the harness sets such pauses
beside each step's latency. Watching costs two calls per collection and a write per long one;
the server's code is untouched. Without BENCH_GC_LOG this does nothing.
"""

import gc
import os
import time
from typing import Any


def _install() -> None:
    directory = os.environ.get("BENCH_GC_LOG")
    if not directory:
        return
    threshold = float(os.environ.get("BENCH_GC_MIN_MS", "10")) / 1000.0
    path = os.path.join(directory, f"gc-{os.getpid()}.log")
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if took >= threshold:
            with open(path, "a") as log:
                log.write(f"{time.time() - took:.6f} {info['generation']} {took * 1000.0:.3f}\n")

    gc.callbacks.append(callback)


_install()
