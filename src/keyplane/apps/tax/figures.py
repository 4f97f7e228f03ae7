"""Figures as integers: every amount in a report counts units of ``10**-scale``.

The ledger stores an amount as an integer at ``STORED`` (10) decimals when it can, else as its
exact decimal text. A report runs at one scale for all its figures: ``STORED``, or more when the
ledger holds an amount with more decimals (an 18-decimal token), up to ``MAX_SCALE``. Sums,
differences and comparisons of such integers are exact; each rounding step is in ``pools.py``.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, localcontext
from itertools import repeat
from operator import truediv

from keyplane.apps.money import CONTEXT

STORED = 10  # decimals of the integers the ledger stores
MAX_SCALE = 18  # the most decimals a report counts (a wei is 10**-18 ether)
DIGITS = 50  # CONTEXT's precision: a figure and its decimals fit in it
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # scaleb in it never rounds


def decimals(d: Decimal) -> int:
    """How many decimals ``d`` needs (``1.50`` needs 1, ``100`` none)."""
    if not d:
        return 0
    exponent = d.normalize(_EXACT).as_tuple().exponent
    return max(0, -int(exponent))


def to_int(d: Decimal, scale: int) -> int | None:
    """``d`` in units of ``10**-scale``, or None if it has more decimals or more digits than a
    report at that scale counts."""
    if not d:
        return 0
    if not d.is_finite() or d.adjusted() >= DIGITS - scale:
        return None
    q = d.scaleb(scale, _EXACT)
    n = int(q)
    return n if n == q else None


def to_decimal(n: int, scale: int) -> Decimal:
    """A scaled integer as the exact ``Decimal`` it stands for, without trailing zeros."""
    return Decimal(text(n, scale))


def text(n: int, scale: int) -> str:
    """A scaled integer as a plain decimal string: no exponent, no trailing zeros."""
    if n < 0:
        return "-" + text(-n, scale)
    q, r = divmod(n, 10**scale)
    return f"{q}.{r:0{scale}d}".rstrip("0") if r else str(q)


def texts(values: list[int], scale: int) -> list[str]:
    """``text`` of every value, in bulk: ``Decimal(value) / 10**scale`` (exact, without trailing
    zeros) and then ``str``, in C loops, several times faster than one by one in Python."""
    limit = 10 ** (DIGITS - scale)
    if not values or max(values) >= limit or min(values) <= -limit:
        return [text(v, scale) for v in values]
    with localcontext(CONTEXT):  # every quotient is exact: no more than DIGITS digits
        out = list(map(str, map(truediv, map(Decimal, values), repeat(Decimal(10**scale)))))
    if "E" in "".join(out):  # a tiny value, which str() writes with an exponent
        out = [text(v, scale) if "E" in t else t for v, t in zip(values, out, strict=True)]
    return out
