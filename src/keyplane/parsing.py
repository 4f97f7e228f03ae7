"""The one set of input parsers: whole numbers, decimals, durations, moments in time and text.

Every value a client sends passes through one of these at the edge (the route, or the form of a
console page), so nothing past the edge sees input that can raise. Each parser is strict and
bounded:

- numbers are written with the ASCII digits 0-9 only (``str.isdigit`` also accepts ``²`` and
  ``١``, which ``int()`` then refuses or reads differently), and fit a signed 64-bit column;
- decimals are plain (``1000.50``, never ``1e999999999``), with a bounded number of digits;
- durations and datetimes are bounded, so adding one to *now* never overflows;
- text has no NUL, no control character and no lone surrogate (PostgreSQL refuses NUL, and a
  surrogate does not encode as UTF-8), and is no longer than the column that stores it.

Pure: no framework, no database. A parser raises :class:`ParseError`; each surface turns it into
its own error (a Binance code on ``/api``, ``{"error", "message"}`` on ``/v1``, a message next to
the field on a console page).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from decimal import Decimal, InvalidOperation

INT64_MAX = 2**63 - 1
# The longest duration anything accepts (a key's expiry, a rotation's grace): 100 years.
MAX_DURATION = dt.timedelta(days=36525)
# The latest moment anything accepts; far enough to mean "never", early enough that adding a
# duration or a time-zone offset never overflows a datetime.
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_DURATION_PART = re.compile(r"([0-9]{1,12})\s*([smhdw])", re.ASCII)
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?", re.ASCII
)
_ALLOWED_CONTROLS = frozenset("\t\n\r")


class ParseError(ValueError):
    """A value that does not parse. ``illegal`` is True when it holds characters the parameter can
    never hold (Binance's -1100), False when it is malformed or out of range (-1102)."""

    def __init__(self, message: str, *, name: str, illegal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.illegal = illegal


def shown(value: object, limit: int = 40) -> str:
    """A client's value for an error message: cut short, with control characters escaped."""
    text = str(value)
    cut = text[:limit]
    return repr(cut) + ("..." if len(text) > limit else "")


def whole(text: str, name: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    """A whole number in ``[lo, hi]`` written with ASCII digits (a leading ``-`` when ``lo < 0``)."""
    raw = text.strip()
    digits = raw[1:] if raw.startswith("-") and lo < 0 else raw
    if not _DIGITS.fullmatch(digits):
        raise ParseError(
            f"parameter {name!r} must be a whole number written with the digits 0-9, got {shown(text)}",
            name=name,
            illegal=True,
        )
    if len(digits) > 19:  # past any 64-bit value; int() of a very long string costs quadratic time
        raise ParseError(
            f"parameter {name!r} must be between {lo} and {hi}, got a {len(digits)}-digit number", name=name
        )
    value = int(raw)
    if not lo <= value <= hi:
        raise ParseError(f"parameter {name!r} must be between {lo} and {hi}, got {value}", name=name)
    return value


def plain_decimal(text: str, name: str, *, int_digits: int = 20, frac_digits: int = 18) -> Decimal:
    """A non-negative decimal written plainly (``1000.50``): at most ``int_digits`` digits before
    the point and ``frac_digits`` after it, so it is finite and its size is bounded."""
    raw = text.strip()
    head, dot, tail = raw.partition(".")
    if not _DIGITS.fullmatch(head) or (dot and not _DIGITS.fullmatch(tail)):
        raise ParseError(
            f"parameter {name!r} must be a plain decimal number such as 1000.50 (digits 0-9 and one point), "
            f"got {shown(text)}",
            name=name,
            illegal=True,
        )
    if len(head) > int_digits or len(tail) > frac_digits:
        raise ParseError(
            f"parameter {name!r} must have at most {int_digits} digits before the point and {frac_digits} after it, "
            f"got {shown(text)}",
            name=name,
        )
    try:
        return Decimal(raw)
    except InvalidOperation as e:  # pragma: no cover - the checks above admit only plain decimals
        raise ParseError(f"parameter {name!r} is not a number", name=name, illegal=True) from e


def bounded_decimal(value: Decimal, name: str, *, int_digits: int = 20, frac_digits: int = 18) -> Decimal:
    """The same bounds for a Decimal that did not come from text (a caller in the same process)."""
    if not value.is_finite() or value < 0:
        raise ParseError(f"parameter {name!r} must be a finite, non-negative number", name=name)
    # Check the exponent before writing the digits out: 1E+999999999 is a billion of them.
    exponent = value.as_tuple().exponent
    if value.adjusted() >= int_digits or (isinstance(exponent, int) and exponent < -frac_digits - 40):
        raise ParseError(
            f"parameter {name!r} must have at most {int_digits} digits before the point and {frac_digits} after it",
            name=name,
        )
    return plain_decimal(format(value, "f"), name, int_digits=int_digits, frac_digits=frac_digits)


def duration(text: str, name: str, *, maximum: dt.timedelta = MAX_DURATION) -> dt.timedelta:
    """``30d``, ``24h``, ``90m``, ``1w2d``, or a bare number of seconds; at most ``maximum``."""
    raw = text.strip().lower()
    total = 0
    if _DIGITS.fullmatch(raw):
        total = int(raw) if len(raw) <= 19 else INT64_MAX
    else:
        pos = 0
        for m in _DURATION_PART.finditer(raw):
            if m.start() != pos:
                break
            total += int(m.group(1)) * _DURATION_UNIT_S[m.group(2)]
            pos = m.end()
            while pos < len(raw) and raw[pos] == " ":
                pos += 1
        if not raw or pos != len(raw):
            raise ParseError(
                f"{shown(text)} is not a duration such as 30d, 24h or 90m (digits 0-9 and one of s, m, h, d, w)",
                name=name,
                illegal=not raw.isascii(),
            )
    if total > maximum.total_seconds():
        raise ParseError(f"{shown(text)} is longer than the maximum of {maximum.days} days", name=name)
    return dt.timedelta(seconds=total)


def moment(text: str, name: str, *, earliest: dt.datetime = EARLIEST, latest: dt.datetime = LATEST) -> dt.datetime:
    """An ISO 8601 timestamp (``2027-01-31T12:00:00Z``; no zone means UTC) or a date
    (``2027-01-31``: the end of that day, UTC), as an aware UTC datetime within the bounds."""
    raw = text.strip()
    outside = ParseError(
        f"{shown(text)} is outside the accepted range {earliest.date().isoformat()} to {latest.date().isoformat()}",
        name=name,
    )
    try:
        if _DATE.fullmatch(raw):
            when = dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(23, 59, 59), tzinfo=dt.UTC)
        elif _TIMESTAMP.fullmatch(raw):
            when = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        else:
            raise ValueError("not an ISO date")
    except ValueError as e:
        raise ParseError(
            f"{shown(text)} is not a date such as 2027-01-31 or a timestamp such as 2027-01-31T12:00:00Z",
            name=name,
        ) from e
    try:  # 9999-12-31T23:59:59-12:00 is a valid spelling of a moment past datetime's range
        when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
    except OverflowError as e:
        raise outside from e
    if not earliest <= when <= latest:
        raise outside
    return when


def bad_character(value: str, *, multiline: bool = False) -> str | None:
    """The first character that no text parameter may hold (a control character, or a lone
    surrogate), or None. Tab, CR and LF are allowed when ``multiline``."""
    if value.isprintable():  # the common case, in C: no control, format or separator character
        return None
    for ch in value:
        if multiline and ch in _ALLOWED_CONTROLS:
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return ch
    return None


def text(value: str, name: str, *, max_len: int, multiline: bool = False, strip: bool = True) -> str:
    """Text with no control character (tab/CR/LF only when ``multiline``) and no lone surrogate,
    at most ``max_len`` characters once stripped."""
    out = value.strip() if strip else value
    ch = bad_character(out, multiline=multiline)
    if ch is not None:
        what = "a NUL byte" if ch == "\x00" else f"the character U+{ord(ch):04X}"
        raise ParseError(f"parameter {name!r} contains {what}, which is not allowed", name=name, illegal=True)
    if len(out) > max_len:
        raise ParseError(f"parameter {name!r} is at most {max_len} characters; got {len(out)}", name=name)
    return out
