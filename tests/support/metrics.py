"""Reading ``GET /metrics``: a scrape parsed with prometheus-client's own parser into samples,
and the look-ups tests make in them."""

import asyncio
import re

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import REQUEST_TIMEOUT
from tests.support.app_server import AppClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of the exposition, by (sample name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """{label value: sample value} of every sample ``name`` (other labels must not vary)."""
    found: dict[str, float] = {}
    for (sample, labels), number in samples.items():
        if sample == name:
            key = dict(labels)[label]
            assert key not in found, (name, labels)
            found[key] = number
    return found


async def scrape(http: AppClient | aiohttp.ClientSession, base: str = "") -> Samples:
    async with asyncio.timeout(REQUEST_TIMEOUT):
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            assert response.status == 200, text[:300]
            content_type = response.headers["Content-Type"]
            assert content_type.startswith("text/plain"), content_type
            assert re.search(r"version=(0\.0\.4|1\.0\.0)", content_type), content_type
            return parse_metrics(text)
