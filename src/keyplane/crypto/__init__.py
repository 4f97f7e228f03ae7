"""The ground floor for cryptography: the master keyring, secret boxes and HMAC helpers.

Pure modules: no framework, no database, no settings. Callers pass every value in. ``keys/`` and
``accounts/`` build on them; nothing here imports another keyplane package.
"""
