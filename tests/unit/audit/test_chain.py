from __future__ import annotations

import datetime as dt

from keyplane.audit import chain


def _event(seq: int, **kw):
    base = dict(
        seq=seq,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        event_type="key:api_key:created",
        actor="admin:cli",
        user_id=1,
        key_id="kp_live_x",
        ip=None,
        data="{}",
    )
    base.update(kw)
    return chain.canonical(**base)


def test_chain_links_depend_on_everything_before():
    h1 = chain.link(chain.GENESIS, _event(1))
    h2 = chain.link(h1, _event(2))
    assert h2 != chain.link(chain.GENESIS, _event(2))
    assert h1 != chain.link(chain.GENESIS, _event(1, actor="user:1"))
    assert h1 != chain.link(chain.GENESIS, _event(1, data='{"x":1}'))
    assert h1 == chain.link(chain.GENESIS, _event(1))
