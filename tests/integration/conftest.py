"""Fixtures of the POSIX modules: one shared mount per module, a fresh directory per test,
and a local directory to compare with. A module that needs something else defines its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from posix_support import fresh_dir, shared_mount


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory, request) -> Iterator[Path]:
    """One riverfs mount (SQLite + file:// store) shared by the tests of this module."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with shared_mount(tmp_path_factory, name) as (_, root):
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
