"""``dicomql serve`` refuses to start when its bearer token is given but blank or unusable: an
empty token file (a secret not mounted yet), ``DICOMQL_AUTH_TOKEN=""``, a whitespace-only
``--auth-token``, on a loopback address as on 0.0.0.0."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dicomql.cli import main


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port already listened on, so that a serve which wrongly got past its checks fails to
    bind (exit 1) instead of serving until the test is killed."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def serve(
    tmp_path: Path, port: int, host: str, *args: str, env: dict[str, str] | None = None
) -> Result:
    clean = {"DICOMQL_AUTH_TOKEN": None, "DICOMQL_DATABASE_URL": None, **(env or {})}
    return CliRunner(env=clean).invoke(  # type: ignore[arg-type]
        main,
        ["serve", "--host", host, "--port", str(port), "--data-dir", str(tmp_path / "d"), *args],
    )


HOSTS = ["127.0.0.1", "0.0.0.0"]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("content", ["", "\n", "  \t\n  \n"])
def test_an_empty_or_blank_token_file_refuses_to_start(
    tmp_path: Path, taken_port: int, host: str, content: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    result = serve(tmp_path, taken_port, host, "--auth-token-file", str(token_file))
    assert result.exit_code == 2, result.output
    assert f"--auth-token-file {token_file}" in result.output
    assert "empty or blank" in result.output


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_token_in_the_environment_refuses_to_start(
    tmp_path: Path, taken_port: int, host: str, value: str
) -> None:
    result = serve(tmp_path, taken_port, host, env={"DICOMQL_AUTH_TOKEN": value})
    assert result.exit_code == 2, result.output
    assert "empty or blank" in result.output


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("value", [" ", "", "\t"])
def test_a_whitespace_only_auth_token_refuses_to_start(
    tmp_path: Path, taken_port: int, host: str, value: str
) -> None:
    result = serve(tmp_path, taken_port, host, "--auth-token", value)
    assert result.exit_code == 2, result.output
    assert "empty or blank" in result.output


def test_a_token_file_of_two_lines_refuses_to_start(tmp_path: Path, taken_port: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\nother\n")
    result = serve(tmp_path, taken_port, "127.0.0.1", "--auth-token-file", str(token_file))
    assert result.exit_code == 2, result.output
    assert "printable ASCII" in result.output


def test_a_token_and_a_token_file_together_refuse_to_start(tmp_path: Path, taken_port: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    result = serve(
        tmp_path, taken_port, "127.0.0.1", "--auth-token-file", str(token_file),
        env={"DICOMQL_AUTH_TOKEN": "other"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "not both" in result.output


def test_an_unreadable_token_file_is_a_clear_error(tmp_path: Path, taken_port: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfe not text")
    result = serve(tmp_path, taken_port, "127.0.0.1", "--auth-token-file", str(token_file))
    assert result.exit_code == 2, result.output
    assert "cannot read the token" in result.output
