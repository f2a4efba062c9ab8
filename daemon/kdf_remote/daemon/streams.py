"""Server-Sent Event streams with a cap on how many run at once and how long each lasts.

A stream pumps its source (log lines, supervisor events, health samples) through a small queue,
so the response can send keep-alive comments while the source is quiet and can stop at once when
the deadline passes or the daemon shuts down. When the client goes away Litestar cancels the
response, which cancels the pump and frees the stream's slot. Sources must never hold the
supervisor's lock while waiting for data; they only read snapshots and follow files or queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, TypeVar

import msgspec
from litestar.response import ServerSentEventMessage

from kdf_remote.api import StreamEnd
from kdf_remote.daemon.errors import TooManyRequestsError

__all__ = ["SseEvent", "StreamLimiter", "merge"]

log = logging.getLogger("kdf_remote.daemon.streams")

HEARTBEAT_SECONDS: Final = 15.0
"""Idle time after which a comment is sent: keeps proxies from cutting quiet streams."""
QUEUE_SIZE: Final = 256
"""Events buffered for a slow client before the source is paused."""


class SseEvent(msgspec.Struct, frozen=True):
    """One event to send: its SSE ``event`` name and a JSON-encodable payload."""

    event: str
    data: object
    id: str | None = None


_encoder = msgspec.json.Encoder()


def _message(item: SseEvent) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(item.data).decode(), event=item.event, id=item.id
    )


class StreamLimiter:
    """Admits at most ``max_streams`` concurrent streams of at most ``max_duration`` seconds."""

    def __init__(self, max_streams: int, max_duration: float) -> None:
        self.max_streams = max_streams
        self.max_duration = max_duration
        self._queues: set[asyncio.Queue[SseEvent | StreamEnd]] = set()
        self._closing = False

    @property
    def active(self) -> int:
        """Streams running now."""
        return len(self._queues)

    def open(self, source: AsyncIterator[SseEvent]) -> AsyncGenerator[ServerSentEventMessage, None]:
        """Admit one stream over ``source``, or refuse it.

        Raises:
            TooManyRequestsError: ``max_streams`` streams are already running, or the daemon is
                shutting down.
        """
        if self._closing:
            raise TooManyRequestsError("the daemon is shutting down", code="shutting_down")
        if len(self._queues) >= self.max_streams:
            raise TooManyRequestsError(
                f"too many open streams ({self.max_streams}); close one or retry later",
                code="too_many_streams",
                headers={"Retry-After": "5"},
            )
        queue: asyncio.Queue[SseEvent | StreamEnd] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        stream = self._run(source, queue)
        # A response that is never sent (the client left first) never runs the generator's
        # finally: free the slot when the generator is collected instead.
        weakref.finalize(stream, self._queues.discard, queue)
        return stream

    def close(self) -> None:
        """End every stream now (daemon shutdown) and refuse new ones."""
        self._closing = True
        for queue in list(self._queues):
            # Drop buffered events: the end marker must get through even to a stalled client.
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(StreamEnd(reason="the daemon is shutting down"))

    async def _pump(
        self, source: AsyncIterator[SseEvent], queue: asyncio.Queue[SseEvent | StreamEnd]
    ) -> None:
        try:
            async for item in source:
                await queue.put(item)
            await queue.put(StreamEnd(reason="the source ended"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stream source failed")
            await queue.put(StreamEnd(reason="the stream's source failed"))

    async def _run(
        self, source: AsyncIterator[SseEvent], queue: asyncio.Queue[SseEvent | StreamEnd]
    ) -> AsyncGenerator[ServerSentEventMessage, None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_duration
        pump = asyncio.create_task(self._pump(source, queue))
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    yield _message(
                        SseEvent("end", StreamEnd(reason="the stream reached its time limit"))
                    )
                    return
                try:
                    async with asyncio.timeout(min(HEARTBEAT_SECONDS, remaining)):
                        item = await queue.get()
                except TimeoutError:
                    if deadline - loop.time() > 0:
                        yield ServerSentEventMessage(comment="keep-alive")
                    continue
                if isinstance(item, StreamEnd):
                    yield _message(SseEvent("end", item))
                    return
                yield _message(item)
        finally:
            self._queues.discard(queue)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


T = TypeVar("T")


class _SourceDone(msgspec.Struct, frozen=True):
    error: BaseException | None = None


async def merge(*sources: AsyncIterator[T]) -> AsyncIterator[T]:
    """Items of every source as they arrive; ends when any source ends (or fails)."""
    queue: asyncio.Queue[T | _SourceDone] = asyncio.Queue(QUEUE_SIZE)

    async def pump(source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                await queue.put(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await queue.put(_SourceDone(exc))
        else:
            await queue.put(_SourceDone())

    tasks = [asyncio.create_task(pump(source)) for source in sources]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, _SourceDone):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
