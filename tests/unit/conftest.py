"""The metadata unit tests run against both engines: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools

import pytest
import unit_helpers

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def meta_engine(request):
    """Makes `unit_helpers.new_meta` use this engine for the test."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    server = request.getfixturevalue("postgres")
    name = f"unit{next(_databases)}"
    unit_helpers.POSTGRES_URL = server.create_database(name)
    try:
        yield "postgresql"
    finally:
        unit_helpers.POSTGRES_URL = None
        server.drop_database(name)
