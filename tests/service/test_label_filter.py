"""The dicomStores.list filter language: table-driven over the parser, then over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomql.service.errors import InvalidArgument
from dicomql.service.label_filter import parse_filter

STORES: dict[str, dict[str, str]] = {
    "prod-ct": {"env": "prod", "modality": "ct"},
    "prod-mr": {"env": "prod", "modality": "mr", "tier": "gold"},
    "test-ct": {"env": "test", "modality": "ct", "team": "a-b"},
    "bare": {},
    "spaced": {"key with quotes": "x", "env": "staging"},
    "intl": {"日本": "東京", "env": "-dash"},
}

CASES = [
    ("", set(STORES)),
    ("labels.env=prod", {"prod-ct", "prod-mr"}),
    ('labels.env="prod"', {"prod-ct", "prod-mr"}),
    ("labels.env = prod", {"prod-ct", "prod-mr"}),
    ("labels.tier:*", {"prod-mr"}),
    ("labels:tier", {"prod-mr"}),
    ("labels.env:prod", {"prod-ct", "prod-mr"}),
    ("labels.env=prod AND labels.modality=ct", {"prod-ct"}),
    ("labels.env=prod labels.modality=ct", {"prod-ct"}),  # juxtaposition is AND (AIP-160)
    ("labels.env=test OR labels.tier:*", {"test-ct", "prod-mr"}),
    ("NOT labels.env=prod", {"test-ct", "bare", "spaced", "intl"}),
    ("-labels.env:*", {"bare"}),
    ("NOT labels.env:*", {"bare"}),
    ("labels.modality=ct AND NOT labels.env=test", {"prod-ct"}),
    # OR binds tighter than AND (AIP-160): ct AND (test OR gold) — not (ct AND test) OR gold.
    ("labels.modality=ct AND labels.env=test OR labels.tier=gold", {"test-ct"}),
    ("(labels.modality=ct AND labels.env=test) OR labels.tier=gold", {"test-ct", "prod-mr"}),
    ("NOT (labels.env=prod OR labels.env=test)", {"bare", "spaced", "intl"}),
    ('labels."key with quotes"=x', {"spaced"}),
    ('labels."key with quotes":*', {"spaced"}),
    ("labels.team=a-b", {"test-ct"}),
    ("labels.env=-dash", {"intl"}),
    ("labels.日本=東京", {"intl"}),
    ("labels.env=nothing", set()),
    ('labels.env="AND"', set()),
    ('labels.missing=""', set()),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_filter_selects_the_stores_google_would(text: str, expected: set[str]) -> None:
    predicate = parse_filter(text)
    assert {name for name, labels in STORES.items() if predicate({"labels": labels})} == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("env=prod", "at position 1: cannot filter on 'env'; only labels may be used."),
        ("name=s1", "cannot filter on 'name'"),
        ("labels=prod", "expected 'labels.key'"),
        ("labels.env", "expected '=' or ':' after 'labels', found the end of the filter"),
        ("labels.env!=prod", "there is no inequality operator '!='"),
        ("labels.env>prod", "operator '>' is not supported on labels"),
        ("labels.env=", "expected a value, found the end of the filter"),
        ("labels.env=prod AND", "expected a restriction"),
        ("labels.env=prod OR", "expected a restriction"),
        ("(labels.env=prod", "missing ')'"),
        ("labels.env=prod)", "unexpected ')'"),
        ("()", "empty parentheses"),
        ('labels.env="prod', "unexpected character '\"'"),
        ("labels.env=a.b", "must be quoted"),
        ("labels.env=*", "'*' is only allowed after ':'"),
        ("labels.env=prod and labels.x=y", "cannot filter on 'and'"),
        ("labels.", "expected a key after '.'"),
    ],
)
def test_bad_filters_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_filter(text)
    assert problem in caught.value.message
    assert caught.value.message.startswith(f'Invalid filter "{text}"')


def test_absurdly_nested_filters_are_refused_not_crashed_on() -> None:
    for text in ("(" * 5000 + "labels.a=b" + ")" * 5000, "NOT " * 5000 + "labels.a=b"):
        with pytest.raises(InvalidArgument, match="Invalid filter"):
            parse_filter(text)


def test_plain_fields_can_be_allowed_for_other_list_methods() -> None:
    predicate = parse_filter("done=true", fields=("done",), map_fields=())
    assert predicate({"done": True})
    assert not predicate({"done": False})
    assert not predicate({})


# Google's label rules allow no spaces in keys; quoted keys are exercised by the parser above.
VALID_STORES = {name: labels for name, labels in STORES.items() if name != "spaced"}


@pytest.fixture
def dataset_with_labelled_stores(healthcare: Any) -> Any:
    parent = "projects/p/locations/us-central1"
    healthcare.projects().locations().datasets().create(
        parent=parent, datasetId="d", body={}
    ).execute()
    stores = healthcare.projects().locations().datasets().dicomStores()
    for store_id, labels in VALID_STORES.items():
        stores.create(
            parent=f"{parent}/datasets/d", dicomStoreId=store_id, body={"labels": labels}
        ).execute()
    return stores


def test_dicom_stores_list_applies_every_filter_over_http(
    dataset_with_labelled_stores: Any,
) -> None:
    stores = dataset_with_labelled_stores
    for text, expected in CASES:
        listed: set[str] = set()
        request = stores.list(
            parent="projects/p/locations/us-central1/datasets/d", filter=text, pageSize=2
        )
        while request is not None:  # paging must keep the filter
            response = request.execute()
            listed |= {store["name"].rsplit("/", 1)[1] for store in response.get("dicomStores", [])}
            request = stores.list_next(request, response)
        assert listed == expected & set(VALID_STORES), text


def test_dicom_stores_list_with_a_bad_filter_answers_400_naming_it(
    dataset_with_labelled_stores: Any,
) -> None:
    from googleapiclient.errors import HttpError

    with pytest.raises(HttpError) as caught:
        dataset_with_labelled_stores.list(
            parent="projects/p/locations/us-central1/datasets/d", filter="labels.env!=prod"
        ).execute()
    assert caught.value.resp.status == 400
    assert "no inequality operator" in caught.value.reason


@settings(max_examples=250, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(
            [
                "labels",
                ".",
                "env",
                "=",
                ":",
                "*",
                "(",
                ")",
                " ",
                "AND",
                "OR",
                "NOT",
                "-",
                '"',
                "prod",
                "!=",
                "<",
                "x.y",
                "'",
                "\\",
                "labels.env=prod",
            ]
        )
        | st.text(max_size=3),
        max_size=12,
    ).map("".join)
)
def test_any_filter_text_compiles_or_is_refused_with_400_never_crashing(text: str) -> None:
    try:
        predicate = parse_filter(text)
    except InvalidArgument as exc:
        assert exc.message.startswith("Invalid filter")
        return
    for labels in STORES.values():
        assert predicate({"labels": labels}) in (True, False)
