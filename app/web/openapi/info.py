"""The document's ``info``: its title, the server's version, and the introduction, which says
what the answering process serves and whether it asks for tokens."""

from collections.abc import Sequence
from importlib import metadata

from app.web.middlewares import HTTP_CODES, REQUEST_ID_HEADER

OPENAPI_VERSION = "3.0.3"
TITLE = "Switchboard"
DISTRIBUTION = "switchboard"
# Shown when the server runs from a checkout that was never installed (no package metadata).
FALLBACK_VERSION = "0.1.0"


def package_version() -> str:
    """The installed distribution's version, so the document names the code that answers."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def info_description(components: Sequence[str], insecure: bool) -> str:
    """The introduction: the sub-apps served, how to authenticate (or that nobody needs to),
    and the conventions every operation shares (errors, request ids, events)."""
    served = " and ".join(f"`/{c}`" for c in components)
    auth = (
        "This process runs with `--insecure`: no token is asked for, and workbench bodies must "
        "name their `agent_id`."
        if insecure
        else "Every request needs a token (`Authorization: Bearer <token>`, or `?token=` on event "
        "streams): the session's customer token on the chatbot side (from `POST "
        "/chatbot/api/sessions`), an agent token on the workbench side (`run.py token --agent "
        "ID`). `POST /chatbot/api/sessions`, and a chat that starts a session, need none."
    )
    return (
        f"Realtime customer service: customers talk to a bot, agents take conversations over. "
        f"This process serves {served}.\n\n"
        f"{auth}\n\n"
        'Errors are JSON: `{"error": {"code", "message", "fields"?}}` (see the `Error` '
        f"schema). Besides the answers listed per operation, any path answers 404 `{HTTP_CODES[404]}` "
        f"when unknown (the other sub-app's paths included) and 405 `{HTTP_CODES[405]}` (with "
        "`Allow`) for a wrong method. A request that fails changes nothing and publishes "
        f"nothing. Every answer carries `{REQUEST_ID_HEADER}`.\n\n"
        "Events reach clients over Server-Sent Events: each is an `id:` line (none on "
        "heartbeats) and a `data:` line holding the envelope `{type, payload, timestamp, "
        "source}`, with no `event:` line. Objects may gain keys as the product grows: ignore "
        "keys you do not know (the envelope's four keys are fixed)."
    )
