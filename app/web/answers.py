"""JSON answers, encoded with orjson: the answer to every action is a session or a message,
and json.dumps was the larger part of building it (docs/benchmarks.md, profile)."""

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def json_answer(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """What ``web.json_response`` answers (``application/json; charset=utf-8``), faster."""
    return web.Response(
        # Validation errors key list items by their index (an int), as json.dumps writes them.
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )
