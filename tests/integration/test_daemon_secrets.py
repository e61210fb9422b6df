"""A background mount's daemon gets its secrets over a pipe: none shows in /proc/PID.

/proc/PID/environ keeps a process's initial environment for its whole life and
/proc/PID/cmdline its argv, so neither may carry the passphrase of an encrypted volume or the
password of a metadata database, wherever the user gave them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from pg_server import PASSWORD
from support import Mount, Volume, run_cli

from riverfs.cli.daemon import with_meta_password

SECRET = "daemon secret: correct horse battery staple"
SECRET_VARS = (
    "RIVERFS_PASSPHRASE",
    "RIVERFS_META_PASSWORD",
    "PGPASSWORD",
    "RIVERFS_MOUNT_META_URL",
)


def assert_no_secret_in_proc(m: Mount, secret: str) -> None:
    pid = m.daemon_pid()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert secret.encode() not in environ
    assert secret.encode() not in cmdline
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    assert not names & set(SECRET_VARS), names & set(SECRET_VARS)


def assert_serves(m: Mount) -> None:
    (m.path / "f").write_bytes(b"through the daemon" * 1000)
    assert (m.path / "f").read_bytes() == b"through the daemon" * 1000


@pytest.fixture
def enc(tmp_path: Path, monkeypatch) -> Volume:
    monkeypatch.setenv("RIVERFS_PASSPHRASE", SECRET)
    vol = Volume(
        tmp_path, f"sqlite://{tmp_path}/meta.db", f"file://{tmp_path}/store", tmp_path / "c"
    )
    run_cli("format", vol.meta_url, "--storage", vol.storage_url, "--encrypt")
    try:
        yield vol
    finally:
        vol.cleanup()


def test_passphrase_from_the_environment_is_not_in_the_daemons_environ_or_cmdline(enc):
    m = enc.mount(enc.root / "mnt")
    assert_no_secret_in_proc(m, SECRET)
    assert_serves(m)
    m.umount()
    wrong = {"RIVERFS_PASSPHRASE": "not it"}  # the daemon unlocks with what the parent sent
    proc = run_cli("mount", enc.meta_url, str(m.path), "--background", check=False, env=wrong)
    assert proc.returncode == 1 and "wrong passphrase" in proc.stderr, proc.stderr


def test_passphrase_from_a_key_file_is_not_in_the_daemons_environ_or_cmdline(enc):
    key_file = enc.root / "key"
    key_file.write_text(SECRET + "\n")
    m = enc.mount(enc.root / "mnt", "--key-file", str(key_file))
    assert_no_secret_in_proc(m, SECRET)
    assert_serves(m)


@pytest.mark.parametrize("source", ["PGPASSWORD", "RIVERFS_META_PASSWORD", "url"])
def test_database_password_is_not_in_the_daemons_environ_or_cmdline(
    postgres, tmp_path, monkeypatch, source
):
    name = f"secrets_{uuid.uuid4().hex[:8]}"
    postgres.create_database(name)
    url = postgres.url(name)
    if source == "RIVERFS_META_PASSWORD":
        monkeypatch.delenv("PGPASSWORD")
        monkeypatch.setenv("RIVERFS_META_PASSWORD", PASSWORD)
    elif source == "url":
        url = url.replace("riverfs@", f"riverfs:{PASSWORD}@")
        monkeypatch.setenv("PGPASSWORD", "not-this-one")  # the URL's password wins
    vol = Volume(tmp_path, url, f"file://{tmp_path}/store", tmp_path / "cache")
    run_cli("format", url, "--storage", vol.storage_url)
    try:
        m = vol.mount(tmp_path / "mnt")
        assert_no_secret_in_proc(m, PASSWORD)
        assert_serves(m)
        assert PASSWORD not in (tmp_path / "cache" / "mount.log").read_text()
    finally:
        vol.cleanup()


@pytest.mark.parametrize("password", ["plain", "a&b=c d%e+f?g#h/i:j@k"])
def test_the_daemons_url_carries_the_password_libpq_would_have_taken(monkeypatch, password):
    url = "postgresql://riverfs@db-host:5432/vol"
    monkeypatch.delenv("RIVERFS_META_PASSWORD", raising=False)
    monkeypatch.setenv("PGPASSWORD", password)
    assert psycopg.conninfo.conninfo_to_dict(with_meta_password(url))["password"] == password
    params = psycopg.conninfo.conninfo_to_dict(with_meta_password(url + "?sslmode=disable"))
    assert (params["password"], params["sslmode"]) == (password, "disable")
    monkeypatch.setenv("RIVERFS_META_PASSWORD", "meta")  # as riverfs itself prefers it
    assert psycopg.conninfo.conninfo_to_dict(with_meta_password(url))["password"] == "meta"
    for own in ("postgresql://riverfs:own@db-host/vol", f"{url}?password=own"):
        assert with_meta_password(own) == own
    assert with_meta_password("sqlite:///srv/meta.db") == "sqlite:///srv/meta.db"
