"""Operations split into work items (``store.work``, ``ItemizedMethod``): every pool sharing the
index runs items, each unit of work is counted once although workers die between claiming,
planning, storing and reporting, and the operation is completed once, by its last item; on
SQLite and PostgreSQL. Two ``Index`` engines stand for two server processes."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import insert, select

from dicomql import google_api
from dicomql.dicom.deid.engine import Deidentifier, deidentify_bytes
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.service.handlers import default_handlers
from dicomql.service.workers import (
    ItemContext,
    ItemizedMethod,
    OperationContext,
    OperationFailedError,
    WorkerPool,
)
from dicomql.store import work
from dicomql.store.blobs import BlobStore, LocalBlobStore
from dicomql.store.index import Index
from dicomql.store.ingest import store_instances
from dicomql.store.object_blobs import blob_store_for
from dicomql.store.operations import create_operation, operation_resource
from dicomql.store.schema import datasets, dicom_stores, instances, operations, work_items
from dicomql.store.selections import iter_selected
from tests.support.workers import DEADLINE, Blobless, PoolThread

METHOD = "test.items"
CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
LOCATION = "/v1/projects/p/locations/l"
DATASET = f"{LOCATION}/datasets/d"


@dataclass
class Units:
    """Every (operation, unit) the counting method processed, and by which pool."""

    done: list[tuple[str, int, str]] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    reached: threading.Event = field(default_factory=threading.Event)
    pools: set[str] = field(default_factory=set)  # the pools that have claimed an item
    met: threading.Event = field(default_factory=threading.Event)


def counting_method(units: Units, pool_name: str, *, signal_after: int = 3) -> ItemizedMethod:
    """Plans ``request.items`` items of ``request.size`` units; each unit sleeps
    ``request.sleep`` s and is reported with its checkpoint; ``request.fail_item`` fails. With
    ``request.meet`` = N, an item starts only once N pools have claimed one (so that on a
    loaded machine one pool cannot run them all before the other has looked)."""

    def plan(ctx: OperationContext) -> list[dict[str, Any]]:
        with units.lock:
            units.plans.append(ctx.claim.operation_id)
        size = int(ctx.request["size"])
        return [{"first": n * size, "count": size} for n in range(int(ctx.request["items"]))]

    def run_item(ctx: ItemContext) -> None:
        if ctx.claim.seq == ctx.request.get("fail_item"):
            raise OperationFailedError(5, "the source vanished")
        if "meet" in ctx.request:
            with units.lock:
                units.pools.add(pool_name)
                if len(units.pools) >= int(ctx.request["meet"]):
                    units.met.set()
            units.met.wait(DEADLINE)  # else the test's check of both pools says so
        first, count = ctx.payload["first"], ctx.payload["count"]
        for unit in range(first + int(ctx.checkpoint or 0), first + count):
            time.sleep(float(ctx.request.get("sleep", 0.001)))
            with units.lock:
                units.done.append((ctx.claim.operation_id, unit, pool_name))
            ctx.progress(success=1, checkpoint=unit - first + 1)
            if len(units.done) >= signal_after:
                units.reached.set()

    return ItemizedMethod(plan=plan, run_item=run_item, response={"@type": "counted"})


def make_pool(index: Index, tmp_path: Path, units: Units, name: str, **options: Any) -> WorkerPool:
    service = Blobless(index=index, blobs=LocalBlobStore(tmp_path / "blobs"))
    options.setdefault("poll_interval", 0.05)
    return WorkerPool(service, {METHOD: counting_method(units, name)}, worker_id=name, **options)


def add_operation(index: Index, **request: Any) -> tuple[int, str]:
    with index.begin() as conn:
        found = conn.execute(select(datasets.c.pk)).scalar()
        if found is None:
            found = conn.execute(
                insert(datasets).values(
                    project="p",
                    location="l",
                    dataset_id="d",
                    resource={},
                    create_time=datetime.now(UTC),
                )
            ).inserted_primary_key[0]
        row = create_operation(conn, found, METHOD, request=request)
        return int(row.pk), str(row.operation_id)


def operation(index: Index, pk: int) -> dict[str, Any]:
    with index.connect() as conn:
        row = conn.execute(select(operations).where(operations.c.pk == pk)).one()
    return operation_resource(row, f"operations/{row.operation_id}")


def wait_until(predicate: Callable[[], Any]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, "the condition was not reached; the pools are stuck"
        time.sleep(0.02)


def wait_done(index: Index, pk: int) -> dict[str, Any]:
    wait_until(lambda: operation(index, pk).get("done"))
    return operation(index, pk)


def items_of(index: Index, pk: int) -> list[Any]:
    with index.connect() as conn:
        return list(
            conn.execute(
                select(work_items).where(work_items.c.operation_pk == pk).order_by(work_items.c.seq)
            )
        )


def test_items_are_spread_over_two_pools_and_every_unit_is_counted_once(
    index_url: str, index: Index, tmp_path: Path
) -> None:
    units = Units()
    pk, operation_id = add_operation(index, items=12, size=5, sleep=0.01, meet=2)
    other_index = Index.open(index_url)
    try:
        pools = [
            make_pool(index, tmp_path, units, "a:1", workers=2),
            make_pool(other_index, tmp_path, units, "b:2", workers=2),
        ]
        with PoolThread(*pools):
            resource = wait_done(index, pk)
    finally:
        other_index.close()
    assert resource["response"] == {"@type": "counted"}
    assert resource["metadata"]["counter"] == {"success": "60"}
    assert units.plans == [operation_id]
    assert Counter(unit for _, unit, _ in units.done) == dict.fromkeys(range(60), 1)
    assert {pool for *_, pool in units.done} == {"a:1", "b:2"}
    items = items_of(index, pk)
    assert len(items) == 12 and all(item.done for item in items)
    assert [item.counter_success for item in items] == [5] * 12
    assert {item.claimed_by[0] for item in items} == {"a", "b"}


def test_pending_counts_down_as_items_finish(index: Index, tmp_path: Path) -> None:
    units = Units()
    pk, _ = add_operation(index, items=4, size=50, sleep=0.005)
    with PoolThread(make_pool(index, tmp_path, units, "a:1", workers=1)):
        assert units.reached.wait(DEADLINE)
        running = operation(index, pk)
        wait_done(index, pk)
    counter = running["metadata"]["counter"]
    assert "done" not in running
    assert int(counter["success"]) >= 3
    assert int(counter["success"]) + int(counter["pending"]) == 200


def test_an_item_whose_worker_died_resumes_at_its_checkpoint_and_counts_nothing_twice(
    index: Index, tmp_path: Path
) -> None:
    units = Units()
    pk, _ = add_operation(index, items=3, size=4)
    dead_pool = make_pool(index, tmp_path, units, "dead:1")
    lease = timedelta(seconds=0.3)
    # A worker of another process plans the operation, claims item 0, reports 2 of its 4
    # units and dies.
    claim = work.claim_next(index, "dead:1/0", lease=lease, methods=[METHOD])
    assert claim is not None
    dead_pool.run_claim(claim)
    item = work.claim_item(index, "dead:1/0", lease=lease, methods=[METHOD])
    assert item is not None and item.seq == 0
    work.record_item_progress(index, item, lease=lease, success=2, checkpoint=2)
    with PoolThread(make_pool(index, tmp_path, units, "a:1")):
        resource = wait_done(index, pk)
    assert resource["metadata"]["counter"] == {"success": "12"}
    assert sorted(unit for _, unit, _ in units.done) == list(range(2, 12))
    (first, *_) = items_of(index, pk)
    assert first.attempts == 2 and first.counter_success == 4
    # The dead worker's claim is void: nothing it reports is counted.
    with pytest.raises(work.LeaseLostError):
        work.record_item_progress(index, item, lease=lease, success=1)
    with pytest.raises(work.LeaseLostError):
        work.finish_item(index, item, response={})
    assert operation(index, pk)["metadata"]["counter"] == {"success": "12"}


def test_a_worker_dying_between_claim_and_plan_leaves_the_operation_planned_once(
    index: Index, tmp_path: Path
) -> None:
    units = Units()
    pk, _ = add_operation(index, items=5, size=2)
    dead = work.claim_next(index, "dead:1/0", lease=timedelta(seconds=0.2), methods=[METHOD])
    assert dead is not None
    with PoolThread(make_pool(index, tmp_path, units, "a:1")):
        wait_done(index, pk)
    # The dead worker wakes up and tries to store its plan: refused, nothing inserted.
    with pytest.raises(work.LeaseLostError):
        work.plan_items(index, dead, [{"count": 1}])
    assert [item.seq for item in items_of(index, pk)] == [0, 1, 2, 3, 4]
    assert len(units.done) == 10


def test_cancel_ends_the_operation_and_leaves_unclaimed_items_unrun(
    index: Index, tmp_path: Path
) -> None:
    units = Units()
    pk, operation_id = add_operation(index, items=20, size=10, sleep=0.01)
    with PoolThread(make_pool(index, tmp_path, units, "a:1", workers=1)):
        assert units.reached.wait(DEADLINE)
        assert work.request_cancel(index, pk)
        resource = wait_done(index, pk)
        # A later operation's item, run to its end: the worker claims the oldest runnable item
        # first, so had the cancelled operation's items stayed runnable, it would have run them.
        later, _ = add_operation(index, items=1, size=1)
        wait_done(index, later)
    processed = [unit for op, unit, _ in units.done if op == operation_id]
    assert resource["error"]["code"] == 1
    assert int(resource["metadata"]["counter"]["success"]) == len(processed)
    assert 3 <= len(processed) < 200
    assert not all(item.done for item in items_of(index, pk))


def test_cancel_with_items_still_running_never_leaves_a_negative_pending(
    index: Index, tmp_path: Path
) -> None:
    """Two workers: the one that sees the cancel ends the operation (pending 0) while the other
    still counts finished units; those must not drive pending below zero ("-16")."""
    units = Units()
    pk, _ = add_operation(index, items=8, size=40, sleep=0.01)
    with PoolThread(make_pool(index, tmp_path, units, "a:1", workers=2)):
        assert units.reached.wait(DEADLINE)
        wait_until(lambda: len({unit // 40 for _, unit, _ in units.done}) >= 2)
        assert work.request_cancel(index, pk)
        resource = wait_done(index, pk)
        # Every item that ran has let go of its lease: nothing counts any more.
        wait_until(lambda: all(item.lease_until is None for item in items_of(index, pk)))
    counter = operation(index, pk)["metadata"]["counter"]
    assert resource["error"]["code"] == 1
    assert int(counter.get("pending", "0")) == 0
    assert int(counter["success"]) == len(units.done)


def test_a_failing_item_ends_the_operation_with_its_status(index: Index, tmp_path: Path) -> None:
    units = Units()
    pk, _ = add_operation(index, items=6, size=1, fail_item=2)
    with PoolThread(make_pool(index, tmp_path, units, "a:1", workers=1)):
        resource = wait_done(index, pk)
    assert resource["error"] == {"code": 5, "message": "the source vanished"}
    assert "response" not in resource


def test_an_item_that_keeps_killing_its_worker_is_abandoned(index: Index, tmp_path: Path) -> None:
    units = Units()
    pk, _ = add_operation(index, items=2, size=1)
    pool = make_pool(index, tmp_path, units, "a:1", max_attempts=2)
    claim = work.claim_next(index, "dead:1/0", lease=timedelta(seconds=1), methods=[METHOD])
    assert claim is not None
    pool.run_claim(claim)
    for attempt in range(2):
        item = work.claim_item(
            index, f"dying:{attempt}", lease=timedelta(microseconds=1), methods=[METHOD]
        )
        assert item is not None and item.seq == 0
        time.sleep(0.01)  # past the 1 µs lease, whatever the clock's resolution
    with PoolThread(pool):
        resource = wait_done(index, pk)
    assert resource["error"]["code"] == 10  # ABORTED


# --- the real handlers: a worker that stored output but died before reporting it ----------


def client_of(config: ServiceConfig) -> httpx.Client:
    # Without handlers: the operations are recorded but this app never runs them.
    app = create_app(config, operation_handlers={})
    return httpx.Client(transport=InProcessTransport(app), base_url="http://embedded")


def ct_copies(count: int) -> list[bytes]:
    ds = pydicom.dcmread(CT_SMALL)
    out = []
    for _ in range(count):
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def store_copies(config: ServiceConfig, store_id: str, copies: list[bytes]) -> None:
    """Store instances the quick way (one group commit), as STOW would."""
    index = Index.open(config.index_url)
    try:
        with index.connect() as conn:
            store_pk = conn.execute(
                select(dicom_stores.c.pk).where(dicom_stores.c.store_id == store_id)
            ).scalar_one()
        results = store_instances(index, blob_store_for(config, index), store_pk, copies)
    finally:
        index.close()
    assert all(result.ok for result in results)


def stored_uids(index: Index, store_pk: int) -> Counter[str]:
    with index.connect() as conn:
        return Counter(
            conn.execute(
                select(instances.c.sop_instance_uid).where(instances.c.store_pk == store_pk)
            ).scalars()
        )


def run_everything(
    index: Index, blobs: BlobStore, operation_pk: int, config: ServiceConfig
) -> dict[str, Any]:
    pool = WorkerPool(Blobless(index, blobs, config), default_handlers(), poll_interval=0.05)
    with PoolThread(pool):
        return wait_done(index, operation_pk)


def start(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    """Start an operation; its ID."""
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    operation_id: str = response.json()["name"].rsplit("/", 1)[1]
    return operation_id


def operation_row(index: Index, operation_id: str) -> Any:
    with index.connect() as conn:
        return conn.execute(
            select(operations).where(operations.c.operation_id == operation_id)
        ).one()


@pytest.mark.slow
def test_an_import_item_rerun_after_its_worker_stored_files_counts_and_stores_them_once(
    service_config: ServiceConfig, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    copies = ct_copies(40)
    for number, data in enumerate(copies):
        (source / f"{number:02d}.dcm").write_bytes(data)
    with client_of(service_config) as client:
        client.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
        client.post(f"{DATASET}/dicomStores", params={"dicomStoreId": "s"}, json={})
        operation_id = start(
            client, f"{DATASET}/dicomStores/s:import", {"gcsSource": {"uri": f"{source}/*"}}
        )
    index = Index.open(service_config.index_url)
    blobs = blob_store_for(service_config, index)
    try:
        row = operation_row(index, operation_id)
        store_pk = row.request["store_pk"]
        # A worker of another process planned the import, claimed its first item, stored the
        # item's files and died before reporting them.
        pool = WorkerPool(Blobless(index, blobs, service_config), default_handlers())
        claim = work.claim_next(
            index, "dead:1/0", lease=timedelta(seconds=1), methods=[google_api.IMPORT_DICOM_DATA]
        )
        assert claim is not None
        pool.run_claim(claim)
        item = work.claim_item(
            index, "dead:1/0", lease=timedelta(seconds=0.2), methods=[google_api.IMPORT_DICOM_DATA]
        )
        assert item is not None
        assert store_instances(
            index, blobs, store_pk, [Path(f).read_bytes() for f in item.payload["files"]]
        )
        resource = run_everything(index, blobs, row.pk, service_config)
        uids = stored_uids(index, store_pk)
    finally:
        index.close()
    assert resource["metadata"]["counter"] == {"success": "40"}
    assert "error" not in resource
    assert len(uids) == 40 and set(uids.values()) == {1}


@pytest.mark.slow
def test_a_deidentify_item_rerun_after_its_worker_stored_output_adds_no_second_copy(
    service_config: ServiceConfig,
) -> None:
    with client_of(service_config) as client:
        client.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
        for store_id in ("src", "out"):
            client.post(f"{DATASET}/dicomStores", params={"dicomStoreId": store_id}, json={})
        store_copies(service_config, "src", ct_copies(70))
        body = {
            "destinationStore": "projects/p/locations/l/datasets/d/dicomStores/out",
            "config": {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}},
        }
        operation_id = start(client, f"{DATASET}/dicomStores/src:deidentify", body)
    index = Index.open(service_config.index_url)
    blobs = blob_store_for(service_config, index)
    try:
        row = operation_row(index, operation_id)
        request = row.request
        pool = WorkerPool(Blobless(index, blobs, service_config), default_handlers())
        claim = work.claim_next(
            index,
            "dead:1/0",
            lease=timedelta(seconds=1),
            methods=[google_api.DEIDENTIFY_DICOM_STORE],
        )
        assert claim is not None
        pool.run_claim(claim)
        assert len(items_of(index, row.pk)) == 2  # 64 + 6 instances
        item = work.claim_item(
            index,
            "dead:1/0",
            lease=timedelta(seconds=0.2),
            methods=[google_api.DEIDENTIFY_DICOM_STORE],
        )
        assert item is not None
        # The dead worker de-identified and stored the item's first 20 instances, unreported.
        deidentifier = Deidentifier(
            request["body"]["config"], operation_key=bytes.fromhex(request["operation_key"])
        )
        sources = list(
            iter_selected(index.connect, request["store_pk"], {}, None, 0, item.payload["through"])
        )[:20]
        outputs = []
        for source_row in sources:
            with blobs.open(source_row.blob_key) as file:
                outputs.append(deidentify_bytes(deidentifier, file.read()))
        assert all(
            result.ok
            for result in store_instances(index, blobs, request["destination_pk"], outputs)
        )
        resource = run_everything(index, blobs, row.pk, service_config)
        uids = stored_uids(index, request["destination_pk"])
    finally:
        index.close()
    assert resource["metadata"]["counter"] == {"success": "70"}
    assert len(uids) == 70 and set(uids.values()) == {1}


@pytest.mark.slow
def test_an_export_is_split_into_ranges_of_the_selection(
    service_config: ServiceConfig, tmp_path: Path
) -> None:
    with client_of(service_config) as client:
        client.post(f"{LOCATION}/datasets", params={"datasetId": "d"})
        client.post(f"{DATASET}/dicomStores", params={"dicomStoreId": "s"}, json={})
        store_copies(service_config, "s", ct_copies(130))
        operation_id = start(
            client,
            f"{DATASET}/dicomStores/s:export",
            {"gcsDestination": {"uriPrefix": str(tmp_path / "out")}},
        )
    index = Index.open(service_config.index_url)
    blobs = blob_store_for(service_config, index)
    try:
        row = operation_row(index, operation_id)
        resource = run_everything(index, blobs, row.pk, service_config)
        items = items_of(index, row.pk)
    finally:
        index.close()
    assert resource["metadata"]["counter"] == {"success": "130"}
    assert [item.payload["count"] for item in items] == [64, 64, 2]
    assert [item.counter_success for item in items] == [64, 64, 2]
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 130
