"""`riverfs dump` then `riverfs load` into a new database: the same tree, contents, attributes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from support import Volume, run_cli


def snapshot(root: Path) -> dict:
    """Everything a user can see of a tree (inode numbers included: they are kept)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = os.lstat(p)
            xattrs = sorted(
                (x, os.getxattr(p, x, follow_symlinks=False))
                for x in os.listxattr(p, follow_symlinks=False)
            )
            item = (st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
                    st.st_mtime_ns, xattrs)  # fmt: skip
            if stat.S_ISLNK(st.st_mode):
                item += (os.readlink(p),)
            elif stat.S_ISREG(st.st_mode):
                item += (p.read_bytes(),)
            out[str(p.relative_to(root))] = item
    return out


def populate(root: Path) -> None:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "big").write_bytes(os.urandom(5 << 20))
    (root / "d" / "e" / "small").write_bytes(b"small")
    os.link(root / "d" / "e" / "small", root / "hard")
    os.symlink("d/e/small", root / "link")
    os.chmod(root / "d" / "e", 0o750)
    os.setxattr(root / "d" / "big", "user.tag", b"value")
    os.utime(root / "hard", ns=(10**18, 10**18))
    for i in range(30):
        (root / "d" / f"f{i}").write_bytes(b"%d" % i)
    os.unlink(root / "d" / "f7")  # a deleted file: its data queued, not in the tree


@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_dump_then_load_gives_an_identical_volume(volume, tmp_path, target, request):
    m = volume.mount()
    populate(m.path)
    before = snapshot(m.path)
    m.umount()
    dump_file = tmp_path / "meta.jsonl"
    assert "dumped" in run_cli("dump", volume.meta_url, str(dump_file)).stdout
    if target == "sqlite":
        url = f"sqlite://{tmp_path}/restored/meta.db"
    else:
        url = request.getfixturevalue("postgres").create_database(f"load_{os.getpid()}")
    assert "loaded" in run_cli("load", url, str(dump_file)).stdout
    restored = Volume(tmp_path / "restored", url, volume.storage_url, tmp_path / "rcache")
    restored.root.mkdir(exist_ok=True)
    try:
        r = restored.mount()
        assert snapshot(r.path) == before
        (r.path / "d" / "new").write_bytes(b"new")  # ids continue past the loaded ones
        os.mkdir(r.path / "d" / "newdir")
        assert sorted(os.listdir(r.path / "d"))[-2:] == ["new", "newdir"]
        r.umount()
        assert run_cli("fsck", url).stdout.strip().endswith("clean")
    finally:
        restored.cleanup()
    again = run_cli("load", url, str(dump_file), check=False)
    assert again.returncode == 1 and "already holds a volume" in again.stderr
    # The store went over to the restored volume: the old database no longer opens it.
    old = run_cli("status", volume.meta_url, check=False)
    assert old.returncode == 1 and "belongs to volume" in old.stderr


def test_an_encrypted_volume_is_dumped_without_its_key_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("RIVERFS_PASSPHRASE", "pass")
    meta = f"sqlite://{tmp_path}/meta.db"
    run_cli("format", meta, "--storage", f"file://{tmp_path}/store", "--encrypt")
    run_cli("dump", meta, str(tmp_path / "plain.jsonl"))
    assert "wrapped_key" not in (tmp_path / "plain.jsonl").read_text()
    refused = run_cli("load", f"sqlite://{tmp_path}/a/meta.db", str(tmp_path / "plain.jsonl"),
                      check=False)  # fmt: skip
    assert refused.returncode == 1 and "--with-keys" in refused.stderr
    run_cli("dump", meta, str(tmp_path / "keys.jsonl"), "--with-keys")
    assert "wrapped_key" in (tmp_path / "keys.jsonl").read_text()
    run_cli("load", f"sqlite://{tmp_path}/b/meta.db", str(tmp_path / "keys.jsonl"))
    assert "AES-256-GCM" in run_cli("status", f"sqlite://{tmp_path}/b/meta.db").stdout
