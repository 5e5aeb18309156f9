"""Settings: a frozen object built from command-line flags and the environment.

A flag beats its environment variable, which beats the default (API.md, "Processes").
"""

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

COMPONENTS = ("chatbot", "workbench")
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
    redis_timeout: float = 5.0
    log_level: str = "INFO"
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
    # Signing secret for tokens; without one the process refuses to start unless insecure.
    secret: str | None = field(default=None, repr=False)
    insecure: bool = False
    session_token_ttl: float = 7200.0

    def __post_init__(self) -> None:
        if not self.components or any(c not in COMPONENTS for c in self.components):
            raise ValueError(f"components must be a non-empty subset of {COMPONENTS}")
        if not (math.isfinite(self.heartbeat) and self.heartbeat > 0):
            raise ValueError("heartbeat must be a positive number of seconds")
        if self.queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if self.secret is not None and len(self.secret) < 32:
            raise ValueError("the secret must be at least 32 characters")
        if min(self.max_streams_per_token, self.max_channels, self.rate_burst) < 1:
            raise ValueError("per-token limits must be at least 1")
        if not (math.isfinite(self.rate_limit) and self.rate_limit > 0):
            raise ValueError("rate_limit must be a positive number per second")
        if not (math.isfinite(self.session_token_ttl) and self.session_token_ttl > 0):
            raise ValueError("session_token_ttl must be a positive number of seconds")
        if self.max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        if not 1 <= self.max_message <= 4000:
            raise ValueError("max_message must be between 1 and 4000 characters")
        if self.history_size < 1:
            raise ValueError("history_size must be at least 1")
        if not (math.isfinite(self.redis_timeout) and self.redis_timeout > 0):
            raise ValueError("redis_timeout must be a positive number of seconds")
        if not (math.isfinite(self.history_ttl) and self.history_ttl > 0):
            raise ValueError("history_ttl must be a positive number of seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Realtime SSE server: chatbot (customer) and workbench (agent) sub-apps.",
    )
    parser.add_argument("--chatbot", action="store_true", help="serve the chatbot sub-app")
    parser.add_argument("--workbench", action="store_true", help="serve the workbench sub-app")
    parser.add_argument("--host", help="listen address [SWITCHBOARD_HOST, 127.0.0.1]")
    parser.add_argument("--port", type=int, help="listen port [SWITCHBOARD_PORT, 8000]")
    parser.add_argument("--redis-url", help="Redis URL [REDIS_URL, redis://localhost:6379/0]")
    parser.add_argument(
        "--no-redis", action="store_true", help="memory broker and store [USE_REDIS_SSE=false]"
    )
    parser.add_argument(
        "--heartbeat", type=float, metavar="SECONDS",
        help="idle time before a heartbeat event [SWITCHBOARD_HEARTBEAT, 30]",
    )
    parser.add_argument(
        "--queue-size", type=int,
        help="events a stream may fall behind before it is cut off [SWITCHBOARD_QUEUE_SIZE, 1000]",
    )
    parser.add_argument(
        "--history-size", type=int,
        help="events kept per channel for resuming streams [SWITCHBOARD_HISTORY_SIZE, 1000]",
    )
    parser.add_argument(
        "--history-ttl", type=float, metavar="SECONDS",
        help="how long an idle channel keeps its history [SWITCHBOARD_HISTORY_TTL, 3600]",
    )
    parser.add_argument(
        "--redis-timeout", type=float, metavar="SECONDS",
        help="longest wait for Redis before a 503 [SWITCHBOARD_REDIS_TIMEOUT, 5]",
    )
    parser.add_argument(
        "--cors-origin", action="append", dest="cors_origins", metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable) "
        "[SWITCHBOARD_CORS_ORIGINS, comma-separated; none]",
    )
    parser.add_argument(
        "--max-streams", type=int,
        help="open streams this process accepts before answering 503 [SWITCHBOARD_MAX_STREAMS, 10000]",
    )
    parser.add_argument(
        "--max-message", type=int,
        help="longest message content, in characters, at most 4000 [SWITCHBOARD_MAX_MESSAGE, 4000]",
    )
    parser.add_argument(
        "--secret", help="token signing secret, 32+ characters [SWITCHBOARD_SECRET; required]"
    )
    parser.add_argument(
        "--insecure", action="store_true",
        help="no authentication at all, for local development [SWITCHBOARD_INSECURE=true]",
    )
    parser.add_argument(
        "--session-token-ttl", type=float, metavar="SECONDS",
        help="lifetime of customer session tokens [SWITCHBOARD_SESSION_TOKEN_TTL, 7200]",
    )
    parser.add_argument(
        "--max-streams-per-token", type=int,
        help="open streams one token may hold [SWITCHBOARD_MAX_STREAMS_PER_TOKEN, 20]",
    )
    parser.add_argument(
        "--rate-limit", type=float, metavar="PER_SECOND",
        help="action requests per token per second [SWITCHBOARD_RATE_LIMIT, 10]",
    )
    parser.add_argument(
        "--rate-burst", type=int,
        help="action requests a token may burst above the rate [SWITCHBOARD_RATE_BURST, 20]",
    )
    parser.add_argument("--log-level", help="[SWITCHBOARD_LOG_LEVEL, INFO]")
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    defaults = Settings()

    def pick(flag: object, var: str, default: object, cast: type) -> object:
        if flag is not None:
            return flag
        if env.get(var):
            return cast(env[var])
        return default

    components = tuple(c for c in COMPONENTS if getattr(args, c)) or COMPONENTS
    use_redis = not args.no_redis and env.get("USE_REDIS_SSE", "true").lower() not in FALSE_WORDS
    return Settings(
        host=pick(args.host, "SWITCHBOARD_HOST", defaults.host, str),  # type: ignore[arg-type]
        port=pick(args.port, "SWITCHBOARD_PORT", defaults.port, int),  # type: ignore[arg-type]
        redis_url=pick(args.redis_url, "REDIS_URL", defaults.redis_url, str),  # type: ignore[arg-type]
        use_redis=use_redis,
        heartbeat=pick(args.heartbeat, "SWITCHBOARD_HEARTBEAT", defaults.heartbeat, float),  # type: ignore[arg-type]
        queue_size=pick(args.queue_size, "SWITCHBOARD_QUEUE_SIZE", defaults.queue_size, int),  # type: ignore[arg-type]
        history_size=pick(args.history_size, "SWITCHBOARD_HISTORY_SIZE", defaults.history_size, int),  # type: ignore[arg-type]
        history_ttl=pick(args.history_ttl, "SWITCHBOARD_HISTORY_TTL", defaults.history_ttl, float),  # type: ignore[arg-type]
        redis_timeout=pick(args.redis_timeout, "SWITCHBOARD_REDIS_TIMEOUT", defaults.redis_timeout, float),  # type: ignore[arg-type]
        log_level=pick(args.log_level, "SWITCHBOARD_LOG_LEVEL", defaults.log_level, str),  # type: ignore[arg-type]
        components=components,
        cors_origins=tuple(
            args.cors_origins
            or [o.strip() for o in env.get("SWITCHBOARD_CORS_ORIGINS", "").split(",") if o.strip()]
        ),
        max_streams=pick(args.max_streams, "SWITCHBOARD_MAX_STREAMS", defaults.max_streams, int),  # type: ignore[arg-type]
        max_message=pick(args.max_message, "SWITCHBOARD_MAX_MESSAGE", defaults.max_message, int),  # type: ignore[arg-type]
        secret=pick(args.secret, "SWITCHBOARD_SECRET", None, str),  # type: ignore[arg-type]
        insecure=args.insecure or env.get("SWITCHBOARD_INSECURE", "").lower() in TRUE_WORDS,
        session_token_ttl=pick(args.session_token_ttl, "SWITCHBOARD_SESSION_TOKEN_TTL", defaults.session_token_ttl, float),  # type: ignore[arg-type]
        max_streams_per_token=pick(args.max_streams_per_token, "SWITCHBOARD_MAX_STREAMS_PER_TOKEN", defaults.max_streams_per_token, int),  # type: ignore[arg-type]
        rate_limit=pick(args.rate_limit, "SWITCHBOARD_RATE_LIMIT", defaults.rate_limit, float),  # type: ignore[arg-type]
        rate_burst=pick(args.rate_burst, "SWITCHBOARD_RATE_BURST", defaults.rate_burst, int),  # type: ignore[arg-type]
    )
