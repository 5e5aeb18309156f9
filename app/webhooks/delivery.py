"""Delivering the webhook queue to one receiver (--webhook-url), at least once.

Each receiver is a consumer group of the queue (realtime.delivery_queue); each process is a
consumer. An entry is POSTed as JSON, signed like the bot's calls (app.web.signing), with its
id as ``Switchboard-Event-Id`` (the idempotency key: the same on every try), until the
receiver answers 2xx; a failure is tried again after 1 s, 2 s, 4 s ... up to --webhook-max-
backoff, and after --webhook-attempts tries the entry goes to the receiver's dead letters. A
receiver gets its entries one at a time, in the order they were taken: a failing entry holds
back the ones after it until it succeeds or is given up on. A process that dies mid-delivery
leaves the entry pending: it resumes it when it comes back (its consumer name is its host and
port), or another process claims it once it has been idle longer than a try can take.
"""

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter
from redis.exceptions import RedisError

from app.domain.store import SessionNotFound, SessionStore
from app.domain.store.base import StoreError
from app.web.signing import SIGNATURE_HEADER, sign
from app.webhooks.events import TYPES
from realtime.delivery_queue import DeliveryQueue, Entry

logger = logging.getLogger(__name__)

BATCH = 50
TAKE_WAIT = 1.0  # seconds a take waits for new entries
CLAIM_EVERY = 5.0  # seconds between looks for entries other processes left
RETRY_OUTAGE = 1.0  # seconds before trying again when Redis is away
CLOSED = TYPES["close"]


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    attempts: int = 10
    timeout: float = 10.0
    max_backoff: float = 300.0

    @property
    def claim_after(self) -> float:
        """Idle time after which an entry's consumer is taken for dead: longer than a try and
        the longest wait before the next."""
        return self.max_backoff + self.timeout + 30.0


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "switchboard_webhook_deliveries",
            "Webhook deliveries, by result: delivered (2xx), retried (a try failed), dead (given up "
            "on after --webhook-attempts, or trimmed from the queue before delivery).",
            ("result",),
            registry=registry,
        )


def group_of(url: str) -> str:
    """The receiver's consumer group: the same in every process and across restarts."""
    return "webhook-" + hashlib.sha256(url.encode()).hexdigest()[:16]


class WebhookDelivery:
    def __init__(
        self,
        url: str,
        secret: str | None,
        queue: DeliveryQueue,
        store: SessionStore,
        consumer: str,
        metrics: WebhookMetrics,
        limits: WebhookLimits,
    ) -> None:
        self.url = url
        self.group = group_of(url)
        self._secret = secret.encode() if secret else None
        self._queue = queue
        self._store = store
        self._consumer = consumer
        self._metrics = metrics
        self._limits = limits
        self._claimed_at = 0.0
        self._failing = False

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._limits.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    for entry in await self._next():
                        await self._deliver(http, entry)
                    self._failing = False
                except (RedisError, StoreError, OSError) as exc:
                    if not self._failing:
                        logger.warning("webhook delivery to %s paused: %r", self.group, exc)
                    self._failing = True
                    await asyncio.sleep(RETRY_OUTAGE)

    async def _next(self) -> list[Entry]:
        queue, group, consumer = self._queue, self.group, self._consumer
        mine = await queue.pending(group, consumer, BATCH)  # after a restart: resume
        if mine:
            return mine
        if time.monotonic() - self._claimed_at >= CLAIM_EVERY:
            self._claimed_at = time.monotonic()
            stale = await queue.claim(group, consumer, self._limits.claim_after, BATCH)
            if stale:
                return stale
        return await queue.take(group, consumer, BATCH, TAKE_WAIT)

    async def _deliver(self, http: aiohttp.ClientSession, entry: Entry) -> None:
        if entry.data is None:
            logger.warning("webhook event %s was trimmed from the queue before delivery", entry.id)
            self._metrics.deliveries.labels("dead").inc()
            await self._queue.ack(self.group, entry.id)
            return
        body = await self._body(entry.id, entry.data)
        while True:
            tries = await self._queue.hold(self.group, self._consumer, entry.id)
            failure = await self._post(http, body, entry.id, tries)
            if failure is None:
                await self._queue.ack(self.group, entry.id)
                self._metrics.deliveries.labels("delivered").inc()
                return
            if tries >= self._limits.attempts:
                logger.warning("webhook event %s given up on after %d tries: %s", entry.id, tries, failure)
                letter = {"id": entry.id, "tries": tries, "error": failure, "event": orjson.loads(body)}
                await self._queue.bury(self.group, entry.id, orjson.dumps(letter).decode())
                self._metrics.deliveries.labels("dead").inc()
                return
            self._metrics.deliveries.labels("retried").inc()
            wait = min(self._limits.max_backoff, 2.0 ** (tries - 1))
            await asyncio.sleep(wait * random.uniform(0.8, 1.0))

    async def _body(self, entry_id: str, data: str) -> bytes:
        """The record with its id, and a closed conversation's transcript as it is now (null if
        retention has deleted the conversation since)."""
        event: dict[str, Any] = {"id": entry_id, **orjson.loads(data)}
        if event.get("type") == CLOSED:
            event["transcript"] = await self._transcript(event["session"]["session_name"])
        return orjson.dumps(event)

    async def _transcript(self, session_name: str) -> list[Any] | None:
        messages: list[Any] = []
        after: str | None = None
        try:
            while True:
                page = await self._store.messages(session_name, after=after)
                messages += page.items
                if page.next_cursor is None or not page.items:
                    return messages
                after = page.next_cursor
        except SessionNotFound:
            return None

    async def _post(self, http: aiohttp.ClientSession, body: bytes, entry_id: str, tries: int) -> str | None:
        """None if the receiver took it, else why not (for the log and the dead letter)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Switchboard",
            "Switchboard-Event-Id": entry_id,
            "Switchboard-Delivery-Attempt": str(tries),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign([self._secret], body, time.time())
        try:
            async with http.post(self.url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return "timed out"
        except aiohttp.ClientError as exc:
            return type(exc).__name__
