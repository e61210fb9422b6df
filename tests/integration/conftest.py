"""Fixtures of the POSIX modules: one shared mount per module, a fresh directory per test,
and a local directory to compare with. A module that needs something else defines its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from posix_support import fresh_dir, shared_mount


def pytest_generate_tests(metafunc):
    """A module with `ENGINES = ("sqlite", "postgresql")` runs its tests on both engines."""
    if "fs_engine" in metafunc.fixturenames:
        engines = getattr(metafunc.module, "ENGINES", ("sqlite",))
        metafunc.parametrize("fs_engine", engines, scope="module")


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory, request, fs_engine) -> Iterator[Path]:
    """One riverfs mount (file:// store, metadata on `fs_engine`) shared by the module's tests."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    meta_url = None
    if fs_engine == "postgresql":
        server = request.getfixturevalue("postgres")
        meta_url = server.create_database(f"{name}_{fs_engine}")
    with shared_mount(tmp_path_factory, f"{name}_{fs_engine}", meta_url) as (_, root):
        yield root


@pytest.fixture
def d(fs_root: Path, request) -> Path:
    """A fresh directory of the shared mount for one test."""
    return fresh_dir(fs_root, request)


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A directory on the local disk, to compare errno values with."""
    p = tmp_path / "local"
    p.mkdir()
    return p
