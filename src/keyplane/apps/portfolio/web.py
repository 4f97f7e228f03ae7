"""``keyplane portfolio serve``: the portfolio on a local web page (loopback only by default).

``GET /`` shows the latest snapshot (totals per asset and per account, allocation) and the chart;
``GET /chart.svg`` is the chart alone; ``POST /refresh`` takes a new snapshot (refused when sent
from another origin). Nothing on the page carries a key: it is built from the snapshot store.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from keyplane.apps.portfolio import chart
from keyplane.apps.portfolio.tracker import Snapshot, SnapshotStore


def page(snap: Snapshot | None, quote: str) -> str:
    esc = html.escape
    if snap is None:
        body = "<p>No snapshot yet. Press refresh, or run <code>keyplane portfolio</code>.</p>"
    else:
        when = datetime.fromtimestamp(snap.ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        alloc = snap.allocation()
        rows = "".join(
            f"<tr><td>{esc(a)}</td><td>{amt}</td><td>{val}</td><td>{alloc.get(a, '')}</td></tr>"
            for a, (amt, val) in snap.by_asset().items()
        )
        accounts = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in snap.by_profile().items())
        warnings = "".join(f"<li>{esc(w)}</li>" for w in snap.warnings)
        body = (
            f"<p>Snapshot of {when}. Total: <strong>{snap.total} {esc(snap.quote)}</strong></p>"
            f"<table><tr><th>Asset</th><th>Amount</th><th>Value ({esc(snap.quote)})</th><th>%</th></tr>{rows}</table>"
            f"<h2>Accounts</h2><table><tr><th>Account</th><th>Value</th></tr>{accounts}</table>"
            + (f"<ul>{warnings}</ul>" if warnings else "")
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>keyplane portfolio</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em 1em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h1>Portfolio ({esc(quote)})</h1>{body}"
        "<form method='post' action='/refresh'><button>Refresh</button></form>"
        "<p><img src='/chart.svg' alt='value over time and allocation'></p></body></html>"
    )


def make_server(
    store: SnapshotStore, quote: str, refresh: Callable[[], Snapshot], host: str = "127.0.0.1", port: int = 8765
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, ctype: str, data: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/":
                self._send(200, "text/html; charset=utf-8", page(store.latest(quote), quote).encode())
            elif self.path == "/chart.svg":
                data = chart.render(store.history(quote), store.latest(quote), "svg")
                self._send(200, "image/svg+xml", data)
            else:
                self._send(404, "text/plain", b"not found")

        def do_POST(self) -> None:
            if self.path != "/refresh":
                self._send(404, "text/plain", b"not found")
                return
            # A refresh uses the keys: refuse one that another web page makes the browser send.
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
                self._send(403, "text/plain", b"cross-origin refresh refused")
                return
            try:
                snap = refresh()
                if snap.failures:  # incomplete: not stored, and each failing profile named
                    raise ValueError("; ".join(snap.failures) + " (nothing was stored)")
                store.save(snap)
            except Exception as e:  # shown on the page, one line, no traceback
                self._send(502, "text/plain; charset=utf-8", f"refresh failed: {e}".encode())
                return
            self._send(303, "text/plain", b"", {"Location": "/"})

    return ThreadingHTTPServer((host, port), Handler)
