"""The holder-side commands: ``keyplane keys|portfolio|tax|bot``.

These are third-party tools that happen to ship with keyplane: they import nothing from the
server packages and talk to exchanges over HTTP (ccxt or the SDK).
"""

from __future__ import annotations

from keyplane.apps.bot.cli import app as bot_app
from keyplane.apps.keys_cli import app as keys_app
from keyplane.apps.portfolio.cli import app as portfolio_app
from keyplane.apps.tax.cli import app as tax_app

__all__ = ["bot_app", "keys_app", "portfolio_app", "tax_app"]
