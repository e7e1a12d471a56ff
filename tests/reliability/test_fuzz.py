"""Hostile input, fuzzed with hypothesis: the multipart parser, DICOM parts, QIDO parameters,
resource names in URLs, JSON bodies and the SQL parser answer a clear 4xx (or a dicomql SQL
error), never a 500, a crash or a hang."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomql.dicom.parse import UnreadableInstance, read_header
from dicomql.errors import Error
from dicomql.provider.transports import InProcessTransport
from dicomql.service.app import create_app
from dicomql.service.config import ServiceConfig
from dicomql.service.dicomweb.multipart import parse_multipart
from dicomql.service.errors import ServiceError
from dicomql.sql.lexer import split_statements
from dicomql.sql.parser import parse
from tests.support.dicomweb import multipart
from tests.support.reliability import (
    DATASET,
    DICOMWEB,
    LOCATION,
    STORE,
    create_dataset_and_store,
    make_instance,
    postgres_schema,
)

# On one worker: one service per backend, and fuzz.json counts every fuzzer (docs/development.md).
pytestmark = pytest.mark.xdist_group("fuzz")

EXAMPLES = int(os.environ.get("DICOMQL_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
FIGURES = Path(os.environ.get("DICOMQL_RELIABILITY_FIGURES", "/tmp/dicomql-reliability"))
TRIED: Counter[str] = Counter()
SEED = make_instance("1.2.840.1", "1.2.840.1.1", "1.2.840.1.1.1")
text = st.text(st.characters(codec="utf-8"), max_size=80)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One embedded service per index backend shared by the fuzzers; store ``s`` holds one
    instance. PostgreSQL gets a fresh schema (its text refuses NUL: the fuzzers found 500s)."""
    with ExitStack() as stack:
        database_url = None
        if request.param == "postgresql":
            database_url = stack.enter_context(postgres_schema())
        config = ServiceConfig(
            data_dir=tmp_path_factory.mktemp("fuzz") / "data", database_url=database_url
        )
        transport = InProcessTransport(create_app(config))
        client = stack.enter_context(
            httpx.Client(transport=transport, base_url="http://embedded", timeout=60)
        )
        create_dataset_and_store(client)
        body, content_type = multipart([SEED])
        stored = client.post(
            f"{DICOMWEB}/studies", content=body, headers={"content-type": content_type}
        )
        assert stored.status_code == 200, stored.text
        yield client


@pytest.fixture(scope="module", autouse=True)
def _record_cases_tried() -> Iterator[None]:
    """Writes how many cases each fuzzer tried (docs/reliability.md quotes the figures)."""
    yield
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "fuzz.json").write_text(json.dumps(dict(TRIED), indent=2))


def _google_error(response: httpx.Response) -> None:
    """A 4xx in Google's envelope, or a success; never a 5xx."""
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == response.status_code
        assert error["status"] and isinstance(error["message"], str)


# --- the multipart parser -------------------------------------------------------------------


async def _events(chunks: list[bytes], boundary: str) -> int:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    count = 0
    with anyio.fail_after(10):  # a hang is a failure
        async for _ in parse_multipart(stream(), boundary):
            count += 1
    return count


BOUNDARY = "reliability-b0undary"


def _mutated_body() -> st.SearchStrategy[bytes]:
    body, _ = multipart([SEED[:200], b"x" * 50], BOUNDARY)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(body)
        for _ in range(draw(st.integers(0, 6))):
            position = draw(st.integers(0, len(data)))
            action = draw(st.sampled_from(["insert", "delete", "flip"]))
            chunk = draw(st.sampled_from([b"\r\n", b"--", BOUNDARY.encode(), b"\r\n\r\n"]))
            if action == "insert":
                data[position:position] = chunk
            elif action == "delete":
                del data[position : position + draw(st.integers(1, 30))]
            elif position < len(data):
                data[position] ^= draw(st.integers(1, 255))
        return bytes(data)

    return build()


@FUZZ
@given(
    body=st.one_of(st.binary(max_size=400), _mutated_body()),
    # Header values reach the parser as latin-1 text (ASGI headers are bytes).
    boundary=st.one_of(st.just(BOUNDARY), st.text(st.characters(max_codepoint=255), max_size=80)),
    split=st.lists(st.integers(1, 64), max_size=8),
)
def test_the_multipart_parser_ends_or_raises_invalid_argument(
    body: bytes, boundary: str, split: list[int]
) -> None:
    TRIED["test_the_multipart_parser_ends_or_raises_invalid_argument"] += 1
    chunks, rest = [], body
    for size in split:
        chunks.append(rest[:size])
        rest = rest[size:]
    chunks.append(rest)
    try:
        anyio.run(_events, chunks, boundary)
    except ServiceError as exc:
        assert 400 <= exc.code < 500


# --- DICOM parts ----------------------------------------------------------------------------


@st.composite
def _damaged_instance(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    if draw(st.booleans()):
        return bytes(data[: draw(st.integers(0, len(data)))])  # truncated
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(128, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(part=st.one_of(st.binary(max_size=600), _damaged_instance()))
def test_read_header_accepts_or_raises_unreadable_instance(part: bytes) -> None:
    TRIED["test_read_header_accepts_or_raises_unreadable_instance"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with suppress(UnreadableInstance):
            read_header(io.BytesIO(part))


@FUZZ
@given(parts=st.lists(st.one_of(st.binary(max_size=300), _damaged_instance()), max_size=3))
def test_stow_of_damaged_parts_answers_4xx_or_stores(
    service: httpx.Client, parts: list[bytes]
) -> None:
    TRIED["test_stow_of_damaged_parts_answers_4xx_or_stores"] += 1
    body, content_type = multipart(parts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about what it reads; the answer counts
        response = service.post(
            f"{DICOMWEB}/studies",
            content=body,
            headers={"content-type": content_type, "accept": "application/dicom+json"},
        )
    assert response.status_code < 500, response.text[:500]
    stow_response = response.headers.get("content-type", "").startswith("application/dicom+json")
    if response.status_code in (400, 409) and stow_response:
        # PS3.18 10.5.3: every part failed, each one named
        assert len(response.json()["00081198"]["Value"]) == len(parts)
    elif response.status_code in (200, 202):
        assert "00081199" in response.json()
    else:
        _google_error(response)


# --- QIDO parameters ------------------------------------------------------------------------

QIDO_KEYS = st.one_of(
    st.sampled_from(
        [
            "PatientName",
            "PatientID",
            "StudyDate",
            "StudyInstanceUID",
            "Modality",
            "00100020",
            "0020000D",
            "limit",
            "offset",
            "includefield",
            "fuzzymatching",
            "AccessionNumber",
            "SOPInstanceUID",
            "StudyDate.foo",
            "00080060",
            "SeriesInstanceUID",
        ]
    ),
    text,
)


@FUZZ
@given(
    level=st.sampled_from(["studies", "series", "instances", "studies/1.2.840.1/series"]),
    query=st.lists(st.tuples(QIDO_KEYS, text), max_size=5),
)
def test_qido_with_random_parameters_answers_4xx_or_results(
    service: httpx.Client, level: str, query: list[tuple[str, str]]
) -> None:
    TRIED["test_qido_with_random_parameters_answers_4xx_or_results"] += 1
    response = service.get(f"{DICOMWEB}/{level}", params=query)
    _google_error(response)
    if response.status_code == 200:
        assert isinstance(response.json(), list)


# --- resource names in URLs -----------------------------------------------------------------

SEGMENTS = st.one_of(
    text,
    st.sampled_from(["..", ".", "%2F", "%00", "%2E%2E", "a%2Fb", "s:deidentify", "%"]),
    st.text(st.characters(codec="utf-8"), min_size=257, max_size=2000),
)
TEMPLATES = [
    f"{LOCATION}/datasets/{{}}",
    f"{DATASET}/dicomStores/{{}}",
    f"{DATASET}/dicomStores/{{}}:getDICOMStoreMetrics",
    f"{DATASET}/operations/{{}}",
    f"{DICOMWEB}/studies/{{}}",
    f"{DICOMWEB}/studies/{{}}/metadata",
    f"{DICOMWEB}/studies/1.2.840.1/series/{{}}/instances",
    f"{DICOMWEB}/studies/1.2.840.1/series/1.2.840.1.1/instances/{{}}",
    f"{DICOMWEB}/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.1/frames/{{}}",
    f"{DICOMWEB}/studies/1.2.840.1/series/1.2.840.1.1/instances/1.2.840.1.1.1/bulkdata/{{}}",
    f"{DICOMWEB}/studies/{{}}:getStudyMetrics",
    "/v1/projects/{}/locations",
]


@FUZZ
@given(
    template=st.sampled_from(TEMPLATES),
    segment=SEGMENTS,
    raw=st.booleans(),
    method=st.sampled_from(["GET", "DELETE", "PATCH", "POST"]),
)
def test_hostile_resource_names_in_urls_answer_4xx(
    service: httpx.Client, template: str, segment: str, raw: bool, method: str
) -> None:
    TRIED["test_hostile_resource_names_in_urls_answer_4xx"] += 1
    name = segment if raw and "/" not in segment and "?" not in segment else quote(segment, "")
    if not name or name in (".", ".."):
        name = quote(segment, "") or "%20"
    if method == "DELETE" and "dicomWeb" not in template and template.count("{}") == 1:
        method = "GET"  # deleting the dataset or store under the fuzzer would end the run early
    try:
        response = service.request(method, template.format(name), content=b"{}")
    except httpx.InvalidURL:
        return  # the client would not send it
    _google_error(response)
    assert service.get(f"{STORE}").status_code == 200


# --- JSON bodies ----------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["labels", "notificationConfig", "name", "timeZone", "streamConfigs", "encryptionSpec"]
)


@FUZZ
@given(
    body=st.one_of(
        JSON,
        st.dictionaries(FIELDS, JSON, max_size=3),
        st.fixed_dictionaries({"labels": st.dictionaries(text, text, max_size=4)}),
    ),
    target=st.sampled_from(
        [
            ("POST", f"{LOCATION}/datasets?datasetId=fuzzed"),
            ("POST", f"{DATASET}/dicomStores?dicomStoreId=fuzzed"),
            ("PATCH", f"{DATASET}/dicomStores/s?updateMask=labels,notificationConfig"),
            ("PATCH", f"{LOCATION}/datasets/d?updateMask=timeZone"),
            ("POST", f"{DATASET}/operations/1:cancel"),
        ]
    ),
    garble=st.booleans(),
)
def test_random_json_bodies_answer_4xx_or_succeed(
    service: httpx.Client, body: object, target: tuple[str, str], garble: bool
) -> None:
    TRIED["test_random_json_bodies_answer_4xx_or_succeed"] += 1
    content = json.dumps(body).encode()
    if garble:
        content = content[: len(content) // 2] + b"\xff{"
    response = service.request(target[0], target[1], content=content)
    _google_error(response)
    for leftover in ("datasets/fuzzed", "datasets/d/dicomStores/fuzzed"):
        service.delete(f"{LOCATION}/{leftover}")


# --- the SQL parser -------------------------------------------------------------------------

KEYWORDS = st.sampled_from(
    [
        "SELECT",
        "INSERT",
        "INTO",
        "UPDATE",
        "DELETE",
        "FROM",
        "WHERE",
        "EXEC",
        "SHOW",
        "DESCRIBE",
        "google.healthcare.dicom_stores",
        "SET",
        "AND",
        "OR",
        "(",
        ")",
        "'",
        "'x'",
        "@",
        "@@json=",
        "=",
        ",",
        ";",
        "/*+ AWAIT */",
        "--",
        "{{ x }}",
        "RETURNING",
        "*",
        "json_extract(",
        "1",
        "data__labels",
        "projectsId",
        "SERVICES",
        "IN",
        "EXTENDED",
        '"',
        "`",
        "$",
        "/*",
    ]
)
SQL = st.one_of(
    st.text(max_size=120),
    st.lists(KEYWORDS, max_size=14).map(" ".join),
)


@FUZZ
@given(sql=SQL)
def test_random_text_is_parsed_or_raises_a_dicomql_error(sql: str) -> None:
    TRIED["test_random_text_is_parsed_or_raises_a_dicomql_error"] += 1
    try:
        for _, piece in split_statements(sql):
            parse(piece)
    except Error:
        pass


@pytest.fixture(scope="module")
def engine(service: httpx.Client):  # type: ignore[no-untyped-def]
    from dicomql.provider.client import Client
    from dicomql.sql.engine import Engine

    return Engine(Client(service))


@FUZZ
@given(sql=SQL, value=text)
def test_random_statements_through_the_engine_raise_only_dicomql_errors(
    engine,
    sql: str,
    value: str,  # type: ignore[no-untyped-def]
) -> None:
    TRIED["test_random_statements_through_the_engine_raise_only_dicomql_errors"] += 1
    with suppress(Error):
        engine.execute(sql, variables={"x": value})


# --- what the fuzzers found, pinned ---------------------------------------------------------


def test_stow_of_an_instance_with_an_unknown_vr_fails_that_part_with_a_400(
    service: httpx.Client,
) -> None:
    damaged = make_instance("1.2.840.7", "1.2.840.7.1", "1.2.840.7.1.1").replace(
        b"\x28\x00\x02\x00US", b"\x28\x00\x02\x00U\x00", 1
    )
    body, content_type = multipart([damaged])
    response = service.post(
        f"{DICOMWEB}/studies",
        content=body,
        headers={"content-type": content_type, "accept": "application/dicom+json"},
    )
    # PS3.18 Table 10.5.3-1: nothing stored, for bad syntax only: 400.
    assert response.status_code == 400, response.text
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]


@pytest.mark.parametrize("sql", ["DELETE FROM (SELECT 1)", "UPDATE (SELECT 1) AS t SET a = 1"])
def test_a_subquery_where_a_resource_belongs_is_a_programming_error(engine, sql: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Error, match="expected a resource"):
        engine.execute(sql)


@pytest.mark.parametrize(
    "query", [{"PatientID": "a\x00b"}, {"PatientName": "\x00", "fuzzymatching": "true"}]
)
def test_a_nul_in_a_search_value_is_a_400_on_every_backend(
    service: httpx.Client, query: dict[str, str]
) -> None:
    response = service.get(f"{DICOMWEB}/studies", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("query", [{"limit": "²"}, {"offset": "١٢"}, {"limit": "1_0"}])
def test_a_non_ascii_digit_in_limit_or_offset_is_a_400(
    service: httpx.Client, query: dict[str, str]
) -> None:
    response = service.get(f"{DICOMWEB}/studies", params=query)
    assert response.status_code == 400, response.text
