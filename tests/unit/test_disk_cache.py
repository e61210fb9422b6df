"""chunk/cache.py: the on-disk block cache (capacity, LRU, restart, interrupted writes)."""

from __future__ import annotations

import os
import threading

from riverfs.chunk import cache as cache_module
from riverfs.chunk.cache import DiskCache


def cache_files(cache: DiskCache) -> set[str]:
    return set(os.listdir(cache.dir))


def test_put_then_get_returns_the_bytes(tmp_path):
    c = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    c.put("chunks/0/0/1_0_5", b"hello")
    assert c.get("chunks/0/0/1_0_5") == b"hello"
    assert c.get("chunks/0/0/2_0_5") is None
    assert c.used == 5
    # Keys with slashes are stored flat under <dir>/blocks.
    assert cache_files(c) == {"chunks~0~0~1_0_5"}


def test_put_of_a_cached_key_keeps_one_copy(tmp_path):
    c = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    c.put("k", b"abc")
    c.put("k", b"abc")
    assert c.used == 3
    assert len(cache_files(c)) == 1


def test_eviction_drops_least_recently_used_when_over_capacity(tmp_path):
    c = DiskCache(tmp_path, 300, min_free=0.0)
    c.put("a", b"a" * 100)
    c.put("b", b"b" * 100)
    c.put("c", b"c" * 100)
    assert c.get("a") == b"a" * 100  # a is now the most recently used
    c.put("d", b"d" * 100)
    assert c.get("b") is None
    assert c.get("a") == b"a" * 100
    assert c.get("c") == b"c" * 100
    assert c.get("d") == b"d" * 100
    assert c.used == 300
    assert len(cache_files(c)) == 3


def test_block_larger_than_capacity_is_not_cached(tmp_path):
    c = DiskCache(tmp_path, 100, min_free=0.0)
    c.put("a", b"a" * 50)
    c.put("big", b"x" * 101)
    assert c.get("big") is None
    assert c.get("a") == b"a" * 50
    assert c.used == 50


def test_capacity_zero_caches_nothing(tmp_path):
    c = DiskCache(tmp_path, 0, min_free=0.0)
    c.put("a", b"abc")
    c.put("b", b"")
    assert c.get("a") is None
    assert c.used == 0
    assert cache_files(c) == set()


def test_index_is_rebuilt_from_disk_on_restart(tmp_path):
    c = DiskCache(tmp_path, 1000, min_free=0.0)
    c.put("chunks/0/0/1_0_3", b"one")
    c.put("chunks/0/0/2_0_3", b"two")
    again = DiskCache(tmp_path, 1000, min_free=0.0)
    assert again.used == 6
    assert again.get("chunks/0/0/1_0_3") == b"one"
    assert again.get("chunks/0/0/2_0_3") == b"two"


def test_restart_with_smaller_capacity_evicts_down_to_it(tmp_path):
    c = DiskCache(tmp_path, 1000, min_free=0.0)
    for i in range(5):
        c.put(f"k{i}", bytes(100))
    smaller = DiskCache(tmp_path, 250, min_free=0.0)
    assert smaller.used <= 250
    assert len(cache_files(smaller)) == smaller.used // 100 == 2


def test_interrupted_tmp_files_are_removed_on_start(tmp_path):
    c = DiskCache(tmp_path, 1000, min_free=0.0)
    c.put("k", b"data")
    (c.dir / "chunks~0~0~9_0_4.1234.tmp").write_bytes(b"part")
    again = DiskCache(tmp_path, 1000, min_free=0.0)
    assert cache_files(again) == {"k"}
    assert again.used == 4


def test_discard_removes_file_and_accounting(tmp_path):
    c = DiskCache(tmp_path, 1000, min_free=0.0)
    c.put("k", b"data")
    c.put("j", b"xy")
    c.discard("k")
    assert c.get("k") is None
    assert c.used == 2
    assert cache_files(c) == {"j"}
    c.discard("never-cached")  # no error
    assert c.used == 2


def test_file_deleted_behind_the_caches_back_is_a_miss(tmp_path):
    c = DiskCache(tmp_path, 1000, min_free=0.0)
    c.put("k", b"data")
    os.unlink(c.dir / "k")
    assert c.get("k") is None
    assert c.used == 0


def test_get_range_reads_only_the_bytes_asked_for(tmp_path, monkeypatch):
    c = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    data = os.urandom(100_000)
    c.put("a", data)
    c.put("b", b"b")
    asked = []
    real_pread = os.pread
    monkeypatch.setattr(
        cache_module.os, "pread", lambda fd, n, at: asked.append((n, at)) or real_pread(fd, n, at)
    )
    assert c.get_range("a", 70_000, 70_100) == data[70_000:70_100]
    assert c.get_range("a", 99_990, 200_000) == data[99_990:]  # short at the end
    assert asked == [(100, 70_000), (200_000 - 99_990, 99_990)]
    assert c.get_range("missing", 0, 10) is None
    assert list(c._index) == ["b", "a"]  # a range read counts as a use
    os.unlink(c.dir / "a")
    assert c.get_range("a", 0, 10) is None
    assert c.used == 1


def test_racing_puts_of_one_key_count_its_bytes_once(tmp_path, monkeypatch):
    """Two pool threads caching the same block: `used` must still equal the bytes on disk."""
    c = DiskCache(tmp_path, 1 << 20, min_free=0.0)
    both_checked = threading.Barrier(2, timeout=5)
    first_done = threading.Event()
    order: list[str] = []
    real_open = open

    def gated_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".tmp"):
            me = threading.current_thread().name
            both_checked.wait()  # both threads passed the "already cached?" check
            if me == "second":
                first_done.wait(5)  # the first put completes entirely, then the second runs
            order.append(me)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache_module, "open", gated_open, raising=False)

    def first():
        c.put("k", b"x" * 100)
        first_done.set()

    t1 = threading.Thread(target=first, name="first")
    t2 = threading.Thread(target=lambda: c.put("k", b"x" * 100), name="second")
    t1.start()
    t2.start()
    t1.join(10)
    t2.join(10)
    assert order == ["first", "second"]
    on_disk = sum(os.path.getsize(c.dir / n) for n in os.listdir(c.dir))
    assert on_disk == 100
    assert c.used == on_disk


def test_racing_puts_of_different_blocks_stay_within_capacity(tmp_path, monkeypatch):
    """Pool threads caching blocks at once (riverfs warmup does): the bytes a put is still
    writing count, so a second put finds no room instead of overfilling the cache."""
    c = DiskCache(tmp_path, 1500, min_free=0.0)
    writing = threading.Event()
    release = threading.Event()
    real_open = open

    def gated_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".tmp") and threading.current_thread().name == "first":
            writing.set()
            release.wait(5)  # the first put holds its room, not yet in the index
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache_module, "open", gated_open, raising=False)
    first = threading.Thread(target=lambda: c.put("a", b"a" * 1000), name="first")
    first.start()
    try:
        assert writing.wait(5)
        c.put("b", b"b" * 1000)  # no room: a's 1000 bytes are being written
    finally:
        release.set()
        first.join(10)
    on_disk = sum(os.path.getsize(c.dir / n) for n in os.listdir(c.dir))
    assert on_disk == c.used == 1000
    assert c.has("a") and not c.has("b")
