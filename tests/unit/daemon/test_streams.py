"""Stream limits: concurrent cap, duration cap, shutdown, slots freed however a stream ends."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator

import pytest

from kdf_remote.daemon.errors import TooManyRequestsError
from kdf_remote.daemon.streams import SseEvent, StreamLimiter, merge

pytestmark = pytest.mark.unit


async def _endless(tag: str) -> AsyncIterator[SseEvent]:
    n = 0
    while True:
        n += 1
        yield SseEvent("log", {"tag": tag, "n": n})
        await asyncio.sleep(0.001)


async def _quiet() -> AsyncIterator[SseEvent]:
    await asyncio.Event().wait()
    yield SseEvent("never", {})


async def test_cap_on_concurrent_streams() -> None:
    """The stream over max_streams is refused with 429 until one ends."""
    limiter = StreamLimiter(max_streams=2, max_duration=60)
    first = limiter.open(_endless("a"))
    second = limiter.open(_endless("b"))
    with pytest.raises(TooManyRequestsError) as refused:
        limiter.open(_endless("c"))
    assert refused.value.code == "too_many_streams"
    assert refused.value.headers["Retry-After"]
    await anext(first)
    await first.aclose()
    assert limiter.active == 1
    third = limiter.open(_endless("c"))
    await anext(third)
    await third.aclose()
    del second
    gc.collect()
    assert limiter.active == 0


async def test_streams_end_at_their_duration_cap() -> None:
    """A stream past max_stream_duration sends `end` with the reason and frees its slot."""
    limiter = StreamLimiter(max_streams=1, max_duration=0.05)
    messages = [m async for m in limiter.open(_quiet())]
    assert [m.event for m in messages] == ["end"]
    assert json.loads(str(messages[0].data)) == {"reason": "the stream reached its time limit"}
    assert limiter.active == 0


async def test_shutdown_ends_streams_and_refuses_new_ones() -> None:
    """close() ends running streams at once (even stalled ones) and refuses new streams."""
    limiter = StreamLimiter(max_streams=4, max_duration=3600)
    stream = limiter.open(_quiet())
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    limiter.close()
    message = await asyncio.wait_for(pending, 30)
    assert message.event == "end"
    assert json.loads(str(message.data)) == {"reason": "the daemon is shutting down"}
    with pytest.raises(TooManyRequestsError):
        limiter.open(_quiet())
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert limiter.active == 0


async def test_a_failing_source_ends_the_stream_cleanly() -> None:
    """An error in the source ends the stream with an `end` event, not a broken response."""

    async def broken() -> AsyncIterator[SseEvent]:
        yield SseEvent("log", {"n": 1})
        raise RuntimeError("boom")

    limiter = StreamLimiter(max_streams=1, max_duration=60)
    events = [m.event async for m in limiter.open(broken())]
    assert events == ["log", "end"]
    assert limiter.active == 0


async def test_never_started_streams_free_their_slot() -> None:
    """A stream whose response was never sent (client left first) gives its slot back."""
    limiter = StreamLimiter(max_streams=1, max_duration=60)
    limiter.open(_quiet())
    gc.collect()
    assert limiter.active == 0


async def test_merge_interleaves_and_stops_with_the_first_source() -> None:
    """merge yields from every source and ends when one of them ends."""

    async def three() -> AsyncIterator[str]:
        for item in ("a", "b", "c"):
            yield item
            await asyncio.sleep(0.001)

    async def forever() -> AsyncIterator[str]:
        while True:
            yield "x"
            await asyncio.sleep(0.001)

    items = [item async for item in merge(three(), forever())]
    assert [i for i in items if i != "x"] == ["a", "b", "c"]


async def test_merge_propagates_source_errors() -> None:
    """An error in any source reaches the consumer."""

    async def failing() -> AsyncIterator[str]:
        yield "ok"
        raise ValueError("bad source")

    with pytest.raises(ValueError, match="bad source"):
        async for _ in merge(failing(), _quiet()):
            pass
