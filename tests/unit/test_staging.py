"""chunk/staging.py: staged blocks are readable at once, uploaded with retries, resumed."""

from __future__ import annotations

import asyncio

from unit_helpers import async_test, memory_url

from riverfs.chunk import staging as staging_module
from riverfs.chunk.staging import Staging
from riverfs.objects import open_store


class FlakyStore:
    """A memory store whose first `failures` puts fail."""

    def __init__(self, failures: int) -> None:
        self.store = open_store(memory_url())
        self.failures = failures

    async def put(self, key: str, data: bytes) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionResetError("injected")
        await self.store.put(key, data)


@async_test
async def test_staged_blocks_are_read_locally_and_uploaded_despite_failures(tmp_path, monkeypatch):
    monkeypatch.setattr(staging_module, "MAX_BACKOFF", 0.05)
    flaky = FlakyStore(failures=3)
    s = Staging(tmp_path / "staging", flaky, concurrency=2)
    s.start()
    await s.put("chunks/0/0/1_0_5", b"hello")
    await s.sync()
    assert s.get("chunks/0/0/1_0_5") == b"hello" and s.waiting_bytes == 5
    await asyncio.wait_for(s.drain(), 20)
    assert await flaky.store.get("chunks/0/0/1_0_5") == b"hello"
    assert s.waiting == 0 and s.failures == 3 and not any((tmp_path / "staging").iterdir())
    await s.close()


@async_test
async def test_a_new_staging_resumes_what_a_crashed_one_left_and_discard_cancels(tmp_path):
    dead = FlakyStore(failures=10**9)  # never uploads: as if the mount crashed first
    first = Staging(tmp_path / "staging", dead)
    await first.put("chunks/0/0/2_0_3", b"abc")
    await first.put("chunks/0/0/3_0_3", b"def")
    await first.sync()
    (tmp_path / "staging" / "x.tmp").write_bytes(b"half")  # a write that never returned
    store = FlakyStore(failures=0)
    second = Staging(tmp_path / "staging", store)
    assert second.resume() == 2
    second.discard("chunks/0/0/3_0_3")  # its file was deleted meanwhile
    second.start()
    await asyncio.wait_for(second.drain(), 20)
    assert await store.store.get("chunks/0/0/2_0_3") == b"abc"
    assert [info.key async for info in store.store.list("")] == ["chunks/0/0/2_0_3"]
    assert not (tmp_path / "staging" / "x.tmp").exists()
    await second.close()
