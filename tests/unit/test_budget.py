"""chunk/budget.py: the shared write-buffer budget (back-pressure)."""

from __future__ import annotations

import asyncio

import pytest
from unit_helpers import async_test

from riverfs.chunk.budget import BufferBudget


@async_test
async def test_acquire_within_limit_does_not_wait():
    b = BufferBudget(100)
    await asyncio.wait_for(b.acquire(60), 1)
    await asyncio.wait_for(b.acquire(40), 1)
    assert b.used == 100


@async_test
async def test_acquire_blocks_when_full_and_resumes_after_release():
    b = BufferBudget(100)
    await b.acquire(60)
    waiter = asyncio.ensure_future(b.acquire(50))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(waiter), 0.05)
    b.release(60)
    await asyncio.wait_for(waiter, 1)
    assert b.used == 50


@async_test
async def test_partial_release_wakes_only_what_fits():
    b = BufferBudget(100)
    await b.acquire(100)
    small = asyncio.ensure_future(b.acquire(30))
    big = asyncio.ensure_future(b.acquire(90))
    await asyncio.sleep(0.01)
    b.release(40)
    await asyncio.wait_for(small, 1)
    await asyncio.sleep(0.02)
    assert not big.done()
    assert b.used == 90
    b.release(90)
    await asyncio.wait_for(big, 1)
    assert b.used == 90


@async_test
async def test_request_larger_than_the_whole_budget_proceeds_when_empty():
    b = BufferBudget(100)
    await asyncio.wait_for(b.acquire(1000), 1)
    assert b.used == 100
    b.release(1000)
    assert b.used == 0


@async_test
async def test_release_never_goes_negative():
    b = BufferBudget(100)
    await b.acquire(10)
    b.release(50)
    assert b.used == 0
