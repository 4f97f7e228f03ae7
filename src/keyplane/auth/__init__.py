"""Signed-request verification: dialects, the pipeline, and the ASGI middleware."""
