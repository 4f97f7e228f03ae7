"""Frames written straight to a socket parse, in a real WebSocket client's own parser, as the text
messages they carry, at each length encoding."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from keyplane.streams.frames import text_frame


def _client_after_handshake() -> WSConnection:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="127.0.0.1", target="/ws")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_a_client_reads_each_frame_as_its_message(size):
    text = ("é" * size)[:size] if size < 1000 else "x" * size
    client = _client_after_handshake()
    client.receive_data(text_frame(text.encode()) + text_frame(b'{"a":1}'))
    events = list(client.events())
    assert [type(e) for e in events] == [TextMessage, TextMessage]
    assert events[0].data == text and events[0].message_finished
    assert events[1].data == '{"a":1}'
