"""The CLI with PostgreSQL metadata: one-line errors, and secrets never shown."""

from __future__ import annotations

import uuid
from pathlib import Path

from pg_server import PASSWORD, free_port
from support import Volume, run_cli


def fail(*args: str, env: dict | None = None) -> str:
    proc = run_cli(*args, check=False, env=env)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("riverfs: error: "), proc.stderr
    return lines[0]


def test_unreachable_missing_or_refused_databases_are_one_line_errors(postgres, tmp_path):
    store = f"file://{tmp_path}/store"
    nobody = f"postgresql://riverfs@127.0.0.1:{free_port()}/x"
    line = fail("format", nobody, "--storage", store)
    assert "cannot connect" in line and "is PostgreSQL running" in line
    line = fail("format", postgres.url("no_such_db"), "--storage", store)
    assert "does not exist" in line and "createdb" in line
    url = postgres.url(postgres_db(postgres))
    line = fail("format", url, "--storage", store, env={"PGPASSWORD": "wrong"})
    assert "password authentication failed" in line and "PGPASSWORD" in line
    assert "no riverfs volume" in fail("status", url)
    assert "--storage is required" in fail("format", url)
    assert "names no database" in fail("format", url.rsplit("/", 1)[0] + "/", "--storage", store)


def test_a_password_in_the_url_never_shows_in_output_or_in_ps(postgres, tmp_path):
    db = postgres_db(postgres)
    url = postgres.url(db).replace("riverfs@", f"riverfs:{PASSWORD}@")
    env = {"PGPASSWORD": "not-this-one"}  # the URL's password is the one that works
    out = run_cli("format", url, "--storage", f"file://{tmp_path}/store", env=env)
    assert PASSWORD not in out.stdout + out.stderr and "riverfs:***@" in out.stdout
    vol = Volume(tmp_path, url, f"file://{tmp_path}/store", tmp_path / "cache")
    try:
        m = vol.mount(tmp_path / "mnt")
        (m.path / "f").write_bytes(b"ok")
        cmdline = Path(f"/proc/{m.daemon_pid()}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline
        status = run_cli("status", url, env=env).stdout
        assert PASSWORD not in status and "sessions:    1" in status
        log = (tmp_path / "cache" / "mount.log").read_text()
        assert PASSWORD not in log
    finally:
        vol.cleanup()


def postgres_db(postgres) -> str:
    name = f"cli_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    return name
