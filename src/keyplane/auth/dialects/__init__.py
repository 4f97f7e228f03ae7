"""How a signed request carries its key, its signature and what the signature covers."""
