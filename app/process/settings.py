"""Settings: a frozen object built from command-line flags and the environment.

A flag beats its environment variable, which beats the default (docs/api.md, "Processes").
"""

import argparse
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.domain.store.base import Bounds
from app.process.logs import LOG_FORMATS
from app.web.client_address import trusted_networks
from realtime.history import HISTORY_BYTES
from schemas.fields import MAX_CAPACITY, is_valid_name

COMPONENTS = ("chatbot", "workbench")
EVENT_LOOPS = ("asyncio", "uvloop")
CLUSTER_SCHEME = "redis+cluster://"
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str = "redis://localhost:6379/0"
    use_redis: bool = True
    heartbeat: float = 30.0
    components: tuple[str, ...] = COMPONENTS
    queue_size: int = 1000
    history_size: int = 1000
    history_ttl: float = 3600.0
    history_bytes: int = HISTORY_BYTES
    redis_timeout: float = 5.0
    # A connection must deliver a whole request head (and then its body) within this, counted
    # from its connection or its previous response; else it is closed (slow clients).
    client_timeout: float = 30.0
    log_level: str = "INFO"
    log_format: str = "text"
    # Origins whose pages may call the API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    # Limits, each answered with a clear JSON error.
    max_streams: int = 10_000
    max_message: int = 4000
    max_streams_per_token: int = 20
    max_channels: int = 100
    # Action requests (POST) per token per second, and the burst allowed above that rate.
    rate_limit: float = 10.0
    rate_burst: int = 20
    # Conversation starts and escalations per client address per minute (bursts of as many),
    # and the proxies (CIDRs) whose X-Forwarded-For says which address that is; none by default.
    start_rate: int = 30
    trusted_proxies: tuple[str, ...] = ()
    # Signing secret for tokens; without one the process refuses to start unless insecure.
    secret: str | None = field(default=None, repr=False)
    insecure: bool = False
    session_token_ttl: float = 7200.0
    # Processes sharing the port (SO_REUSEPORT), each with its own pub/sub connection.
    workers: int = 1
    event_loop: str = "asyncio"
    # A Redis Cluster (sharded pub/sub); also chosen by a redis+cluster:// URL.
    redis_cluster: bool = False
    # Prefix of every Redis key and channel: deployments sharing one Redis keep apart (a DB
    # number does not separate pub/sub).
    namespace: str = ""
    # How long conversations live and how much they hold (app.domain.store.base.Bounds).
    retention: float = Bounds().retention
    idle_ttl: float = Bounds().idle_ttl
    transcript_bytes: int = Bounds().transcript_bytes
    # Conversations waiting for an agent; past it an escalation is refused (queue_full).
    max_waiting: int = 1000
    # The bot (docs/bots.md): rules (embedded, no network), openai (any OpenAI-compatible
    # Chat Completions endpoint at bot_url) or webhook (a service of yours at bot_url).
    bot: str = "rules"
    bot_url: str | None = None
    bot_model: str | None = None
    bot_prompt: str | None = None  # a file holding the system prompt (openai)
    bot_secret: str | None = field(default=None, repr=False)  # signs webhook calls
    bot_api_key: str | None = field(default=None, repr=False)  # environment only
    bot_context: int = 20  # newest messages the bot is given
    bot_connect_timeout: float = 5.0
    bot_first_token_timeout: float = 15.0
    bot_timeout: float = 60.0
    bot_breaker_failures: int = 5
    bot_breaker_cooldown: float = 30.0
    # Routing (docs/routing.md): conversations an agent holds at once unless it set its own,
    # and how long an agent with no stream open anywhere stays online or away.
    agent_capacity: int = 3
    agent_grace: float = 60.0
    # manual: agents take conversations from the queue; auto: the router offers them.
    assignment: str = "manual"
    offer_timeout: float = 30.0
    # Seconds between two rounds of the router in each workbench process: how late an offer,
    # an expiry or a timer may come, against a read of the queue's head each round.
    route_interval: float = 1.0
    # A conversation waiting this long goes back to the bot; one whose customer has been away
    # this long is closed (0: never).
    wait_timeout: float = 300.0
    wait_timeout_action: str = "bot"  # or "message": the conversation waits, with a message for later
    customer_idle: float = 600.0
    # Outbound webhooks (docs/webhooks.md): receivers of conversation lifecycle events.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 10  # then the event goes to the dead letters
    webhook_timeout: float = 10.0
    webhook_max_backoff: float = 300.0

    @property
    def bounds(self) -> Bounds:
        return Bounds(
            retention=self.retention, idle_ttl=self.idle_ttl, transcript_bytes=self.transcript_bytes
        )

    @property
    def cluster(self) -> bool:
        return self.redis_cluster or self.redis_url.startswith(CLUSTER_SCHEME)

    def __post_init__(self) -> None:
        if not self.components or any(c not in COMPONENTS for c in self.components):
            raise ValueError(f"components must be a non-empty subset of {COMPONENTS}")
        for name in POSITIVE_SECONDS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number")
        for name in AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if not 1 <= self.max_message <= 4000:
            raise ValueError("max_message must be between 1 and 4000 characters")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
        if self.workers > 1 and not self.use_redis:
            raise ValueError("workers share events through Redis: --workers needs Redis")
        if self.secret is not None and len(self.secret) < 32:
            raise ValueError("the secret must be at least 32 characters")
        if self.namespace and not is_valid_name(self.namespace):
            raise ValueError("namespace must be 1-64 of A-Z, a-z, 0-9, _ and -")
        if self.transcript_bytes < MIN_TRANSCRIPT_BYTES:
            raise ValueError(f"transcript_bytes must be at least {MIN_TRANSCRIPT_BYTES}")
        trusted_networks(self.trusted_proxies)  # ValueError naming a CIDR that is not one
        for url in (*self.webhook_urls, *([self.bot_url] if self.bot_url else [])):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL: {url!r}")
        if not 0 <= self.agent_capacity <= MAX_CAPACITY:
            raise ValueError(f"agent_capacity must be between 0 and {MAX_CAPACITY}")
        if self.wait_timeout_action not in WAIT_TIMEOUT_ACTIONS:
            raise ValueError(f"wait_timeout_action must be one of {', '.join(WAIT_TIMEOUT_ACTIONS)}")
        if self.assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment must be one of {', '.join(ASSIGNMENTS)}")
        for name in ("wait_timeout", "customer_idle"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (never) or more")
        if self.bot not in BOTS:
            raise ValueError(f"bot must be one of {', '.join(BOTS)}")
        if self.bot != "rules" and not self.bot_url:
            raise ValueError(f"--bot {self.bot} needs --bot-url")
        if self.bot == "openai" and not self.bot_model:
            raise ValueError("--bot openai needs --bot-model")


POSITIVE_SECONDS = (
    "heartbeat",
    "history_ttl",
    "redis_timeout",
    "client_timeout",
    "rate_limit",
    "session_token_ttl",
    "retention",
    "idle_ttl",
    "bot_connect_timeout",
    "bot_first_token_timeout",
    "bot_timeout",
    "bot_breaker_cooldown",
    "webhook_timeout",
    "webhook_max_backoff",
    "agent_grace",
    "offer_timeout",
    "route_interval",
)
# A transcript holds at least its newest message of the largest size (4,000 characters of 4
# bytes, JSON-escaped at worst) with room to spare.
MIN_TRANSCRIPT_BYTES = 64 * 1024
AT_LEAST_ONE = (
    "queue_size",
    "history_size",
    "max_streams",
    "max_streams_per_token",
    "max_channels",
    "rate_burst",
    "start_rate",
    "workers",
    "max_waiting",
    "history_bytes",
    "bot_context",
    "bot_breaker_failures",
    "webhook_attempts",
)
BOTS = ("rules", "openai", "webhook")
ASSIGNMENTS = ("manual", "auto")
WAIT_TIMEOUT_ACTIONS = ("bot", "message")
# Where the key of --bot openai comes from (never a flag: a command line is visible in ps).
BOT_KEY_ENVIRONMENT = ("SWITCHBOARD_BOT_API_KEY", "OPENAI_API_KEY")


@dataclass(frozen=True, slots=True)
class Option:
    """A setting that takes a value: its flag is ``--`` + the name with dashes."""

    name: str
    env: str
    cast: type
    help: str
    metavar: str | None = None


OPTIONS = (
    Option("host", "SWITCHBOARD_HOST", str, "listen address"),
    Option("port", "SWITCHBOARD_PORT", int, "listen port"),
    Option("redis_url", "REDIS_URL", str, "Redis URL"),
    Option(
        "heartbeat",
        "SWITCHBOARD_HEARTBEAT",
        float,
        "interval between heartbeat events on every stream",
        "SECONDS",
    ),
    Option(
        "queue_size", "SWITCHBOARD_QUEUE_SIZE", int, "events a stream may fall behind before it is cut off"
    ),
    Option("history_size", "SWITCHBOARD_HISTORY_SIZE", int, "events kept per channel for resuming streams"),
    Option("history_bytes", "SWITCHBOARD_HISTORY_BYTES", int, "bytes of events kept per channel", "BYTES"),
    Option(
        "history_ttl",
        "SWITCHBOARD_HISTORY_TTL",
        float,
        "how long an idle channel keeps its history",
        "SECONDS",
    ),
    Option(
        "redis_timeout", "SWITCHBOARD_REDIS_TIMEOUT", float, "longest wait for Redis before a 503", "SECONDS"
    ),
    Option(
        "client_timeout",
        "SWITCHBOARD_CLIENT_TIMEOUT",
        float,
        "time a connection has to send a whole request (head, then body) before it is closed",
        "SECONDS",
    ),
    Option(
        "max_streams",
        "SWITCHBOARD_MAX_STREAMS",
        int,
        "open streams this process accepts before answering 503",
    ),
    Option(
        "max_message", "SWITCHBOARD_MAX_MESSAGE", int, "longest message content, in characters, at most 4000"
    ),
    Option(
        "max_streams_per_token", "SWITCHBOARD_MAX_STREAMS_PER_TOKEN", int, "open streams one token may hold"
    ),
    Option(
        "rate_limit", "SWITCHBOARD_RATE_LIMIT", float, "action requests per token per second", "PER_SECOND"
    ),
    Option("rate_burst", "SWITCHBOARD_RATE_BURST", int, "action requests a token may burst above the rate"),
    Option(
        "start_rate",
        "SWITCHBOARD_START_RATE",
        int,
        "conversation starts and escalations per client address per minute (bursts of as many)",
        "PER_MINUTE",
    ),
    Option("secret", "SWITCHBOARD_SECRET", str, "token signing secret, 32+ characters (required)"),
    Option(
        "session_token_ttl", "SWITCHBOARD_SESSION_TOKEN_TTL", float, "lifetime of customer tokens", "SECONDS"
    ),
    Option(
        "namespace",
        "SWITCHBOARD_NAMESPACE",
        str,
        "prefix of every Redis key and channel, for deployments sharing one Redis",
        "NAME",
    ),
    Option("retention", "SWITCHBOARD_RETENTION", float, "how long closed conversations are kept", "SECONDS"),
    Option(
        "idle_ttl",
        "SWITCHBOARD_IDLE_TTL",
        float,
        "a bot conversation idle this long is closed",
        "SECONDS",
    ),
    Option(
        "transcript_bytes",
        "SWITCHBOARD_TRANSCRIPT_BYTES",
        int,
        "bytes a transcript keeps (its newest messages)",
        "BYTES",
    ),
    Option(
        "max_waiting",
        "SWITCHBOARD_MAX_WAITING",
        int,
        "conversations waiting for an agent before escalations are refused",
    ),
    Option("bot", "SWITCHBOARD_BOT", str, "who answers customers: rules, openai or webhook (docs/bots.md)"),
    Option("bot_url", "SWITCHBOARD_BOT_URL", str, "the openai base URL, or the webhook bot's URL", "URL"),
    Option("bot_model", "SWITCHBOARD_BOT_MODEL", str, "the model of --bot openai", "MODEL"),
    Option(
        "bot_prompt", "SWITCHBOARD_BOT_PROMPT", str, "a file with the system prompt of --bot openai", "FILE"
    ),
    Option("bot_secret", "SWITCHBOARD_BOT_SECRET", str, "signs the calls to --bot webhook", "SECRET"),
    Option(
        "bot_context", "SWITCHBOARD_BOT_CONTEXT", int, "newest messages of a conversation the bot is given"
    ),
    Option(
        "bot_connect_timeout", "SWITCHBOARD_BOT_CONNECT_TIMEOUT", float, "connecting to the bot", "SECONDS"
    ),
    Option(
        "bot_first_token_timeout",
        "SWITCHBOARD_BOT_FIRST_TOKEN_TIMEOUT",
        float,
        "the bot's first piece of text",
        "SECONDS",
    ),
    Option("bot_timeout", "SWITCHBOARD_BOT_TIMEOUT", float, "the bot's whole answer", "SECONDS"),
    Option(
        "bot_breaker_failures",
        "SWITCHBOARD_BOT_BREAKER_FAILURES",
        int,
        "bot failures within 30 s that stop calling it for the cooldown",
    ),
    Option(
        "bot_breaker_cooldown",
        "SWITCHBOARD_BOT_BREAKER_COOLDOWN",
        float,
        "how long a failing bot is not called",
        "SECONDS",
    ),
    Option(
        "agent_capacity",
        "SWITCHBOARD_AGENT_CAPACITY",
        int,
        "conversations an agent holds at once (its own, once set)",
    ),
    Option(
        "agent_grace",
        "SWITCHBOARD_AGENT_GRACE",
        float,
        "an agent with no stream open anywhere this long is set offline",
        "SECONDS",
    ),
    Option(
        "assignment",
        "SWITCHBOARD_ASSIGNMENT",
        str,
        "manual (agents take from the queue) or auto (the router offers)",
        "MODE",
    ),
    Option(
        "offer_timeout",
        "SWITCHBOARD_OFFER_TIMEOUT",
        float,
        "an offer not accepted this long goes to the next agent",
        "SECONDS",
    ),
    Option(
        "route_interval",
        "SWITCHBOARD_ROUTE_INTERVAL",
        float,
        "seconds between two rounds of the router (offers, expiries, timers)",
        "SECONDS",
    ),
    Option(
        "wait_timeout",
        "SWITCHBOARD_WAIT_TIMEOUT",
        float,
        "a conversation waiting this long goes back to the bot (0: never)",
        "SECONDS",
    ),
    Option(
        "wait_timeout_action",
        "SWITCHBOARD_WAIT_TIMEOUT_ACTION",
        str,
        "bot (back to the bot) or message (keep waiting, with a message for later)",
        "ACTION",
    ),
    Option(
        "customer_idle",
        "SWITCHBOARD_CUSTOMER_IDLE",
        float,
        "a conversation whose customer is away this long is closed (0: never)",
        "SECONDS",
    ),
    Option("webhook_secret", "SWITCHBOARD_WEBHOOK_SECRET", str, "signs outbound webhooks", "SECRET"),
    Option(
        "webhook_attempts",
        "SWITCHBOARD_WEBHOOK_ATTEMPTS",
        int,
        "deliveries of a webhook event tried before it goes to the dead letters",
    ),
    Option("webhook_timeout", "SWITCHBOARD_WEBHOOK_TIMEOUT", float, "one webhook delivery", "SECONDS"),
    Option(
        "webhook_max_backoff",
        "SWITCHBOARD_WEBHOOK_MAX_BACKOFF",
        float,
        "longest wait between two tries of a webhook delivery (1 s, doubling up to this)",
        "SECONDS",
    ),
    Option("log_level", "SWITCHBOARD_LOG_LEVEL", str, "standard logging level"),
    Option("log_format", "SWITCHBOARD_LOG_FORMAT", str, "text, or json for one JSON object per line"),
    Option("workers", "SWITCHBOARD_WORKERS", int, "processes sharing the port (SO_REUSEPORT); needs Redis"),
    Option("event_loop", "SWITCHBOARD_EVENT_LOOP", str, "asyncio or uvloop (pip install '.[uvloop]')"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Realtime SSE server: chatbot (customer) and workbench (agent) sub-apps. "
        "A flag beats its environment variable, which beats the default.",
    )
    parser.add_argument("--chatbot", action="store_true", help="serve the chatbot sub-app")
    parser.add_argument("--workbench", action="store_true", help="serve the workbench sub-app")
    parser.add_argument(
        "--no-redis", action="store_true", help="memory broker and store [USE_REDIS_SSE=false]"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no authentication at all, for local development [SWITCHBOARD_INSECURE=true]",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="REDIS_URL names nodes of a Redis Cluster: sharded pub/sub, one pub/sub connection "
        "per shard [SWITCHBOARD_REDIS_CLUSTER=true, or a redis+cluster://host:port,host:port URL]",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable) "
        "[SWITCHBOARD_CORS_ORIGINS, comma-separated; none]",
    )
    parser.add_argument(
        "--webhook-url",
        action="append",
        dest="webhook_urls",
        metavar="URL",
        help="send conversation lifecycle events there (repeatable) "
        "[SWITCHBOARD_WEBHOOK_URLS, comma-separated; none]",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        metavar="CIDR",
        help="a proxy whose X-Forwarded-For names the client address for the per-address limit "
        "(repeatable) [SWITCHBOARD_TRUSTED_PROXIES, comma-separated; none]",
    )
    defaults = Settings()
    for option in OPTIONS:
        default = getattr(defaults, option.name)
        shown = "" if default is None else f", {default}"
        parser.add_argument(
            "--" + option.name.replace("_", "-"),
            type=option.cast,
            metavar=option.metavar,
            help=f"{option.help} [{option.env}{shown}]",
        )
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for option in OPTIONS:
        flag = getattr(args, option.name)
        if flag is not None:
            values[option.name] = flag
        elif env.get(option.env):
            values[option.name] = option.cast(env[option.env])
    origins = args.cors_origins or env.get("SWITCHBOARD_CORS_ORIGINS", "").split(",")
    proxies = args.trusted_proxies or env.get("SWITCHBOARD_TRUSTED_PROXIES", "").split(",")
    webhooks = args.webhook_urls or env.get("SWITCHBOARD_WEBHOOK_URLS", "").split(",")
    return Settings(
        **values,  # type: ignore[arg-type]  # each value cast by its option to its field's type
        components=tuple(c for c in COMPONENTS if getattr(args, c)) or COMPONENTS,
        use_redis=not args.no_redis and env.get("USE_REDIS_SSE", "true").lower() not in FALSE_WORDS,
        insecure=args.insecure or env.get("SWITCHBOARD_INSECURE", "").lower() in TRUE_WORDS,
        redis_cluster=args.redis_cluster or env.get("SWITCHBOARD_REDIS_CLUSTER", "").lower() in TRUE_WORDS,
        cors_origins=tuple(o.strip() for o in origins if o.strip()),
        trusted_proxies=tuple(p.strip() for p in proxies if p.strip()),
        webhook_urls=tuple(u.strip() for u in webhooks if u.strip()),
        bot_api_key=next((env[name] for name in BOT_KEY_ENVIRONMENT if env.get(name)), None),
    )
