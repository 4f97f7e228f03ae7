"""Server-side CLI command groups (``keyplane admin``, ``keyplane serve`` ...)."""
