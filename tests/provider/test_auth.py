"""Authentication flows: google-auth credentials refresh before use and once after a 401.

Google's token endpoint and API are faked with ``httpx.MockTransport`` (see
tests/support/google_double.py); the credentials are real google-auth objects built offline.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from google.oauth2.credentials import Credentials as UserCredentials

from dicomql.auth import (
    CLOUD_PLATFORM_SCOPE,
    BearerAuth,
    GoogleAuth,
    load_google_credentials,
)
from dicomql.errors import OperationalError
from tests.support.google_double import (
    CLIENT_EMAIL,
    TOKEN_URI,
    GoogleDouble,
    google_error,
    jwt_claims,
    service_account_key,
)

API = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return service_account_key(tmp_path_factory.mktemp("keys") / "key.json")


def client_for(double: GoogleDouble, auth: httpx.Auth) -> httpx.Client:
    return httpx.Client(transport=double.transport, auth=auth)


def test_service_account_token_is_fetched_once_and_sent_as_bearer(key_file: Path) -> None:
    double = GoogleDouble(lambda request: httpx.Response(200, json={}))
    credentials = load_google_credentials(str(key_file))
    refresh = httpx.Client(transport=double.transport)
    with client_for(double, GoogleAuth(credentials, refresh)) as client:
        client.get(API)
        client.get(API)

    assert [r.headers["Authorization"] for r in double.api_requests] == [
        "Bearer ya29.first",
        "Bearer ya29.first",
    ]
    (token_request,) = double.token_requests
    assert token_request.method == "POST"
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = jwt_claims(form["assertion"][0])
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["aud"] == TOKEN_URI
    assert claims["scope"] == CLOUD_PLATFORM_SCOPE


def test_a_401_refreshes_the_token_and_retries_once(key_file: Path) -> None:
    answers = [google_error(401, "UNAUTHENTICATED", "token revoked"), httpx.Response(200, json={})]
    double = GoogleDouble(lambda request: answers.pop(0))
    refresh = httpx.Client(transport=double.transport)
    auth = GoogleAuth(load_google_credentials(str(key_file)), refresh)
    with client_for(double, auth) as client:
        response = client.get(API)

    assert response.status_code == 200
    assert [r.headers["Authorization"] for r in double.api_requests] == [
        "Bearer ya29.first",
        "Bearer ya29.second",
    ]
    assert len(double.token_requests) == 2


def test_a_second_401_is_returned_not_retried_forever(key_file: Path) -> None:
    double = GoogleDouble(lambda request: google_error(401, "UNAUTHENTICATED", "no access"))
    refresh = httpx.Client(transport=double.transport)
    auth = GoogleAuth(load_google_credentials(str(key_file)), refresh)
    with client_for(double, auth) as client:
        response = client.get(API)

    assert response.status_code == 401
    assert len(double.api_requests) == 2


def test_expired_user_credentials_are_refreshed_before_the_request() -> None:
    double = GoogleDouble(lambda request: httpx.Response(200, json={}), tokens=["ya29.fresh"])
    credentials = UserCredentials(
        token="ya29.stale",
        refresh_token="1//refresh",
        token_uri=TOKEN_URI,
        client_id="client",
        client_secret="secret",
        expiry=dt.datetime(2000, 1, 1),
    )
    with client_for(double, GoogleAuth(credentials, httpx.Client(transport=double.transport))) as c:
        c.get(API)

    assert double.api_requests[0].headers["Authorization"] == "Bearer ya29.fresh"
    form = parse_qs(double.token_requests[0].content.decode())
    assert form["grant_type"] == ["refresh_token"]
    assert form["refresh_token"] == ["1//refresh"]


def test_a_valid_token_is_used_without_refreshing() -> None:
    double = GoogleDouble(lambda request: httpx.Response(200, json={}))
    with client_for(double, GoogleAuth(UserCredentials(token="ya29.given"))) as client:
        client.get(API)
    assert double.api_requests[0].headers["Authorization"] == "Bearer ya29.given"
    assert double.token_requests == []


def test_a_401_with_credentials_that_cannot_refresh_is_returned() -> None:
    double = GoogleDouble(lambda request: google_error(401, "UNAUTHENTICATED", "expired"))
    with client_for(double, GoogleAuth(UserCredentials(token="ya29.given"))) as client:
        response = client.get(API)
    assert response.status_code == 401
    assert len(double.api_requests) == 1


def test_bearer_auth_sets_the_authorization_header() -> None:
    double = GoogleDouble(lambda request: httpx.Response(200, json={}))
    with client_for(double, BearerAuth("s3cret")) as client:
        client.get(API)
    assert double.api_requests[0].headers["Authorization"] == "Bearer s3cret"


def test_a_file_that_is_not_a_key_gives_an_operational_error(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text('{"type": "nonsense"}')
    with pytest.raises(OperationalError, match="could not load Google credentials"):
        load_google_credentials(str(path))
