"""Satisfaction (docs/api.md, "Satisfaction"): once a conversation is closed its customer may
rate it once, 1 to 5 with an optional comment. The rating is a move (app.domain.store.base.Move)
run inside the store's atomic step, so that of two ratings sent at once exactly one is kept and
the other is refused; and it is counted, per process, in a histogram by score."""

from prometheus_client import CollectorRegistry, Histogram

from app.domain.store.base import Move, Rating, Session, TransitionRefused
from schemas.fields import MAX_SCORE, MIN_SCORE

SCORE_BUCKETS = tuple(float(score) for score in range(MIN_SCORE, MAX_SCORE + 1))


class RatingRefused(TransitionRefused):
    """A rating the conversation's state does not allow (HTTP 409 with ``code``)."""

    code = "conflict"


class NotClosed(RatingRefused):
    code = "not_closed"

    def __init__(self, status: str) -> None:
        super().__init__(f"a conversation is rated once it is closed; this one is {status}")


class AlreadyRated(RatingRefused):
    code = "already_rated"

    def __init__(self) -> None:
        super().__init__("this conversation has been rated already")


def rate(score: int, comment: str | None, at: int) -> Move:
    """The closed, unrated conversation with its rating; an empty comment counts as none. The
    rest of the record is left as it is (``updated_at`` says when its state last changed)."""

    def move(session: Session) -> Session:
        if session["status"] != "closed":
            raise NotClosed(session["status"])
        if session.get("rating") is not None:
            raise AlreadyRated()
        rated = session.copy()
        rated["rating"] = Rating(score=score, comment=comment or None, at=at)
        return rated

    return move


class RatingMetrics:
    """Ratings accepted by this process (Prometheus sums the processes)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scores = Histogram(
            "switchboard_rating_score",
            "Satisfaction ratings accepted by this process, by score (1 to 5).",
            buckets=SCORE_BUCKETS,
            registry=registry,
        )
