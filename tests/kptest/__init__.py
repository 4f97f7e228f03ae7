"""Test support: backends, a real server on a real socket, and real clients."""
