"""`riverfs obj ...` and a riverfs volume on S3, against a moto server process."""

from __future__ import annotations

import os
import uuid

import pytest
from objects_support import S3_ENV
from support import run_cli

pytest_plugins = ["objects_fixtures"]  # the moto server and fault proxy fixtures


def obj(*args: str, env: dict, check: bool = True):
    return run_cli("obj", *args, env=env, check=check)


@pytest.fixture
def s3env(moto_server, tmp_path):
    return {
        **S3_ENV,
        "RIVERFS_STORE": moto_server.url(),
        "RIVERFS_CREDENTIALS_FILE": str(tmp_path / "none.toml"),
    }


def test_obj_commands_round_trip(s3env, tmp_path):
    b = f"cli-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(5 << 20))
    assert f"created bucket {b}" in obj("mb", b, env=s3env).stdout
    out = obj("put", str(src), f"s3://{b}/dir/", env=s3env).stdout
    assert f"to {b}/dir/data.bin (5.0 MiB)" in out
    obj("put", str(src), f"{b}/z.bin", "--compress", env=s3env)
    listing = obj("ls", b, env=s3env).stdout
    assert "DIR" in listing and "dir/" in listing and "z.bin" in listing
    assert "5.0 MiB" in obj("ls", "-r", f"{b}/dir/", env=s3env).stdout
    assert b in obj("ls", env=s3env).stdout
    obj("cp", f"{b}/dir/data.bin", f"{b}/copy.bin", env=s3env)
    dest = tmp_path / "back.bin"
    obj("get", f"{b}/copy.bin", str(dest), env=s3env)
    assert dest.read_bytes() == src.read_bytes()
    obj("get", f"{b}/z.bin", str(tmp_path / "z"), env=s3env)
    assert (tmp_path / "z").read_bytes() == src.read_bytes()
    stat = obj("stat", f"{b}/z.bin", env=s3env).stdout
    assert "5.0 MiB" in stat and "zstd" in stat
    obj("rm", f"{b}/copy.bin", env=s3env)
    failed = obj("rb", b, env=s3env, check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"riverfs: error: ERR_BUCKET_DELETE: bucket '{b}' is not empty"
    ]
    obj("rb", "--force", b, env=s3env)
    assert b not in obj("ls", env=s3env).stdout


def test_obj_names_with_a_scheme_need_no_store(moto_server, s3env):
    env = {k: v for k, v in s3env.items() if k != "RIVERFS_STORE"}
    b = f"cli-{uuid.uuid4().hex[:8]}"
    obj("--endpoint", moto_server.endpoint, "mb", f"s3://{b}", env=env)
    assert b in obj("--endpoint", moto_server.endpoint, "ls", "s3://", env=env).stdout
    r = obj("ls", env=env, check=False)
    assert r.returncode == 1 and "which store?" in r.stderr


def test_obj_errors_are_one_line(s3env):
    for args, text in [
        (("get", "no-such-bucket/k", "/dev/null"), "ERR_OBJECT_HEAD: bucket 'no-such-bucket'"),
        (("mb", "Bad_Name"), "ERR_BUCKET_CREATE: invalid bucket name"),
        (("--store", "ftp://x", "ls"), "unknown storage URL"),
    ]:
        r = obj(*args, env=s3env, check=False)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], r.stderr


def test_obj_works_on_a_file_store(tmp_path):
    env = {"RIVERFS_STORE": f"file://{tmp_path}/root"}
    obj("mb", "local", env=env)
    (tmp_path / "f").write_text("hello")
    obj("put", str(tmp_path / "f"), "local/a/f", env=env)
    assert "a/f" in obj("ls", "-r", "local", env=env).stdout
    assert (tmp_path / "root" / "local" / "a" / "f").read_text() == "hello"


def test_a_volume_on_s3_formats_mounts_and_keeps_data(moto_server, tmp_path):
    bucket = moto_server.new_bucket()
    meta = f"sqlite://{tmp_path}/meta.db"
    storage = moto_server.url(bucket, "vol1")
    env = {**S3_ENV, "RIVERFS_CREDENTIALS_FILE": str(tmp_path / "none.toml")}
    run_cli("format", meta, "--storage", storage, env=env)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run_cli("mount", meta, str(mnt), "--background", env=env)
    try:
        data = os.urandom(9 << 20)
        (mnt / "file").write_bytes(data)
        assert (mnt / "file").read_bytes() == data
    finally:
        run_cli("umount", str(mnt), env=env)
    run_cli("mount", meta, str(mnt), "--background", env=env)
    try:
        assert (mnt / "file").read_bytes() == data
    finally:
        run_cli("umount", str(mnt), env=env)
    keys = run_cli(
        "obj", "--store", moto_server.url(), "ls", "-r", f"{bucket}/vol1/", env=env
    ).stdout
    assert "riverfs.json" in keys and "chunks/" in keys


def test_format_on_a_missing_bucket_is_one_clear_line(moto_server, tmp_path):
    env = {**S3_ENV, "RIVERFS_CREDENTIALS_FILE": str(tmp_path / "none.toml")}
    r = run_cli(
        "format",
        f"sqlite://{tmp_path}/m.db",
        "--storage",
        moto_server.url("missing-bucket", "v"),
        env=env,
        check=False,
    )
    assert r.returncode == 1
    assert "missing-bucket" in r.stderr and len(r.stderr.strip().splitlines()) == 1
