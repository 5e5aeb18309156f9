"""The per-address limit on conversation starts and escalations (issue 12): one anonymous client
could start 17,714 conversations in 15 s and escalate 3,351 in 10 s.

What these tests prove, on real ``run.py`` processes and the real app, nothing mocked: past
``--start-rate`` a start (``POST /sessions``, or a chat that creates its session under
``--insecure``) and an escalation (``POST /manual/escalate``) get a JSON 429 ``rate_limited``
with ``Retry-After`` and change nothing; a bot's escalation past it is skipped, the session stays
with the bot and the customer's chat answers 200; behind a ``--trusted-proxy`` each
``X-Forwarded-For`` address has its own budget, while without one a spoofed header changes
nothing; ``switchboard_starts_refused_total`` counts every refusal by kind. And the unit tests of
the address itself (app.web.client_address) and of the two settings.

Every request is bounded (tests.support.api); every socket is on 127.0.0.1. The rates are a few
per minute, so that no token comes back while a test runs (one every 12 s at 5 a minute).
"""

import subprocess
from collections.abc import Callable, Mapping, Sequence

import aiohttp
import pytest

from app.domain.auth import TokenAuthority
from app.process.settings import Settings, load_settings
from app.web.client_address import client_address, limit_key, trusted_networks
from tests.support import api
from tests.support.api import CHATBOT, WORKBENCH, Reply, bearer, call_json, send
from tests.support.app_server import MakeClient
from tests.support.metrics import by_label, scrape
from tests.support.processes import ServerProcess, StartServer, clean_env

SECRET = "address-limits-test-secret-0123456789-abcdef"  # 44 characters
RATE = 5  # --start-rate in the process tests: 5 a minute, bursts of 5
REFUSED = "switchboard_starts_refused_total"
PROXY = "127.0.0.1/32"  # the tests' own address, as a trusted proxy
XFF = "X-Forwarded-For"

RunPy = Callable[..., subprocess.CompletedProcess[str]]

# --- the client address ----------------------------------------------------------------------

NETWORKS = trusted_networks(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("198.51.100.7", [], "198.51.100.7", id="peer"),
        pytest.param("198.51.100.7", ["203.0.113.5"], "198.51.100.7", id="untrusted-peer-header-ignored"),
        pytest.param("127.0.0.1", [], "127.0.0.1", id="trusted-peer-no-header"),
        pytest.param("127.0.0.1", ["203.0.113.5"], "203.0.113.5", id="trusted-peer"),
        pytest.param("127.0.0.1", ["6.6.6.6, 203.0.113.5"], "203.0.113.5", id="spoofed-left-ignored"),
        pytest.param("127.0.0.1", ["203.0.113.5, 10.1.2.3"], "203.0.113.5", id="trusted-hops-skipped"),
        pytest.param("127.0.0.1", ["6.6.6.6", "203.0.113.5"], "203.0.113.5", id="two-headers-one-list"),
        pytest.param("127.0.0.1", ["garbage, 203.0.113.5"], "203.0.113.5", id="garbage-left-never-read"),
        pytest.param("127.0.0.1", ["203.0.113.5, garbage"], "127.0.0.1", id="malformed-hop-peer"),
        pytest.param("127.0.0.1", ["203.0.113.5:4711"], "127.0.0.1", id="port-is-malformed"),
        pytest.param("127.0.0.1", ["unknown"], "127.0.0.1", id="unknown-is-malformed"),
        pytest.param("127.0.0.1", [""], "127.0.0.1", id="empty-header"),
        pytest.param("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9", id="all-trusted-farthest"),
        pytest.param("127.0.0.1", [" 2001:db8::1 "], "2001:db8::1", id="ipv6-hop"),
        pytest.param("::ffff:127.0.0.1", ["203.0.113.5"], "203.0.113.5", id="mapped-trusted-peer"),
        pytest.param("::ffff:198.51.100.7", [], "198.51.100.7", id="mapped-peer-is-ipv4"),
        pytest.param("fd00::2", ["2001:db8::1"], "2001:db8::1", id="ipv6-trusted-peer"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], expected: str) -> None:
    address = client_address(peer, forwarded, NETWORKS)
    assert str(address) == expected


@pytest.mark.parametrize("peer", [None, "", "not-an-address"])
def test_a_peer_without_an_address_has_one_shared_key(peer: str | None) -> None:
    """A Unix socket's peer has no IP address: such clients share one budget."""
    assert client_address(peer, ["203.0.113.5"], trusted_networks(["0.0.0.0/0"])) is None
    assert limit_key(None) == "unknown"


def test_ipv6_addresses_share_their_64() -> None:
    """One host can pick any address of its /64: the /64 is the key; IPv4 is the address."""

    def key(text: str) -> str:
        return limit_key(client_address(text, [], ()))

    assert key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("198.51.100.7") == "198.51.100.7"
    assert key("198.51.100.8") != key("198.51.100.7")


@pytest.mark.parametrize("cidr", ["nope", "10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", ""])
def test_a_bad_cidr_is_refused(cidr: str) -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        trusted_networks([cidr])
    with pytest.raises(ValueError, match="trusted proxy"):
        Settings(trusted_proxies=(cidr,))


def test_a_bare_address_is_its_own_network() -> None:
    assert [str(n) for n in trusted_networks(["10.0.0.1", "::1"])] == ["10.0.0.1/32", "::1/128"]


# --- the settings ----------------------------------------------------------------------------


def load(*argv: str, **environ: str) -> Settings:
    return load_settings(list(argv), environ)


def test_start_rate_and_trusted_proxies_defaults() -> None:
    """30 a minute, no proxy trusted (--start-rate's flag and variable are tested with the other
    limits' in tests/test_security_basics.py)."""
    settings = load()
    assert settings.start_rate == 30
    assert settings.trusted_proxies == ()


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_start_rate_must_be_at_least_one(bad: str) -> None:
    with pytest.raises(ValueError, match="start_rate"):
        load("--start-rate", bad)


def test_trusted_proxies_from_flags_and_environment() -> None:
    flags = load("--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1")
    assert flags.trusted_proxies == ("10.0.0.0/8", "::1")
    env = load(SWITCHBOARD_TRUSTED_PROXIES=" 10.0.0.0/8, ,192.168.0.0/16 ")
    assert env.trusted_proxies == ("10.0.0.0/8", "192.168.0.0/16")
    both = load("--trusted-proxy", "::1", SWITCHBOARD_TRUSTED_PROXIES="10.0.0.0/8")
    assert both.trusted_proxies == ("::1",)


def test_a_bad_trusted_proxy_stops_the_process(run_py: RunPy) -> None:
    """An invalid CIDR is a start-up error (exit status 2, naming it), not a silent no-op."""
    result = run_py("--no-redis", "--insecure", "--trusted-proxy", "10.0.0.1/8", env=clean_env())
    assert result.returncode == 2, result
    assert "10.0.0.1/8" in result.stderr, result.stderr


# --- on a real process -----------------------------------------------------------------------


def secure_process(server_process: StartServer, *args: str) -> ServerProcess:
    """A run.py process that requires tokens, on memory, with ``--start-rate RATE``."""
    env = {"SWITCHBOARD_INSECURE": "", "SWITCHBOARD_SECRET": SECRET}
    return server_process("--no-redis", "--start-rate", str(RATE), *args, env=env)


AGENT = bearer(TokenAuthority(SECRET).mint("agent", "alice", 600))


async def start(
    http: aiohttp.ClientSession, base: str, name: str, headers: Mapping[str, str] | None = None
) -> Reply:
    return await send(http, "POST", f"{base}{CHATBOT}/sessions", {"session_name": name}, headers=headers)


def assert_refused(reply: Reply) -> None:
    """The per-address limit's answer: JSON 429 rate_limited with a Retry-After in seconds."""
    assert reply.status == 429, (reply.status, reply.body)
    assert reply.content_type == "application/json", reply.headers
    assert reply.body["error"]["code"] == "rate_limited", reply.body
    retry_after = reply.headers.get("Retry-After", "")
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 60, reply.headers


async def listed(http: aiohttp.ClientSession, base: str, status: str) -> set[str]:
    """The names of the sessions in ``status`` (the workbench's listing, as an agent)."""
    body = await call_json(http, "GET", f"{base}{WORKBENCH}/sessions?status={status}", headers=AGENT)
    return {session["session_name"] for session in body["sessions"]}


async def refused(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    return by_label(await scrape(http, base), REFUSED, "kind")


async def statuses(
    http: aiohttp.ClientSession, base: str, names: Sequence[str], headers: Mapping[str, str]
) -> list[int]:
    return [(await start(http, base, name, headers)).status for name in names]


async def test_starts_past_the_rate_are_refused_and_create_nothing(server_process: StartServer) -> None:
    """RATE starts from one address pass at once; the next are 429 with Retry-After, create
    nothing, and are counted; reads, and what the started sessions do, are not limited."""
    server = secure_process(server_process)
    base = server.url
    names = [f"s{i}" for i in range(RATE + 3)]
    async with aiohttp.ClientSession() as http:
        tokens = {}
        for name in names[:RATE]:
            reply = await start(http, base, name)
            assert reply.status == 201, reply.body
            tokens[name] = reply.body["token"]
        for name in names[RATE:]:
            assert_refused(await start(http, base, name))
        assert_refused(await send(http, "POST", f"{base}{CHATBOT}/sessions"))  # a generated name too

        assert await listed(http, base, "bot_active") == set(names[:RATE])
        for name in names[RATE:]:
            missing = await send(http, "GET", f"{base}{WORKBENCH}/sessions/{name}", headers=AGENT)
            assert missing.status == 404, missing.body
        assert await refused(http, base) == {"start": len(names) - RATE + 1, "escalation": 0}
        # A customer who has a session chats on: chatting is not starting.
        answer = await api.chat(http, "s0", "hello", base=base, headers=bearer(tokens["s0"]))
        assert answer["reply"] is not None


async def test_escalations_past_the_rate_are_refused_and_the_bot_keeps_the_session(
    server_process: StartServer,
) -> None:
    """Starts and escalations share the address's budget. Past it, POST /manual/escalate is a
    429 and the session stays bot_active; a customer asking the bot for a human gets the bot's
    200 answer, the session stays with the bot (nobody is asked for it); both are counted."""
    server = secure_process(server_process)
    base = server.url
    async with aiohttp.ClientSession() as http:
        tokens = {}
        for name in ("a", "b", "c", "d"):  # four of the five
            tokens[name] = (await api.create(http, name, base=base))["token"]
        escalated = await api.escalate(http, "a", "help", base=base, headers=bearer(tokens["a"]))
        assert escalated["status"] == "waiting_agent"  # the fifth

        body = {"session_name": "b", "reason": "help"}
        assert_refused(
            await send(http, "POST", f"{base}{CHATBOT}/manual/escalate", body, headers=bearer(tokens["b"]))
        )
        answer = await api.chat(http, "c", "I want a human", base=base, headers=bearer(tokens["c"]))
        assert answer["reply"] is not None and answer["reply"]["role"] == "bot", answer
        assert answer["session"]["status"] == "bot_active", answer

        assert await listed(http, base, "waiting_agent") == {"a"}
        assert await listed(http, base, "bot_active") == {"b", "c", "d"}
        assert await refused(http, base) == {"start": 0, "escalation": 2}
        assert_refused(await start(http, base, "e"))
        assert await refused(http, base) == {"start": 1, "escalation": 2}


async def test_a_spoofed_forwarded_for_does_not_escape_the_limit(server_process: StartServer) -> None:
    """Without --trusted-proxy, X-Forwarded-For is the client's own word: ignored."""
    server = secure_process(server_process)
    async with aiohttp.ClientSession() as http:
        spoofed = [{XFF: f"203.0.113.{i}"} for i in range(RATE + 2)]
        got = [(await start(http, server.url, f"x{i}", h)).status for i, h in enumerate(spoofed)]
        assert got == [201] * RATE + [429] * 2, got
        assert await refused(http, server.url) == {"start": 2, "escalation": 0}


async def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(
    server_process: StartServer,
) -> None:
    """With --trusted-proxy 127.0.0.1/32 the address is X-Forwarded-For's rightmost untrusted
    entry: two addresses get RATE starts each; what a client writes left of it changes nothing;
    an IPv6 /64 is one budget; a request without the header counts against the proxy itself."""
    server = secure_process(server_process, "--trusted-proxy", PROXY)
    base = server.url
    async with aiohttp.ClientSession() as http:
        first, second = {XFF: "203.0.113.1"}, {XFF: "198.51.100.2, 127.0.0.1"}
        assert await statuses(http, base, [f"f{i}" for i in range(RATE + 1)], first) == [201] * RATE + [429]
        assert await statuses(http, base, [f"g{i}" for i in range(RATE + 1)], second) == [201] * RATE + [429]
        # The first client again, forging a fresh address on the left: still its own budget.
        assert await statuses(http, base, ["f-spoof"], {XFF: "192.0.2.99, 203.0.113.1"}) == [429]
        # IPv6: one /64 is one budget, the next /64 another.
        same = [{XFF: f"2001:db8:0:1::{i + 1:x}"} for i in range(RATE + 1)]
        got = [(await start(http, base, f"v{i}", h)).status for i, h in enumerate(same)]
        assert got == [201] * RATE + [429], got
        assert await statuses(http, base, ["w0"], {XFF: "2001:db8:0:2::1"}) == [201]
        # No header: the proxy's own address, untouched so far.
        assert await statuses(http, base, ["p0"], {}) == [201]
        assert await refused(http, base) == {"start": 4, "escalation": 0}
        assert len(await listed(http, base, "bot_active")) == 3 * RATE + 2


async def test_insecure_chats_count_only_when_they_start_a_conversation(
    make_client: MakeClient, settings: Settings
) -> None:
    """Under --insecure a chat with an unknown session starts it: that chat counts like POST
    /sessions (429 past the rate, nothing created); chats in existing sessions do not count."""
    client = await make_client(settings, start_rate=2)
    await api.chat(client, "one", "hello")
    await api.chat(client, "two", "hello")
    for _ in range(3):
        await api.chat(client, "one", "again")  # not a start
    body = {"session_name": "three", "content": "hello"}
    reply = await send(client, "POST", f"{CHATBOT}/chat", body)
    assert_refused(reply)
    assert (await send(client, "GET", f"{CHATBOT}/sessions/three")).status == 404
    assert by_label(await scrape(client), REFUSED, "kind") == {"start": 1, "escalation": 0}
