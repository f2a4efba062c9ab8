"""Event fan-out: :class:`EventStream` subscribers and the hub that offers them every event.

Bounded per subscriber, so a slow consumer can never stall the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from kdf_remote.supervisor.models import (
    EventKind,
    ExitInfo,
    InstanceState,
    SupervisorEvent,
    now_utc,
)

__all__ = ["EventHub", "EventStream"]

_EVENT_QUEUE_SIZE = 1024


class EventStream:
    """Async iterator of :class:`SupervisorEvent`, registered from creation on.

    Bounded: if the consumer lags by more than 1024 events the oldest are dropped (counted in
    :attr:`dropped`), so a slow consumer can never stall the supervisor. Ends when the supervisor
    closes or :meth:`aclose` is called.
    """

    def __init__(self, owner: EventHub, name: str | None) -> None:
        self._owner = owner
        self.name = name
        self.dropped = 0
        self._queue: asyncio.Queue[SupervisorEvent | None] = asyncio.Queue(_EVENT_QUEUE_SIZE)
        self._closed = False

    def _offer(self, event: SupervisorEvent | None) -> None:
        if self._closed:
            return
        if event is not None and self.name is not None and event.name != self.name:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> SupervisorEvent:
        if self._closed:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._closed = True
        self._owner._unsubscribe(self)


class EventHub:
    """The supervisor's subscribers; :meth:`emit` offers an event to each of them."""

    def __init__(self) -> None:
        self._streams: list[EventStream] = []

    def subscribe(self, name: str | None) -> EventStream:
        """A new stream of the events of instance ``name`` (or all), from this call on."""
        stream = EventStream(self, name)
        self._streams.append(stream)
        return stream

    def _unsubscribe(self, stream: EventStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    def emit(
        self,
        name: str,
        state: InstanceState,
        kind: EventKind,
        *,
        pid: int | None = None,
        exit: ExitInfo | None = None,
        delay_s: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Offer one event of instance ``name`` (now in ``state``) to every subscriber."""
        if not self._streams:
            return
        event = SupervisorEvent(
            kind=kind,
            name=name,
            state=state,
            at=now_utc(),
            monotonic=time.monotonic(),
            pid=pid,
            exit=exit,
            delay_s=delay_s,
            detail=detail,
        )
        for stream in list(self._streams):
            stream._offer(event)

    def close(self) -> None:
        """End every stream (each ends once its consumer has read what is queued)."""
        for stream in list(self._streams):
            stream._offer(None)
