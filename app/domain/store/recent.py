"""What a process remembers of the sessions it wrote or read last: the bytes a change may start
from without a GET (app/domain/store/redis_store.py)."""

from collections import OrderedDict

# Sessions whose stored bytes a process remembers (about 400 bytes each).
RECENT_SESSIONS = 10_000


class RecentSessions:
    """A bounded map of session name to its stored bytes, least recently used out first. Only
    a guess: a stale entry costs one script run that answers the session as it is."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, bytes | str] = OrderedDict()

    def get(self, name: str) -> bytes | str | None:
        raw = self._entries.get(name)
        if raw is not None:
            self._entries.move_to_end(name)
        return raw

    def put(self, name: str, raw: bytes | str | None) -> None:
        if raw is None:
            self._entries.pop(name, None)
            return
        self._entries[name] = raw
        self._entries.move_to_end(name)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
