from __future__ import annotations

import httpx


def test_unknown_path_answers_in_googles_error_shape(embedded: httpx.Client) -> None:
    response = embedded.get("/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": "The requested URL /v1/nothing/here was not found on this server.",
            "status": "NOT_FOUND",
        }
    }


def test_live_server_answers_over_loopback(http: httpx.Client) -> None:
    response = http.get("/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"
