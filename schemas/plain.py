"""Request bodies of names and texts, checked in plain Python before marshmallow.

Loading a two-field body through a marshmallow schema cost about 20 µs, 6% of the server's CPU
for an agent message (docs/architecture.md, the publish path's profile). ``PlainBody`` reads a
schema's fields once and, for a body that is plainly valid (a JSON object of exactly the
schema's string fields, each within its name pattern or length), answers what the schema would;
anything else goes to the schema, which decides and says why. A schema it cannot read that way
(another field type or validator, defaults, hooks, unknown keys kept) always goes to the schema.
``tests/test_plain_bodies.py`` generates bodies to hold it to accepting only what the schema
accepts, with the same result.
"""

import re
from collections.abc import Callable
from typing import Any, cast

from marshmallow import RAISE, Schema, fields, missing, validate

Check = Callable[[Any], bool]


def _name_check(pattern: validate.Regexp) -> Check:
    regex = cast("re.Pattern[str]", pattern.regex)
    return lambda value: type(value) is str and regex.match(value) is not None


def _length_check(length: validate.Length) -> Check:
    if length.equal is not None:
        equal = length.equal
        return lambda value: type(value) is str and len(value) == equal
    low = length.min if length.min is not None else 0
    high = length.max
    if high is None:
        return lambda value: type(value) is str and low <= len(value)
    return lambda value: type(value) is str and low <= len(value) <= high


def _plain_check(field: "fields.Field[Any]") -> Check | None:
    """The check of a string field with one pattern or length validator, else None."""
    if type(field) is not fields.String or field.load_default is not missing or len(field.validators) != 1:
        return None
    validator = field.validators[0]
    if type(validator) is validate.Regexp:
        return _name_check(validator)
    if type(validator) is validate.Length:
        return _length_check(validator)
    return None


class PlainBody:
    __slots__ = ("_checks", "_required", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        checks: dict[str, Check] = {}
        plain = schema.unknown == RAISE and not schema._hooks and not schema.only and not schema.exclude
        for name, field in schema.fields.items():
            check = _plain_check(field)
            if check is None or field.data_key not in (None, name) or field.dump_only:
                plain = False
                break
            checks[name] = check
        self._checks = checks if plain else None
        partial = schema.partial
        self._required = frozenset(
            name
            for name, field in schema.fields.items()
            if field.required and not (partial is True or (partial and name in partial))
        )

    def load(self, data: Any) -> dict[str, Any]:
        """What ``schema.load(data)`` answers (and raises)."""
        checks = self._checks
        if (
            checks is not None
            and type(data) is dict
            and self._required <= data.keys()
            and all(type(key) is str and key in checks and checks[key](value) for key, value in data.items())
        ):
            return dict(data)
        loaded: dict[str, Any] = self.schema.load(data)
        return loaded

    @property
    def plain(self) -> bool:
        """Whether bodies can be checked in plain Python at all."""
        return self._checks is not None
