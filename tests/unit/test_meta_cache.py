"""meta/cache.py: what a coherent cache may answer, and what invalidation takes away."""

from __future__ import annotations

import time

from riverfs.meta.cache import MetaCache
from riverfs.meta.changes import Change
from riverfs.meta.types import Attr


def attr(inode: int, mode: int = 0o100644) -> Attr:
    return Attr(inode, mode, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1)


def test_a_result_read_across_an_invalidation_is_not_kept():
    cache = MetaCache()
    generation = cache.generation
    cache.forget([Change("a", 5)])  # a change arrived while the query ran
    cache.put(attr(5), generation, (1, b"f"))
    assert cache.attr(5) is None and cache.lookup(1, b"f") is None
    cache.put(attr(5), cache.generation, (1, b"f"))
    assert cache.lookup(1, b"f") == attr(5)


def test_entry_and_attribute_events_drop_exactly_what_they_name():
    cache = MetaCache()
    cache.put(attr(5), 0, (1, b"f"))
    cache.put(attr(6), 0, (1, b"g"))
    cache.forget([Change("e", 1, b"f")])
    assert cache.lookup(1, b"f") is None and cache.attr(5) == attr(5)
    cache.forget([Change("d", 6)])
    assert cache.lookup(1, b"g") is None and cache.attr(6) is None


def test_a_complete_directory_answers_only_for_names_no_event_mentioned():
    cache = MetaCache(limit=3)
    cache.complete(9)
    assert cache.absent(9, b"new") and not cache.absent(1, b"new")
    cache.forget([Change("e", 9, b"new")])  # created here or elsewhere: may exist now
    assert not cache.absent(9, b"new") and cache.absent(9, b"other")
    cache.complete(10)
    cache.forget([Change("e", 10, n) for n in (b"a", b"b", b"c")])  # over the limit: oldest goes
    assert not cache.absent(9, b"other")
    cache.clear()
    assert not cache.absent(10, b"zzz")


def test_items_expire_after_the_ttl_and_the_size_is_bounded():
    cache = MetaCache(limit=2, ttl=0.01)
    for i in range(3):
        cache.put(attr(i), 0, (1, b"%d" % i))
    assert cache.attr(0) is None and cache.attr(2) == attr(2)
    time.sleep(0.02)
    assert cache.attr(2) is None and cache.lookup(1, b"2") is None
