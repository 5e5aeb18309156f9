"""The health endpoint answers on both backends; the first proof the app and Redis start."""

import os

from tests.support.app_server import AppClient


async def test_health(client: AppClient, backend: str) -> None:
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body == {
        "status": "ok",
        "broker": backend,
        "degraded": False,
        "components": ["chatbot", "workbench"],
        "streams": 0,
        "insecure": True,
        "pid": os.getpid(),
    }
