"""The fake provider of a module that starts one for all its tests (a module-scoped ``server``
fixture: starting one costs 0.2 s), as new for each test."""

from __future__ import annotations

import pytest

from tests.fakes.server import FakeProvider


@pytest.fixture
def fake(server: FakeProvider) -> FakeProvider:
    """The module's ``server``, reset: no faults, nothing accepted, no requests counted."""
    server.reset()
    return server
