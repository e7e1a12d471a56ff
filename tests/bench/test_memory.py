"""The benchmark's peak memory readers: summed PSS counts a page shared by forked processes
once, where summed RSS counts it once per process, and the sampler keeps the peak."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# The repository's bench/ package, not this tests/bench folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.servers import PssSampler, pss_bytes

MB = 1_000_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_pss_of_this_process_is_positive_and_at_most_its_rss() -> None:
    pss = pss_bytes([os.getpid()])

    assert pss is not None
    assert 0 < pss <= rss_bytes(os.getpid())


def test_pss_of_a_process_that_is_gone_is_none() -> None:
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)

    assert pss_bytes([child]) is None


def test_pss_counts_the_pages_a_forked_child_shares_once_where_rss_counts_them_twice() -> None:
    shared = bytearray(b"\x01" * (48 * MB))  # touched, so resident in the parent
    ready_read, ready_write = os.pipe()
    release_read, release_write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(ready_write, b"r")
        os.read(release_read, 1)  # holds the shared pages until the parent has read
        os._exit(0)
    try:
        os.read(ready_read, 1)
        pids = [os.getpid(), child]
        rss = sum(rss_bytes(pid) for pid in pids)
        pss = pss_bytes(pids)
    finally:
        os.write(release_write, b"x")
        os.waitpid(child, 0)
        for fd in (ready_read, ready_write, release_read, release_write):
            os.close(fd)

    assert pss is not None
    assert rss - pss > 0.8 * len(shared)  # the 48 MB counted once, not twice
    del shared


def test_the_sampler_keeps_a_peak_that_has_since_been_freed() -> None:
    with PssSampler(lambda: [os.getpid()], interval=0.01) as sampler:
        baseline = pss_bytes([os.getpid()]) or 0
        held = bytearray(b"\x01" * (40 * MB))
        seen = sampler.samples
        deadline = time.monotonic() + 10
        while sampler.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        del held  # a large block goes back to the kernel at once (malloc's mmap)
    after = pss_bytes([os.getpid()]) or 0

    assert sampler.samples >= seen + 2
    assert sampler.peak is not None
    assert sampler.peak > baseline + 35 * MB
    assert sampler.peak > after + 35 * MB
