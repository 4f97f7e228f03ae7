"""Binance-compatible WebSocket market streams: stream names, payloads, the fan-out hub."""
