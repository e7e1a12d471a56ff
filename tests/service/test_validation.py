"""Google's rules on IDs, labels, update masks, page tokens and JSON bodies, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from dicomql.service.bodies import json_body
from dicomql.service.errors import InvalidArgument
from dicomql.service.paging import decode_token, encode_token, page_size
from dicomql.service.validation import (
    parse_update_mask,
    validate_labels,
    validate_resource_id,
)


@pytest.mark.parametrize(
    "resource_id",
    ["a", "ds1", "my-store_2.v3", "Ünïcode", "日本語", "٣٤", "x" * 256, "UPPER.case"],
)
def test_resource_ids_of_letters_digits_dash_underscore_dot_are_accepted(resource_id: str) -> None:
    assert validate_resource_id(resource_id, "datasetId") == resource_id


@pytest.mark.parametrize(
    "resource_id", ["", "x" * 257, "a b", "a/b", "a:b", "a@b", "a+b", "emoji😀", "tab\t"]
)
def test_resource_ids_outside_googles_pattern_are_rejected_naming_the_parameter(
    resource_id: str,
) -> None:
    with pytest.raises(InvalidArgument, match="dicomStoreId"):
        validate_resource_id(resource_id, "dicomStoreId")


def test_missing_resource_id_is_reported_as_required() -> None:
    with pytest.raises(InvalidArgument, match="datasetId is required"):
        validate_resource_id(None, "datasetId")


@pytest.mark.parametrize(
    "labels",
    [
        {},
        {"env": "prod"},
        {"env": ""},
        {"k" * 63: "v" * 63},
        {"tier-1_a": "gold-2_b"},
        {"日本": "東京"},
        {"é": "ü"},
        {f"k{i}": "v" for i in range(64)},
    ],
)
def test_labels_within_googles_rules_are_accepted(labels: dict[str, str]) -> None:
    assert validate_labels(labels) == labels


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"": "v"}, "1 to 63 characters"),
        ({"k" * 64: "v"}, "1 to 63 characters"),
        ({"日" * 43: "v"}, "128 bytes"),  # 43 characters, but 129 bytes of UTF-8
        ({"env": "日" * 43}, "128 bytes"),
        ({"Env": "v"}, "start with a lowercase letter"),
        ({"1env": "v"}, "start with a lowercase letter"),
        ({"-env": "v"}, "start with a lowercase letter"),
        ({"env.x": "v"}, "may contain only"),
        ({"env": "Prod"}, "values may contain only"),
        ({"env": "a b"}, "values may contain only"),
        ({"env": "v" * 64}, "at most 63"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64"),
    ],
)
def test_labels_breaking_a_rule_are_rejected_naming_the_rule(
    labels: dict[str, str], problem: str
) -> None:
    with pytest.raises(InvalidArgument, match=problem):
        validate_labels(labels)


def test_update_mask_accepts_json_and_proto_spellings_and_dedupes() -> None:
    paths = parse_update_mask(
        " labels ,notification_configs,notificationConfigs", ("labels", "notificationConfigs")
    )
    assert paths == ["labels", "notificationConfigs"]


@pytest.mark.parametrize("mask", [None, "", "  "])
def test_update_mask_is_required(mask: str | None) -> None:
    with pytest.raises(InvalidArgument, match="updateMask is required"):
        parse_update_mask(mask, ("labels",))


def test_update_mask_with_an_unknown_path_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(InvalidArgument, match=r'"name".*labels, streamConfigs'):
        parse_update_mask("labels,name", ("labels", "streamConfigs"))


def test_page_size_defaults_clamps_to_the_maximum_and_refuses_negatives() -> None:
    assert page_size(None) == 100
    assert page_size(0) == 100
    assert page_size(7) == 7
    assert page_size(5000) == 1000
    with pytest.raises(InvalidArgument, match="negative"):
        page_size(-1)


def test_page_token_round_trips_its_position_for_the_same_listing() -> None:
    token = encode_token("store-42", "projects/p/locations/l/datasets/d\nlabels.a=b")
    assert decode_token(token, "projects/p/locations/l/datasets/d\nlabels.a=b") == "store-42"
    assert decode_token(encode_token(17, "ops"), "ops") == 17
    assert decode_token(None, "ops") is None


def test_page_token_of_another_listing_is_refused() -> None:
    token = encode_token("s1", "projects/p/locations/l/datasets/d\n")
    with pytest.raises(InvalidArgument, match="does not belong"):
        decode_token(token, "projects/p/locations/l/datasets/d\nlabels.env=prod")


@pytest.mark.parametrize("token", ["garbage", "!!!", "e30", "W10", "bnVsbA"])
def test_malformed_page_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="Invalid page token"):
        decode_token(token, "ctx")


def conform(value: dict[str, Any], schema: str, field: str) -> dict[str, Any]:
    """``value`` read as a request body is, through :func:`json_body`."""
    raw = json.dumps(value).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    return anyio.run(json_body, request, schema, field, 10_000_000)


def test_body_fields_may_use_proto_names_and_come_back_in_json_names() -> None:
    body = conform(
        {"labels": {"a": "b"}, "notification_config": {"pubsub_topic": "projects/p/topics/t"}},
        "DicomStore",
        "dicom_store",
    )
    assert body == {
        "labels": {"a": "b"},
        "notificationConfig": {"pubsubTopic": "projects/p/topics/t"},
    }


def test_body_nulls_and_output_only_fields_are_dropped() -> None:
    body = conform({"timeZone": None, "satisfiesPzs": True}, "Dataset", "dataset")
    assert body == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"foo": 1}, "Unknown name \"foo\" at 'dicom_store': Cannot find field."),
        (
            {"notificationConfig": {"topic": "x"}},
            "Unknown name \"topic\" at 'dicom_store.notification_config': Cannot find field.",
        ),
        ({"labels": "env=prod"}, "Invalid value at 'dicom_store.labels'"),
        ({"labels": {"env": 5}}, "Invalid value at 'dicom_store.labels[env]' (TYPE_STRING), 5"),
        ({"notificationConfigs": {}}, "Invalid value at 'dicom_store.notification_configs'"),
        (
            {"notificationConfig": {"sendForBulkImport": "yes"}},
            "Invalid value at 'dicom_store.notification_config.send_for_bulk_import' (TYPE_BOOL)",
        ),
        (
            {"streamConfigs": [{"bigqueryDestination": {"writeDisposition": "SOMETIMES"}}]},
            "Invalid value at 'dicom_store.stream_configs[0].bigquery_destination"
            ".write_disposition' (TYPE_ENUM)",
        ),
        ({"notificationConfig": "projects/p/topics/t"}, "NotificationConfig"),
    ],
)
def test_body_with_unknown_fields_or_wrong_types_is_rejected_like_google(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        conform(body, "DicomStore", "dicom_store")
    assert message in caught.value.message
    assert caught.value.message.startswith("Invalid JSON payload received.")


def test_body_fields_holding_proto3_defaults_are_dropped_but_map_entries_are_kept() -> None:
    body = conform(
        {
            "labels": {"empty": ""},
            "notificationConfigs": [],
            "notificationConfig": {"pubsubTopic": "", "sendForBulkImport": False},
            "streamConfigs": [{"bigqueryDestination": {"tableUri": "0", "force": False}}],
        },
        "DicomStore",
        "dicom_store",
    )
    assert body == {
        "labels": {"empty": ""},
        "notificationConfig": {},
        "streamConfigs": [{"bigqueryDestination": {"tableUri": "0"}}],
    }


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_field = st.sampled_from(
    [
        "labels",
        "notificationConfig",
        "notification_configs",
        "streamConfigs",
        "name",
        "timeZone",
        "encryptionSpec",
        "pubsubTopic",
        "bigqueryDestination",
    ]
)
_bodies = st.dictionaries(_field | st.text(max_size=8), _json, max_size=4)


@settings(max_examples=150, deadline=None)
@given(body=_bodies)
def test_any_json_body_is_accepted_or_refused_with_400_never_crashing(
    body: dict[str, Any],
) -> None:
    from dicomql.service import datasets, dicom_stores

    for schema, field, check in (
        ("DicomStore", "dicom_store", dicom_stores._checked_fields),
        ("Dataset", "dataset", datasets._checked_fields),
    ):
        try:
            check(conform(body, schema, field))
        except InvalidArgument as exc:
            assert exc.message
