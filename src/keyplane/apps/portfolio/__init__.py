"""Balances across profiles, valued in one currency, with snapshot history."""
