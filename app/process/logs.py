"""Log lines, as text or as JSON lines, each carrying the id of the request it belongs to.

The request id lives in a context variable that the request middleware sets: the handler and
everything it calls run in the request's task, so every line they log carries it without
being passed around. Lines logged outside a request (the broker's reader, start-up) carry "-".
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final

from aiohttp.http_exceptions import HttpProcessingError

LOG_FORMATS = ("text", "json")
NO_REQUEST: Final = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is data.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}

request_id: ContextVar[str] = ContextVar("request_id", default=NO_REQUEST)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a line over its limit, bad framing) at ERROR,
    with a traceback whose message quotes the request's start, query string and token
    included: any client could flood the log, and read tokens into it. One WARNING line
    instead, naming only the kind of error and the peer."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = (
                "refused a malformed request from %s: %s (%d)",
                (
                    peer,
                    type(exc).__name__,
                    exc.code,
                ),
            )
            record.exc_info = record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and any ``extra``
    fields (method, path, status, ms, ...), for log shippers that parse lines."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_REQUEST),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text", *, prefix: str = "") -> None:
    """Send every logger's lines to stderr in ``log_format``; ``prefix`` marks a worker's
    lines in text format (JSON lines carry it as ``worker``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MalformedRequestFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        if prefix:
            handler.addFilter(_WorkerField(prefix))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(name)s", f"{prefix}%(name)s")))
    # What no line here shows, not collected per record (the logging HOWTO's "Optimization"):
    # the caller's file and line (a stack walk per record), thread and process names. A
    # request's log line then costs about 12 µs instead of 16 (docs/benchmarks.md).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())


class _WorkerField(logging.Filter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self._worker = worker.strip()

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self._worker
        return True
