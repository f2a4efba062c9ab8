"""KDF release updates: ``POST /v1/kdf/update`` and ``GET /v1/kdf/update``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = ["UPDATE_SUCCESS", "UpdateRequest", "UpdateResult", "UpdateStep"]

#: Outcomes of an update that leave the new release (or an already current one) running.
UPDATE_SUCCESS = ("updated", "unchanged")


class UpdateRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """``POST /v1/kdf/update``: the release to install (its version label, zip URL, sha256)."""

    version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
    """sha256 of the whole release zip, verified before anything changes."""
    url: str | None = None
    """The zip's URL, on an origin of ``kdf.release_origins`` (redirects stay on it)."""


class UpdateStep(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's part of an update."""

    name: str
    was: str
    """State before the update (what a rollback brings it back to)."""
    state: Literal[
        "pending",
        "restarting",
        "done",
        "skipped",
        "failed",
        "rolling_back",
        "rolled_back",
        "rollback_failed",
    ]
    backup_id: str | None = None
    kdf_version: str | None = None
    detail: str | None = None


class UpdateResult(msgspec.Struct, frozen=True, kw_only=True):
    """An update: where it is while ``running``, and once finished its outcome and why."""

    id: str
    version: str
    previous_version: str | None = None
    phase: Literal[
        "downloading",
        "backing_up",
        "switching",
        "restarting",
        "rolling_back",
        "done",
        "rolled_back",
        "failed",
        "interrupted",
    ]
    running: bool
    outcome: Literal["updated", "unchanged", "rolled_back", "failed"] | None = None
    """None while it runs (and for an update interrupted by a daemon restart)."""
    reason: str | None = None
    """Why it ended so, e.g. the rollback reason."""
    steps: list[UpdateStep]
    started_at: datetime
    finished_at: datetime | None = None

    @property
    def rolled_back(self) -> bool:
        """An instance failed on the new release and everything went back to the old one."""
        return self.outcome == "rolled_back"

    @property
    def succeeded(self) -> bool:
        """Finished with the new (or already current) release running."""
        return not self.running and self.outcome in UPDATE_SUCCESS
