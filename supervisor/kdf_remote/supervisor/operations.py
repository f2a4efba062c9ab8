"""The per-instance operation slot: at most one start, stop, restart, auto or adopt at a time.

Checking and claiming the slot (:func:`active_op`, then :func:`begin`) happens with no ``await``
in between, so it is atomic on the event loop. Callers share an operation's outcome with
:func:`join`, which cannot cancel it; only a stop preempts (cancels) one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

from kdf_remote.supervisor.errors import InvalidState
from kdf_remote.supervisor.instance import Instance, Operation
from kdf_remote.supervisor.models import InstanceStatus

__all__ = ["PREEMPTIBLE_KINDS", "START_KINDS", "active_op", "begin", "join"]

START_KINDS = frozenset({"start", "auto", "adopt"})
"""Operations a start request joins rather than conflicts with."""
PREEMPTIBLE_KINDS = frozenset({"start", "auto", "adopt", "restart"})
"""Operations a stop cancels before it runs."""


def begin(inst: Instance, kind: str, work: Coroutine[Any, Any, InstanceStatus]) -> Operation:
    """Run ``work`` as the instance's operation (the slot must be free)."""
    op = Operation(kind, asyncio.get_running_loop().create_task(_run_op(inst, work)))
    inst.op = op
    op.task.add_done_callback(functools.partial(_op_done, inst, op, work))
    return op


def _op_done(
    inst: Instance,
    op: Operation,
    work: Coroutine[Any, Any, InstanceStatus],
    task: asyncio.Task[InstanceStatus],
) -> None:
    # Cleared here, not in the coroutine: a task cancelled before its first step never runs
    # its own finally clause.
    if inst.op is op:
        inst.op = None
    if task.cancelled():
        work.close()  # never started: nothing to undo, and no "never awaited" warning
    else:
        task.exception()  # outcomes reach callers via join; mark it seen regardless


def active_op(inst: Instance) -> Operation | None:
    """The operation in flight, if any (a finished one frees the slot)."""
    op = inst.op
    if op is not None and op.task.done():
        inst.op = None
        return None
    return op


async def _run_op(inst: Instance, work: Coroutine[Any, Any, InstanceStatus]) -> InstanceStatus:
    try:
        return await work
    except asyncio.CancelledError:
        op = inst.op
        if op is not None and op.preempted:
            raise InvalidState(f"{inst.spec.name}: {op.kind} interrupted by a stop") from None
        raise


async def join(inst: Instance, op: Operation) -> InstanceStatus:
    """Wait for ``op`` to finish and share its outcome, without being able to cancel it."""
    try:
        return await asyncio.shield(op.task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if op.task.cancelled() and (current is None or not current.cancelling()):
            raise InvalidState(f"{inst.spec.name}: {op.kind} interrupted by a stop") from None
        raise
