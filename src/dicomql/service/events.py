"""The deliverer of the instance event outbox: Pub/Sub notifications (``notificationConfigs``) and
BigQuery rows (``streamConfigs``) of stored instances, claimed from ``instance_events`` by any
server sharing the index, delivered in batches per destination, deleted on success and retried
with exponential backoff on failure until a bound, after which they are logged and dropped
(Cloud Healthcare: "If a notification can't be published to Pub/Sub, errors are logged")."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from anyio import from_thread, to_thread
from anyio.abc import TaskStatus
from anyio.lowlevel import EventLoopToken, current_token

from dicomql.config import Endpoints
from dicomql.service.bigquery_google import BigQueryError, GoogleBigQuery
from dicomql.service.prometheus import count_error
from dicomql.service.pubsub import PublishError, PubsubPublisher
from dicomql.store import events as outbox
from dicomql.store.index import Index

log = logging.getLogger("dicomql.service.events")


@dataclass(frozen=True)
class DeliverySettings:
    """How events are delivered (the app's lifespan builds it from ``ServiceConfig``).

    Attributes:
        endpoints: ``pubsub_emulator_host`` (``PUBSUB_EMULATOR_HOST``): publish there over plain
            HTTP without credentials; None publishes to pubsub.googleapis.com with Application
            Default Credentials. ``bigquery_endpoint``: stream to that BigQuery endpoint.
        poll_interval: seconds to the next look for due events after one that found some, or
            after :meth:`EventDeliverer.soon` (instances were stored in this process).
        max_poll_interval: each look that finds nothing doubles the wait, up to this: the
            bound on how late an event stored by another process or server is delivered.
        batch: events claimed at once (then grouped per topic or table).
        lease: how long a claim hides events from other deliverers.
        backoff: the wait after a first failure; doubled per further failure, at most an hour.
        max_attempts: deliveries tried before an event is logged and dropped (with the defaults,
            about 70 minutes of retries).
    """

    endpoints: Endpoints = field(default_factory=Endpoints)
    poll_interval: float = 0.5
    max_poll_interval: float = 2.0
    batch: int = 500
    lease: timedelta = timedelta(seconds=120)
    backoff: timedelta = timedelta(seconds=1)
    max_attempts: int = 13


class DeliveryError(Exception):
    """One destination's batch could not be delivered; its events are retried later."""


class EventDeliverer:
    """One task that delivers due events in a thread, started and stopped by the app.

    Args:
        index: the index holding the outbox.
        data_dir: where the local BigQuery stand-in keeps its DuckDB files.
        settings: see :class:`DeliverySettings`.
        publisher: a Pub/Sub publisher (tests); built from ``settings`` by default.
    """

    def __init__(
        self,
        index: Index,
        data_dir: Path,
        settings: DeliverySettings,
        *,
        publisher: PubsubPublisher | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.index = index
        self.data_dir = data_dir
        self.settings = settings
        self.publisher = publisher or PubsubPublisher(
            emulator_host=settings.endpoints.pubsub_emulator_host
        )
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}/events"
        self._bigquery: GoogleBigQuery | bool | None = False  # False: not decided yet
        self._stopping: anyio.Event | None = None
        self._soon: anyio.Event | None = None
        self._loop: EventLoopToken | None = None
        self._stopped: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Deliver until :meth:`stop`: the app's lifespan starts it in its task group."""
        self._stopping = anyio.Event()
        self._soon = anyio.Event()
        self._loop = current_token()
        self._stopped = anyio.Event()
        task_status.started()
        try:
            await self._run()
        finally:
            self._stopped.set()

    def soon(self) -> None:
        """Instances were stored here and may have events: look within ``poll_interval``
        rather than after a backed-off wait. From the event loop or any thread; only an
        optimisation (the index's outbox is what counts), and at most one look per
        ``poll_interval`` however many requests call it."""
        if self._loop is None:
            return
        try:
            current_token()
        except RuntimeError:  # another thread: the event is set on the event loop
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody delivers here
                from_thread.run_sync(self._hint, token=self._loop)
        else:
            self._hint()

    def _hint(self) -> None:
        if self._soon is not None:
            self._soon.set()

    async def stop(self) -> None:
        """Stop after the batch in hand; undelivered events stay in the outbox for the next
        start or another server (a claim in flight expires with its lease)."""
        if self._stopping is not None:
            self._stopping.set()
            self._hint()  # ends a wait
        if self._stopped is not None:
            await self._stopped.wait()
        self.publisher.close()

    async def _run(self) -> None:
        assert self._stopping is not None and self._soon is not None
        settings = self.settings
        wait = settings.poll_interval
        while not self._stopping.is_set():
            # Cleared before looking, so a soon() during the look is kept (an anyio.Event cannot
            # be cleared: a set one is replaced).
            if self._soon.is_set():
                self._soon = anyio.Event()
            try:
                claimed, due_in = await to_thread.run_sync(self._look)
            except Exception as exc:
                # The index is unreachable for a moment (or a bug in one batch): try again
                # after the poll interval rather than end delivery, and the server with it.
                log.exception("claiming instance events failed")
                count_error(exc)
                claimed, due_in = 0, None
            if claimed >= settings.batch:
                continue
            # Nothing (more) due: wait longer after each empty look, so an idle server does
            # not keep querying its index; events found start again at the shortest wait, and
            # a retry not yet due is waited for exactly.
            if claimed:
                wait = settings.poll_interval
            hinted = await self._wait(wait if due_in is None else min(wait, due_in))
            wait = settings.poll_interval if hinted else min(wait * 2, settings.max_poll_interval)

    async def _wait(self, longest: float) -> bool:
        """Until ``longest`` has passed, or stop(); a soon() shortens it to ``poll_interval``
        from the look (so a stream of stored instances costs at most one look that long).
        Whether soon() (or stop()) was called."""
        assert self._stopping is not None and self._soon is not None
        started = anyio.current_time()
        soon = self._soon
        with anyio.move_on_after(longest):
            await soon.wait()
        if not soon.is_set():
            return False
        with anyio.move_on_after(started + self.settings.poll_interval - anyio.current_time()):
            await self._stopping.wait()
        return True

    def _look(self) -> tuple[int, float | None]:
        """Deliver what is due (blocking): how many events were claimed, and in how many
        seconds the earliest event left is due, when none was due now (None: not known, or
        the outbox is empty). A cheap read first: an empty outbox, the usual idle state, and
        one holding only retries not yet due cost no write transaction."""
        earliest = outbox.next_attempt(self.index)
        if earliest is None:
            return 0, None
        due_in = (earliest - datetime.now(UTC)).total_seconds()
        if due_in > 0:
            return 0, due_in
        return self.deliver_due(), None

    def deliver_due(self) -> int:
        """Claim and deliver one batch of due events (blocking); how many were claimed."""
        claimed = outbox.claim_due(
            self.index, self.worker_id, limit=self.settings.batch, lease=self.settings.lease
        )
        groups: dict[tuple[str, str], list[outbox.Event]] = {}
        for event in claimed:
            groups.setdefault((event.kind, event.destination), []).append(event)
        for (kind, destination), group in groups.items():
            try:
                self._deliver(kind, destination, group)
            except DeliveryError as exc:
                self._failed(kind, destination, group, str(exc))
                continue
            outbox.delivered(self.index, [event.pk for event in group])
        return len(claimed)

    def _deliver(self, kind: str, destination: str, group: list[outbox.Event]) -> None:
        if kind == outbox.PUBSUB:
            try:
                self.publisher.publish(destination, [event.payload for event in group])
            except PublishError as exc:
                raise DeliveryError(str(exc)) from exc
        elif kind == outbox.BIGQUERY:
            self._stream(destination, [stream_row(event.payload) for event in group])
        else:
            raise DeliveryError(f"unknown event kind {kind!r}")

    def _stream(self, table_uri: str, rows: list[dict[str, Any]]) -> None:
        # Imported here: DuckDB, NumPy and pydicom cost a second of start-up that a store
        # without streamConfigs (and the SQL front end's cold start) should not pay.
        import duckdb

        from dicomql.service import bigquery_local
        from dicomql.service.bigquery_destination import parse_table_uri

        try:
            uri = parse_table_uri(table_uri)
        except ValueError as exc:
            raise DeliveryError(str(exc)) from exc
        google = self._google_bigquery()
        try:
            if google is not None:
                google.append(uri, rows)
            else:
                bigquery_local.append_rows(self.data_dir, uri, rows)
        except duckdb.Error as exc:
            raise DeliveryError(f"cannot append to {table_uri} (local stand-in): {exc}") from exc
        except BigQueryError as exc:
            raise DeliveryError(str(exc)) from exc

    def _google_bigquery(self) -> GoogleBigQuery | None:
        """Real BigQuery when google-cloud-bigquery is installed (``dicomql[cloud]``) and
        credentials or an endpoint exist (service/bigquery_google.py); else None, the DuckDB
        stand-in. Decided once."""
        if self._bigquery is False:
            self._bigquery = GoogleBigQuery.connect(self.settings.endpoints)
        return self._bigquery if isinstance(self._bigquery, GoogleBigQuery) else None

    def _failed(self, kind: str, destination: str, group: list[outbox.Event], error: str) -> None:
        abandoned = outbox.failed(
            self.index,
            group,
            error,
            backoff=self.settings.backoff,
            give_up_after=self.settings.max_attempts,
        )
        if abandoned:
            log.error(
                "gave up delivering %d %s event(s) to %s after %d attempts: %s",
                len(abandoned),
                kind,
                destination,
                self.settings.max_attempts,
                error,
            )
        if len(abandoned) < len(group):
            log.warning(
                "delivering %d %s event(s) to %s failed; will retry: %s",
                len(group) - len(abandoned),
                kind,
                destination,
                error,
            )


def stream_row(payload: dict[str, Any]) -> dict[str, Any]:
    """The table row of a streamed instance, as export writes it (``Type`` CREATE)."""
    from dicomql.service.bigquery_rows import instance_row

    facts = payload["instance"]
    return instance_row(
        payload.get("attributes") or {},
        study_instance_uid=facts["studyInstanceUID"],
        series_instance_uid=facts["seriesInstanceUID"],
        sop_instance_uid=facts["sopInstanceUID"],
        last_updated=datetime.fromisoformat(facts["lastUpdated"]),
        storage_class=facts.get("storageClass") or "STANDARD",
        size=int(facts.get("blobStorageSize") or 0),
        source_store=facts["storeName"] if payload.get("includeSourceStore") else None,
    )
