"""A grid bot on a trade-only key."""
