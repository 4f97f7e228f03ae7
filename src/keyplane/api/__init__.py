"""HTTP: the Binance-compatible surface, the native /v1 API and the console. Routes stay thin."""
