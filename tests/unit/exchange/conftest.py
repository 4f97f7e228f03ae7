"""What the order-service tests share: one set of services per module (per test on PostgreSQL),
books emptied and the ledger invariants checked around each test that asks for ``books``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keyplane.services import Services, build_services
from kptest.backends import db_scope
from kptest.exchange import check_invariants, clear_books


@pytest.fixture(scope=db_scope("module"))
def svc(make_settings) -> Iterator[Services]:
    s = build_services(make_settings())
    yield s
    s.close()


@pytest.fixture
def books(svc) -> Iterator[None]:
    """Empty books before the test; after it, the ledger invariants hold and the books are emptied."""
    clear_books(svc)
    yield
    check_invariants(svc)
    clear_books(svc)
