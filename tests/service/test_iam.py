"""getIamPolicy / setIamPolicy / testIamPermissions on datasets and DICOM stores through
google-api-python-client, answered as Google's IAM answers (the discovery document's Policy,
SetIamPolicyRequest and TestIamPermissions schemas; etag read-modify-write per
https://cloud.google.com/iam/docs/policies#etag). Policies are kept, not enforced."""

from __future__ import annotations

from typing import Any

import pytest
from googleapiclient.errors import HttpError

from dicomql import connect

PARENT = "projects/p/locations/us-central1"
DATASET = f"{PARENT}/datasets/d"
STORE = f"{DATASET}/dicomStores/s"
VIEWER = {"role": "roles/healthcare.dicomViewer", "members": ["user:ana@example.com"]}


@pytest.fixture
def resources(healthcare: Any) -> Any:
    datasets = healthcare.projects().locations().datasets()
    datasets.create(parent=PARENT, datasetId="d", body={}).execute()
    datasets.dicomStores().create(parent=DATASET, dicomStoreId="s", body={}).execute()
    return datasets


def _collection(datasets: Any, resource: str) -> Any:
    return datasets.dicomStores() if "/dicomStores/" in resource else datasets


@pytest.mark.parametrize("resource", [DATASET, STORE])
def test_a_policy_is_kept_with_a_new_etag_per_write(resources: Any, resource: str) -> None:
    collection = _collection(resources, resource)
    empty = collection.getIamPolicy(resource=resource).execute()
    assert empty == {"etag": "ACAB"}  # Google's answer for a resource never given a policy
    written = collection.setIamPolicy(
        resource=resource, body={"policy": {"bindings": [VIEWER], "etag": empty["etag"]}}
    ).execute()
    assert written["bindings"] == [VIEWER] and written["version"] == 1
    assert written["etag"] not in ("", "ACAB")
    read = collection.getIamPolicy(resource=resource).execute()
    assert read == written
    # A write against the old etag lost a race: 409 ABORTED, the policy unchanged.
    with pytest.raises(HttpError) as raised:
        collection.setIamPolicy(
            resource=resource, body={"policy": {"bindings": [], "etag": empty["etag"]}}
        ).execute()
    assert raised.value.resp.status == 409
    assert collection.getIamPolicy(resource=resource).execute() == written


def test_dataset_and_store_policies_are_separate(resources: Any) -> None:
    resources.setIamPolicy(resource=DATASET, body={"policy": {"bindings": [VIEWER]}}).execute()
    assert resources.dicomStores().getIamPolicy(resource=STORE).execute() == {"etag": "ACAB"}


def test_conditional_bindings_need_version_3_to_write_and_read(resources: Any) -> None:
    conditional = {**VIEWER, "condition": {"title": "t", "expression": "request.time < x"}}
    with pytest.raises(HttpError) as raised:
        resources.setIamPolicy(
            resource=DATASET, body={"policy": {"bindings": [conditional]}}
        ).execute()
    assert raised.value.resp.status == 400
    body = {"policy": {"version": 3, "bindings": [conditional]}}
    assert resources.setIamPolicy(resource=DATASET, body=body).execute()["version"] == 3
    with pytest.raises(HttpError) as raised:
        resources.getIamPolicy(resource=DATASET).execute()
    assert raised.value.resp.status == 400
    policy = resources.getIamPolicy(resource=DATASET, options_requestedPolicyVersion=3).execute()
    assert policy["bindings"] == [conditional]


def test_bad_roles_members_and_versions_are_400(resources: Any) -> None:
    for policy in (
        {"bindings": [{"role": "healthcare.dicomViewer", "members": ["user:a@b.c"]}]},
        {"bindings": [{"role": "roles/viewer", "members": ["ana@example.com"]}]},
        {"version": 2, "bindings": [VIEWER]},
    ):
        with pytest.raises(HttpError) as raised:
            resources.setIamPolicy(resource=DATASET, body={"policy": policy}).execute()
        assert raised.value.resp.status == 400


def test_test_iam_permissions_grants_what_is_asked_because_nothing_is_enforced(
    resources: Any,
) -> None:
    asked = ["healthcare.dicomStores.dicomWebRead", "healthcare.dicomStores.dicomWebWrite"]
    answer = (
        resources.dicomStores()
        .testIamPermissions(resource=STORE, body={"permissions": asked})
        .execute()
    )
    assert answer == {"permissions": asked}
    with pytest.raises(HttpError) as raised:
        resources.testIamPermissions(
            resource=DATASET, body={"permissions": ["healthcare.*"]}
        ).execute()
    assert raised.value.resp.status == 400


def test_iam_on_a_missing_store_is_404(resources: Any) -> None:
    with pytest.raises(HttpError) as raised:
        resources.dicomStores().getIamPolicy(resource=f"{DATASET}/dicomStores/nope").execute()
    assert raised.value.resp.status == 404


def test_a_deleted_and_recreated_store_starts_without_a_policy(resources: Any) -> None:
    stores = resources.dicomStores()
    stores.setIamPolicy(resource=STORE, body={"policy": {"bindings": [VIEWER]}}).execute()
    stores.delete(name=STORE).execute()
    stores.create(parent=DATASET, dicomStoreId="s", body={}).execute()
    assert stores.getIamPolicy(resource=STORE).execute() == {"etag": "ACAB"}


def test_sql_reads_the_policy_bindings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with connect(tmp_path) as connection:
        cursor = connection.cursor()
        cursor.execute(
            "INSERT INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
            " SELECT 'p', 'l', 'd'"
        )
        http = connection._http
        http.post(
            "/v1/projects/p/locations/l/datasets/d:setIamPolicy",
            json={"policy": {"bindings": [VIEWER]}},
        ).raise_for_status()
        cursor.execute(
            "SELECT role, members FROM google.healthcare.datasets_iam_policies"
            " WHERE projectsId = 'p' AND locationsId = 'l' AND datasetsId = 'd'"
        )
        rows = cursor.fetchall()
    assert len(rows) == 1 and rows[0][0] == VIEWER["role"]
