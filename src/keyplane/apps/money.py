"""The ``Decimal`` context of every figure the holder-side apps compute (tax reports, portfolio values).

Python's ``decimal`` module keeps one context per thread, and any code in the process may change
it: ccxt, for one, sets ROUND_HALF_UP (and the Underflow trap) on it whenever it formats an amount.
A figure computed in that context would depend on what ran before it in the same process. So the
apps compute in ``CONTEXT`` (``localcontext(CONTEXT)``, or its methods), never in the thread's.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, DivisionByZero, InvalidOperation, Overflow

CONTEXT = Context(prec=50, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])
