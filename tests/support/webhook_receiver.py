"""A webhook receiver for tests, run as a real process: ``python -m
tests.support.webhook_receiver --port N [--fail-first K]``. ``POST /hook`` records every call
(headers and body) and answers 500 to the first K, then 200; ``POST /_fail`` sets how many more
calls fail (``{"count": K}``); ``GET /_received`` lists the calls; ``GET /health``."""

from aiohttp import web

from tests.support import peer

CALLS = web.AppKey("calls", list)
FAILING = web.AppKey("failing", list)  # [calls still to fail]


async def hook(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[CALLS].append({"headers": dict(request.headers), "body": body.decode()})
    failing = request.app[FAILING]
    if failing[0] > 0:
        failing[0] -= 1
        return web.json_response({"error": "not now"}, status=500)
    return web.json_response({"ok": True})


async def fail(request: web.Request) -> web.Response:
    request.app[FAILING][0] = int((await request.json())["count"])
    return web.json_response({"failing": request.app[FAILING][0]})


async def received(request: web.Request) -> web.Response:
    return web.json_response(request.app[CALLS])


def main() -> None:
    arguments = peer.parser("A webhook receiver for tests.")
    arguments.add_argument("--fail-first", type=int, default=0)
    args = arguments.parse_args()
    app = web.Application()
    app[CALLS], app[FAILING] = [], [args.fail_first]
    app.router.add_post("/hook", hook)
    app.router.add_post("/_fail", fail)
    app.router.add_get("/_received", received)
    peer.serve(app, args.port)


if __name__ == "__main__":
    main()
