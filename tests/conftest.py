"""Fixtures: a formatted embedded volume (SQLite + local directory store) and real mounts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support import Volume, run_cli


@pytest.fixture
def volume(tmp_path: Path):
    """A freshly formatted volume: SQLite metadata and a file:// store under tmp_path."""
    root = tmp_path / "vol"
    root.mkdir()
    vol = Volume(
        root=root,
        meta_url=f"sqlite://{root}/meta.db",
        storage_url=f"file://{root}/store",
        cache_dir=root / "cache",
    )
    run_cli("format", vol.meta_url, "--storage", vol.storage_url)
    try:
        yield vol
    finally:
        vol.cleanup()


@pytest.fixture
def mnt(volume: Volume) -> Path:
    """The mountpoint of `volume`, mounted in the background; unmounted at teardown."""
    return volume.mount().path


_exit_status = 0


def pytest_sessionfinish(session, exitstatus):
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config):
    """Exit without interpreter finalization.

    obstore's tokio worker threads can race Python's finalization and abort the process after
    every test passed (pyo3-async-runtimes issue 40); the CLI leaves the same way.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the whole test session (started on first use)."""
    import shutil
    import tempfile

    from pg_server import start_server

    directory = Path(tempfile.mkdtemp(prefix="riverfs-pg-"))
    server = start_server(directory)
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
