"""KDF updates (``/v1/kdf/update``): verified install, rolling restart, rollback, audit.

With ``kdf.bin_dir`` set the daemon keeps KDF releases in a
:class:`~kdf_remote.kdf.release.ReleaseStore` there and every instance runs
``<bin_dir>/current/kdf``; at the first start ``kdf.binary_path`` is adopted as the first
release (its version from ``kdf --version``), so the first update has something to roll back to.

``POST`` validates the request (version, sha256, a URL on an origin of ``kdf.release_origins``),
starts :meth:`Updater.update` in the background and answers 202 with the update's id; ``GET``
shows its progress, then its outcome and reason. One update at a time (409). The updater takes
a snapshot of every instance's data before the switch and rolls everything back when an
instance does not come back on the new release. The outcome is written to the audit log with
the caller who asked for it. A journal lets a daemon that died mid-update put the previous
binary back at its next start (and restart the instances that had moved to the new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx

from kdf_remote import api
from kdf_remote.daemon.errors import BadRequestError, ConflictError, NotFoundError
from kdf_remote.kdf.release import (
    DownloadPolicy,
    Origin,
    ReleaseConfigError,
    ReleaseError,
    ReleaseSpec,
    ReleaseStore,
    smoke_test,
)
from kdf_remote.supervisor.models import InstanceState
from kdf_remote.supervisor.updater import (
    UpdateInProgressError,
    UpdatePolicy,
    UpdateProgress,
    Updater,
    UpdateResult,
    restarted_on_new_release,
)

if TYPE_CHECKING:
    from kdf_remote.daemon.backups import BackupService
    from kdf_remote.daemon.security.audit import AuditLog
    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.daemon.settings import Settings
    from kdf_remote.supervisor.supervisor import Supervisor

__all__ = ["ADOPTED_VERSION", "JOURNAL_FILE", "UpdateService", "update_out"]

log = logging.getLogger("kdf_remote.daemon")

JOURNAL_FILE = "kdf-update.json"
ADOPTED_VERSION = "adopted"
"""Version label of an adopted binary whose ``--version`` names no version."""
SMOKE_TIMEOUT_S = 15.0
STOP_ESCALATION_S = 20.0
"""SIGINT and SIGKILL waits of a stop, on top of ``kdf.stop_timeout``."""


def _when(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def update_out(
    progress: UpdateProgress, result: UpdateResult | None, *, running: bool
) -> api.UpdateResult:
    """The API's view of an update (``result`` once it finished)."""
    return api.UpdateResult(
        id=progress.id,
        version=progress.version,
        previous_version=progress.previous_version,
        phase=progress.phase.value,
        running=running,
        outcome=result.outcome.value if result is not None else None,
        reason=result.reason if result is not None else progress.error,
        steps=[
            api.UpdateStep(
                name=step.name,
                was=step.was.value,
                state=step.state.value,
                backup_id=step.backup_id,
                kdf_version=step.kdf_version,
                detail=step.detail,
            )
            for step in progress.steps
        ],
        started_at=datetime.fromtimestamp(progress.started_at, UTC),
        finished_at=_when(progress.finished_at),
    )


class UpdateService:
    """Runs KDF updates for the REST API."""

    def __init__(
        self,
        settings: Settings,
        instances: InstanceService,
        backups: BackupService,
        *,
        audit: AuditLog | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.instances = instances
        self.backups = backups
        self.audit = audit
        self._client = http_client
        kdf = settings.kdf
        self.store = ReleaseStore(kdf.bin_dir) if kdf.bin_dir is not None else None
        self.journal = settings.daemon.state_dir / JOURNAL_FILE
        self._updater: Updater | None = None
        self._task: asyncio.Task[UpdateResult] | None = None
        self._result: UpdateResult | None = None
        self._actor: str | None = None
        if self.store is not None:
            instances.on_open(before=self._adopt_initial_release, after=self._attach)

    # -- lifecycle ------------------------------------------------------------------------

    def _adopt_initial_release(self) -> None:
        """Before instances are registered: make ``current`` exist and point specs at it."""
        store = self.store
        assert store is not None
        binary = self.settings.kdf.binary_path
        if store.current_version() is None and binary.is_file():
            try:
                version = smoke_test(binary, SMOKE_TIMEOUT_S) or ADOPTED_VERSION
                store.adopt(binary, version)
                store.switch(version)
            except (ReleaseError, OSError) as exc:
                log.warning("kdf.binary_path %s not adopted as a release: %s", binary, exc)
        self.instances.set_binary(store.current_binary)

    async def _attach(self, supervisor: Supervisor) -> None:
        """After instances are registered (none started): the updater, and crash recovery."""
        assert self.store is not None
        kdf = self.settings.kdf
        self._updater = Updater(
            supervisor,
            self.store,
            self._download_policy(),
            backups=self.backups.manager,
            policy=UpdatePolicy(
                instance_timeout=kdf.start_timeout + kdf.stop_timeout + STOP_ESCALATION_S,
                primary_order="first" if kdf.update_order == "first" else "last",
            ),
            journal_path=self.journal,
            http_client=self._client,
        )
        recovered = self._updater.recover_interrupted()
        if recovered is None:
            return
        self._record_audit(recovered.version, "failed", recovered.error or "interrupted")
        for name in restarted_on_new_release(recovered):
            with contextlib.suppress(Exception):
                if supervisor.status(name).state is InstanceState.RUNNING:
                    await supervisor.restart(name)

    def _download_policy(self) -> DownloadPolicy:
        origins = self.settings.kdf.release_origins
        # An empty allow-list refuses every download; DownloadPolicy needs one entry, so a
        # placeholder that no URL can match stands in (requests are refused before it matters).
        return DownloadPolicy(allowed_origins=origins or ("https://release-origins.invalid",))

    async def close(self) -> None:
        """Stop a running update (the journal lets the next start roll it back)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._updater = None

    @property
    def running(self) -> bool:
        """An update is in progress."""
        return self._updater is not None and self._updater.running

    # -- the API --------------------------------------------------------------------------

    def _checked_spec(self, request: api.UpdateRequest) -> ReleaseSpec:
        if self.store is None or self._updater is None:
            raise ConflictError(
                "KDF updates need a release store: set kdf.bin_dir in the daemon config",
                code="updates_disabled",
            )
        origins = self.settings.kdf.release_origins
        if not origins:
            raise ConflictError(
                "no release origin is allowed: set kdf.release_origins in the daemon config",
                code="updates_disabled",
            )
        if request.url is None:
            raise BadRequestError(
                "url: missing, expected the release zip's URL (KDF asset names carry a commit "
                f"hash, so the daemon cannot derive it); allowed origins: {', '.join(origins)}"
            )
        try:
            spec = ReleaseSpec(version=request.version, url=request.url, sha256=request.sha256)
            origin = Origin.of(httpx.URL(spec.url))
        except ReleaseError as exc:
            raise BadRequestError(str(exc)) from None
        if str(origin) not in origins:
            raise BadRequestError(
                f"url: origin {origin} is not allowed, expected one of {', '.join(origins)} "
                "(kdf.release_origins)",
                code="origin_not_allowed",
            )
        return spec

    async def start(self, request: api.UpdateRequest, actor: str | None) -> api.UpdateResult:
        """Validate and start an update; returns its first progress (the update runs on).

        Raises:
            BadRequestError: bad version, sha256 or URL, or an origin not allowed.
            ConflictError: updates not configured, or one is already running.
        """
        try:
            spec = self._checked_spec(request)
        except ReleaseConfigError as exc:
            raise BadRequestError(str(exc)) from None
        updater = self._updater
        assert updater is not None
        if updater.running:
            raise ConflictError("a KDF update is already running", code="update_in_progress")
        before = updater.progress
        self._result = None
        self._actor = actor
        self._task = asyncio.create_task(self._run(updater, spec))
        # The updater publishes its first snapshot before its first await, and a new task runs
        # its first step before this coroutine resumes from one yield: one is enough.
        await asyncio.sleep(0)
        progress = updater.progress
        if progress is None or progress is before:
            raise ConflictError("a KDF update is already running", code="update_in_progress")
        return update_out(progress, self._result, running=updater.running)

    async def _run(self, updater: Updater, spec: ReleaseSpec) -> UpdateResult:
        try:
            result = await updater.update(spec)
        except UpdateInProgressError:
            raise
        except Exception as exc:  # the audit line must be written whatever happened
            log.exception("KDF update to %s failed unexpectedly", spec.version)
            self._record_audit(spec.version, "failed", f"unexpected error: {exc!r}")
            raise
        self._result = result
        outcome = {"updated": "ok", "unchanged": "ok"}.get(result.outcome.value, "failed")
        self._record_audit(spec.version, outcome, f"{result.outcome.value}: {result.reason}")
        return result

    def _record_audit(self, version: str, outcome: str, detail: str) -> None:
        if self.audit is None:
            return
        try:
            self.audit.append(
                action="KDF update",
                outcome=outcome,
                actor=self._actor,
                target=f"kdf {version}",
                detail=detail,
            )
        except Exception:  # a lost audit line is logged; the update already happened
            log.exception("audit line of the KDF update to %s lost", version)

    def current(self) -> api.UpdateResult:
        """The running update, or the last one (404 when none ran since the daemon started).

        Raises:
            NotFoundError: no update to show.
        """
        updater = self._updater
        progress = updater.progress if updater is not None else None
        if progress is None or updater is None:
            raise NotFoundError("no KDF update has run since the daemon started")
        result = self._result if progress.finished else None
        return update_out(progress, result, running=updater.running)
