"""API keys: their format, storage, scopes and restrictions, and their lifecycle."""
