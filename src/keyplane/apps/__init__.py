"""Apps built on the client library: portfolio tracker, tax report, grid bot."""
