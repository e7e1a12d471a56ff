"""Operations, Ctrl-C and the terminal, each through the real CLI: an operation started without
AWAIT on the embedded backend is finished before ``dicomql exec`` exits; Ctrl-C during an AWAIT
names the operation and how to await it; Ctrl-C in ``dicomql shell`` cancels the statement and
returns to the prompt; wide results switch to the expanded display, and ``\\x`` toggles it
(the shell driven through a pseudo-terminal, as a person would)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from dicomql.cli import main

AT = "@projectsId='p', @locationsId='us', @datasetsId='ds', @dicomStoresId='s'"
SETUP = (
    "INSERT /*+ AWAIT */ INTO google.healthcare.datasets (projectsId, locationsId, datasetId)"
    " SELECT 'p', 'us', 'ds';"
    "INSERT INTO google.healthcare.dicom_stores (projectsId, locationsId, datasetsId,"
    " dicomStoreId) SELECT 'p', 'us', 'ds', 's';"
)
DEADLINE = 180.0


def files(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        shutil.copy(get_testdata_file("CT_small.dcm"), folder / f"{index}.dcm")
    return folder


def import_statement(folder: Path, await_: bool) -> str:
    hint = "/*+ AWAIT */ " if await_ else ""
    return (
        f"EXEC {hint}google.healthcare.dicom_stores.import {AT} "
        f"""@@json='{{"gcsSource": {{"uri": "{folder}/*.dcm"}}}}'"""
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    result = CliRunner().invoke(main, ["exec", SETUP, "--data-dir", str(path)])
    assert result.exit_code == 0, result.output
    return path


def test_an_operation_started_without_await_finishes_before_exec_exits(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = files(tmp_path / "in", 4)
    args = ["--data-dir", str(data_dir), "--import-root", str(folder)]
    result = CliRunner().invoke(main, ["exec", import_statement(folder, False), *args])
    assert result.exit_code == 0, result.output
    assert "started" in result.stderr
    assert "Waiting for operation projects/p/locations/us/datasets/ds/operations/" in (
        result.stderr
    )
    assert "done: 4 succeeded, 0 failed" in result.stderr
    listed = CliRunner().invoke(
        main,
        [
            "exec",
            "SELECT done FROM google.healthcare.operations WHERE projectsId = 'p' "
            "AND locationsId = 'us' AND datasetsId = 'ds'",
            "-o",
            "csv",
            *args,
        ],
    )
    assert listed.stdout.splitlines()[1:] == ["true", "true"]  # the dataset's and the import


class Terminal:
    """A dicomql process on a pseudo-terminal: what it prints, and keys or signals sent."""

    def __init__(self, *args: str, columns: int = 160) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMQL_")}
        env["TERM"] = "xterm"
        env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # no cursor-position request to answer
        # rich reads COLUMNS before the terminal's size: an inherited value (pytest-xdist's
        # workers have one) would override the pty's.
        env["COLUMNS"], env["LINES"] = str(columns), "40"
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: sizes its terminal, then becomes dicomql
            # Sized here, before exec: sized by the parent after fork, a loaded machine could
            # run the child's start first, and it read an unsized terminal (80 columns).
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
            # A terminal starts a program with no signal blocked or ignored; the test process
            # may have either (a signal mask and SIG_IGN survive exec), and Ctrl-C would be lost.
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "dicomql.cli", *args], env)
        self.output = ""

    def expect(self, text: str, after: int = 0, context: str = "") -> int:
        """Wait until ``text`` is printed after offset ``after``; return the offset past it.
        ``context`` is added to the failure message."""
        deadline = time.monotonic() + DEADLINE
        while (found := self.output.find(text, after)) < 0:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"never printed {text!r}{context}; printed: {self.output[-3000:]!r}"
            )
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the process has ended
                    chunk = b""
                if not chunk:
                    assert text in self.output[after:], (
                        f"ended before {text!r}{context}: {self.output[-3000:]!r}"
                    )
                self.output += chunk.decode(errors="replace")
        return found + len(text)

    def signal_state(self) -> str:
        """The process's pending, blocked, ignored and caught signals (for a failure message)."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                lines = [line.strip() for line in status if line.startswith(("Sig", "ShdPnd"))]
        except OSError:
            return ""
        return " (signals after Ctrl-C: " + ", ".join(lines) + ")"

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self) -> int:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                self.expect("\x00never\x00", len(self.output))
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError("the process did not end")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def test_ctrl_c_during_await_names_the_operation_and_how_to_await_it(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = files(tmp_path / "in", 600)
    terminal = Terminal(
        "exec", import_statement(folder, True), "--data-dir", str(data_dir),
        "--import-root", str(folder),
    )  # fmt: skip
    try:
        terminal.expect("ImportDicomData")  # the AWAIT's progress bar: it is polling
        os.kill(terminal.pid, signal.SIGINT)
        state = terminal.signal_state()
        after = terminal.expect(
            "Interrupted: operation projects/p/locations/us/datasets/ds/", context=state
        )
        terminal.expect("EXEC /*+ AWAIT */ google.healthcare.operations.get", after)
        assert terminal.wait() == 130
        assert "Traceback" not in terminal.output
    finally:
        terminal.close()


def test_ctrl_c_in_the_shell_cancels_the_statement_and_returns_to_the_prompt(
    data_dir: Path, tmp_path: Path
) -> None:
    folder = files(tmp_path / "in", 600)
    terminal = Terminal(
        "shell", "--data-dir", str(data_dir), "--import-root", str(folder),
        "--history", str(tmp_path / "history"), "-o", "csv",
    )  # fmt: skip
    try:
        at = terminal.expect("dicomql>")
        terminal.send(import_statement(folder, True) + ";\r")
        at = terminal.expect("ImportDicomData", at)
        terminal.send("\x03")  # Ctrl-C, as the terminal's line discipline turns it into SIGINT
        at = terminal.expect("Interrupted: operation", at, context=terminal.signal_state())
        at = terminal.expect("dicomql>", at)
        terminal.send("SHOW SERVICES;\r")
        at = terminal.expect("google.healthcare,Cloud Healthcare API,v1", at)
        terminal.send(".exit\r")
        assert terminal.wait() == 0
        assert "Traceback" not in terminal.output
    finally:
        terminal.close()


def test_a_wide_result_is_expanded_in_a_narrow_terminal_and_backslash_x_toggles_it(
    data_dir: Path, tmp_path: Path
) -> None:
    terminal = Terminal(
        "shell", "--data-dir", str(data_dir), "--history", str(tmp_path / "history"),
        columns=60,
    )  # fmt: skip
    select_stores = (
        "SELECT name, labels FROM google.healthcare.dicom_stores WHERE projectsId = 'p' "
        "AND locationsId = 'us' AND datasetsId = 'ds';\r"
    )
    try:
        at = terminal.expect("dicomql>")
        terminal.send(select_stores)  # the store's name alone is wider than 60 columns
        at = terminal.expect("-[ RECORD 1 ]", at)
        at = terminal.expect("name   | projects/p/locations/us/datasets/ds/dicomStores/s", at)
        terminal.send("\\x off\r")
        at = terminal.expect("Expanded display is off.", at)
        terminal.send(select_stores)
        at = terminal.expect("/dicomStores \u2502", at)  # rich's table, the name folded to fit
        assert "RECORD" not in terminal.output[at:]
        terminal.send("\\x\r")
        at = terminal.expect("Expanded display is on.", at)
        terminal.send("SHOW SERVICES;\r")
        at = terminal.expect("-[ RECORD 1 ]", at)
        terminal.send(".exit\r")
        assert terminal.wait() == 0
    finally:
        terminal.close()
