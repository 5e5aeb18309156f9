"""Settings (docs/api.md, "Processes"): defaults, flags, environment variables, and which wins."""

import dataclasses
import math
from typing import Any

import pytest

from app.process.settings import Settings, load_settings

BOTH = ("chatbot", "workbench")


def load(*argv: str, **environ: str) -> Settings:
    """Settings from exactly these flags and this environment (never the real os.environ)."""
    return load_settings(list(argv), environ)


def test_defaults() -> None:
    """No flags and an empty environment give the documented defaults."""
    settings = load()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.use_redis is True
    assert settings.heartbeat == 30
    assert settings.client_timeout == 30
    assert settings.components == BOTH


def test_defaults_ignore_unrelated_environment() -> None:
    """Variables that are not Switchboard's change nothing."""
    assert load(HOST="10.0.0.1", PORT="1", REDIS="x", HEARTBEAT="1") == load()


def test_real_environment_is_used_when_none_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings(argv) without an environ mapping reads os.environ."""
    monkeypatch.setenv("SWITCHBOARD_PORT", "8123")
    assert load_settings([]).port == 8123


FLAGS: list[Any] = [
    pytest.param(["--host", "0.0.0.0"], "host", "0.0.0.0", id="host"),
    pytest.param(["--port", "8002"], "port", 8002, id="port"),
    pytest.param(
        ["--redis-url", "redis://cache:6380/2"], "redis_url", "redis://cache:6380/2", id="redis-url"
    ),
    pytest.param(["--no-redis"], "use_redis", False, id="no-redis"),
    pytest.param(["--heartbeat", "5"], "heartbeat", 5.0, id="heartbeat"),
    pytest.param(["--heartbeat", "0.5"], "heartbeat", 0.5, id="heartbeat-fraction"),
    pytest.param(["--client-timeout", "2.5"], "client_timeout", 2.5, id="client-timeout"),
]


@pytest.mark.parametrize(("argv", "field", "value"), FLAGS)
def test_each_flag(argv: list[str], field: str, value: object) -> None:
    """Each flag sets its field, and only that field."""
    settings = load(*argv)
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)
    assert dataclasses.replace(settings, **{field: getattr(load(), field)}) == load()


ENVIRONMENT: list[Any] = [
    pytest.param("SWITCHBOARD_HOST", "0.0.0.0", "host", "0.0.0.0", id="host"),
    pytest.param("SWITCHBOARD_PORT", "8002", "port", 8002, id="port"),
    pytest.param("REDIS_URL", "redis://cache:6380/2", "redis_url", "redis://cache:6380/2", id="redis-url"),
    pytest.param("USE_REDIS_SSE", "false", "use_redis", False, id="use-redis-false"),
    pytest.param("USE_REDIS_SSE", "FALSE", "use_redis", False, id="use-redis-FALSE"),
    pytest.param("USE_REDIS_SSE", "0", "use_redis", False, id="use-redis-0"),
    pytest.param("USE_REDIS_SSE", "no", "use_redis", False, id="use-redis-no"),
    pytest.param("USE_REDIS_SSE", "true", "use_redis", True, id="use-redis-true"),
    pytest.param("USE_REDIS_SSE", "1", "use_redis", True, id="use-redis-1"),
    pytest.param("USE_REDIS_SSE", "yes", "use_redis", True, id="use-redis-yes"),
    pytest.param("SWITCHBOARD_HEARTBEAT", "5", "heartbeat", 5.0, id="heartbeat"),
    pytest.param("SWITCHBOARD_HEARTBEAT", "0.25", "heartbeat", 0.25, id="heartbeat-fraction"),
    pytest.param("SWITCHBOARD_CLIENT_TIMEOUT", "10", "client_timeout", 10.0, id="client-timeout"),
]


@pytest.mark.parametrize(("var", "raw", "field", "value"), ENVIRONMENT)
def test_each_environment_variable(var: str, raw: str, field: str, value: object) -> None:
    """Each environment variable sets its field, parsed to the field's type."""
    settings = load(**{var: raw})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)
    assert dataclasses.replace(settings, **{field: getattr(load(), field)}) == load()


@pytest.mark.parametrize(
    ("var", "field"),
    [
        ("SWITCHBOARD_HOST", "host"),
        ("SWITCHBOARD_PORT", "port"),
        ("REDIS_URL", "redis_url"),
        ("SWITCHBOARD_HEARTBEAT", "heartbeat"),
    ],
)
def test_empty_environment_variable_means_default(var: str, field: str) -> None:
    """A variable set to the empty string counts as unset."""
    assert getattr(load(**{var: ""}), field) == getattr(load(), field)


PRECEDENCE: list[Any] = [
    pytest.param(["--host", "0.0.0.0"], "SWITCHBOARD_HOST", "10.1.1.1", "host", "0.0.0.0", id="host"),
    pytest.param(["--port", "8002"], "SWITCHBOARD_PORT", "9000", "port", 8002, id="port"),
    pytest.param(
        ["--redis-url", "redis://flag:1/0"],
        "REDIS_URL",
        "redis://env:2/0",
        "redis_url",
        "redis://flag:1/0",
        id="redis-url",
    ),
    pytest.param(["--no-redis"], "USE_REDIS_SSE", "true", "use_redis", False, id="no-redis"),
    pytest.param(["--heartbeat", "7"], "SWITCHBOARD_HEARTBEAT", "60", "heartbeat", 7.0, id="heartbeat"),
    pytest.param(
        ["--client-timeout", "3"],
        "SWITCHBOARD_CLIENT_TIMEOUT",
        "9",
        "client_timeout",
        3.0,
        id="client-timeout",
    ),
]


@pytest.mark.parametrize(("argv", "var", "raw", "field", "value"), PRECEDENCE)
def test_flag_beats_environment(argv: list[str], var: str, raw: str, field: str, value: object) -> None:
    """When both are given, the flag wins over its environment variable."""
    assert getattr(load(*argv, **{var: raw}), field) == value


@pytest.mark.parametrize(
    ("argv", "components"),
    [
        ([], BOTH),
        (["--chatbot"], ("chatbot",)),
        (["--workbench"], ("workbench",)),
        (["--chatbot", "--workbench"], BOTH),
        (["--workbench", "--chatbot"], BOTH),
    ],
)
def test_components(argv: list[str], components: tuple[str, ...]) -> None:
    """--chatbot and --workbench pick the sub-apps; neither means both."""
    assert load(*argv).components == components


@pytest.mark.parametrize(
    "argv",
    [["--heartbeat", "0"], ["--heartbeat=-1"], ["--heartbeat=-0.5"], ["--heartbeat", "nan"]],
    ids=["zero", "negative", "negative-fraction", "nan"],
)
def test_invalid_heartbeat_flag_raises(argv: list[str]) -> None:
    """A heartbeat that is not a positive number is refused."""
    with pytest.raises(ValueError):
        load(*argv)


@pytest.mark.parametrize("raw", ["0", "-1", "-0.5", "nan", "soon"])
def test_invalid_heartbeat_environment_raises(raw: str) -> None:
    """SWITCHBOARD_HEARTBEAT that is not a positive number is refused."""
    with pytest.raises(ValueError):
        load(SWITCHBOARD_HEARTBEAT=raw)


@pytest.mark.parametrize("argv", [["--port", "http"], ["--heartbeat", "soon"], ["--bogus"]])
def test_malformed_flag_exits_with_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A flag that does not parse is a usage error (argparse exit status 2)."""
    with pytest.raises(SystemExit) as caught:
        load(*argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_malformed_port_environment_raises() -> None:
    """SWITCHBOARD_PORT that is not an integer is refused."""
    with pytest.raises(ValueError):
        load(SWITCHBOARD_PORT="http")


@pytest.mark.parametrize("heartbeat", [0, -1, math.nan])
def test_settings_validates_heartbeat(heartbeat: float) -> None:
    """Settings itself refuses a heartbeat that is not positive."""
    with pytest.raises(ValueError):
        Settings(heartbeat=heartbeat)


@pytest.mark.parametrize("client_timeout", [0, -1, math.nan, math.inf])
def test_settings_validates_client_timeout(client_timeout: float) -> None:
    """A client timeout must be a positive number of seconds: without one, a slow client could
    hold a connection for ever."""
    with pytest.raises(ValueError):
        Settings(client_timeout=client_timeout)


@pytest.mark.parametrize("components", [(), ("admin",), ("chatbot", "admin")])
def test_settings_validates_components(components: tuple[str, ...]) -> None:
    """Components must be a non-empty subset of chatbot and workbench."""
    with pytest.raises(ValueError):
        Settings(components=components)


@pytest.mark.parametrize(
    ("field", "value"), [("port", 9), ("host", "0.0.0.0"), ("use_redis", False), ("heartbeat", 1.0)]
)
def test_settings_is_frozen(field: str, value: object) -> None:
    """Settings cannot be changed after it is built."""
    settings = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, field, value)
    assert getattr(settings, field) == getattr(load(), field)


def test_the_bot_key_comes_from_the_environment_only() -> None:
    """SWITCHBOARD_BOT_API_KEY, else OPENAI_API_KEY (as the openai SDK reads it); no flag, so
    that a key never shows in a process list."""
    assert load().bot_api_key is None
    assert load(OPENAI_API_KEY="sk-a").bot_api_key == "sk-a"
    assert load(OPENAI_API_KEY="sk-a", SWITCHBOARD_BOT_API_KEY="sk-b").bot_api_key == "sk-b"
    assert "sk-b" not in repr(load(SWITCHBOARD_BOT_API_KEY="sk-b"))
    with pytest.raises(SystemExit):
        load("--bot-api-key", "sk-c")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bot", "gpt"], "bot must be one of"),
        (["--bot", "webhook"], "needs --bot-url"),
        (["--bot", "openai", "--bot-url", "http://127.0.0.1:1/v1"], "needs --bot-model"),
        (["--bot", "webhook", "--bot-url", "ftp://x/bot"], "not an http"),
        (["--webhook-url", "127.0.0.1:9/hook"], "not an http"),
        (["--webhook-attempts", "0"], "at least 1"),
    ],
)
def test_bot_and_webhook_settings_are_checked(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(*argv)


def test_webhook_urls_from_flags_or_the_environment() -> None:
    urls = ("http://127.0.0.1:9/a", "https://crm.example.com/b")
    assert load("--webhook-url", urls[0], "--webhook-url", urls[1]).webhook_urls == urls
    assert load(SWITCHBOARD_WEBHOOK_URLS=",".join(urls)).webhook_urls == urls
