"""keyplane: self-hostable exchange API keys, a reference spot exchange, and the tools that hold keys."""

__version__ = "0.1.0"
