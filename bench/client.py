"""The one DICOMweb client the benchmark drives every server with: httpx, keep-alive, one
connection per client, STOW-RS multipart, QIDO-RS and WADO-RS (PS3.18 §10.5, §10.6, §10.4)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

DICOM_JSON = "application/dicom+json"
# `transfer-syntax=*` asks for the instance as stored (PS3.18 §8.7.3.5.2), so no server
# transcodes and both move the same bytes.
MULTIPART_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
MULTIPART_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STOW_FAILED_SOP_SEQUENCE = "00081198"
STOW_REFERENCED_SOP_SEQUENCE = "00081199"


class BenchClientError(Exception):
    """A server answered a benchmark request with something other than success."""


@dataclass(frozen=True)
class StoreResult:
    stored: int
    failed: int


@dataclass(frozen=True)
class Throughput:
    """What a timed run moved: requests, instances and payload bytes in ``seconds``."""

    requests: int
    instances: int
    payload_bytes: int
    seconds: float
    failed: int = 0

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds if self.seconds else 0.0


def multipart_body(parts: Iterable[bytes], boundary: str) -> bytes:
    """A ``multipart/related`` body (RFC 2387) of ``application/dicom`` parts."""
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    chunks: list[bytes] = []
    for part in parts:
        chunks += [head, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def body_chunks(body: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """``body`` in ``size`` pieces, for httpx to send.

    httpcore's synchronous socket write does ``buffer = buffer[n:]`` after each ``send()``, which
    copies the unsent rest every time: a 13 MB body given as one ``bytes`` uploads at about
    35 MB/s on loopback, the same body in 1 MB pieces at over 1 GB/s.
    """
    view = memoryview(body)
    for start in range(0, len(body), size):
        yield bytes(view[start : start + size])


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    """The parts' payloads of a ``multipart/related`` response (headers dropped)."""
    boundary = _parameter(content_type, "boundary")
    if boundary is None:
        raise BenchClientError(f"no boundary in {content_type!r}")
    delimiter = b"--" + boundary.encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload.removesuffix(b"\r\n"))
    return parts


def _parameter(content_type: str, name: str) -> str | None:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == name:
            return value.strip().strip('"')
    return None


class DicomWebClient:
    """A keep-alive client of one DICOMweb base URL, holding at most one connection."""

    def __init__(self, base_url: str, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise BenchClientError(
                f"{response.request.method} {response.request.url} -> {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response

    def store(self, instances: list[bytes]) -> StoreResult:
        """STOW-RS of ``instances`` in one request; counts stored and failed SOP instances."""
        boundary = secrets.token_hex(16)
        body = multipart_body(instances, boundary)
        response = self.http.post(
            "/studies",
            content=body_chunks(body),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Content-Length": str(len(body)),
                "Accept": DICOM_JSON,
            },
        )
        # 202, 400 and 409 carry a FailedSOPSequence naming what was not stored (PS3.18 §10.5.3).
        if response.status_code not in (200, 202, 400, 409):
            self._check(response)
        body = response.json() if response.content else {}
        failed = len(body.get(STOW_FAILED_SOP_SEQUENCE, {}).get("Value", []))
        stored = len(body.get(STOW_REFERENCED_SOP_SEQUENCE, {}).get("Value", []))
        return StoreResult(stored=stored, failed=failed)

    def search(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """QIDO-RS: the matches as DICOM JSON (an empty 204 body is no matches).

        ``*`` and ``^`` go unescaped: Orthanc 1.10's DICOMweb plugin 1.7 does not percent-decode
        query values, so ``PatientName=SMI%2A`` matches nothing there; every server gets the
        same query bytes.
        """
        if params:
            path = f"{path}?{urlencode(params, safe='*^,')}"
        response = self._check(self.http.get(path, headers={"Accept": DICOM_JSON}))
        if response.status_code == 204 or not response.content:
            return []
        result: list[dict[str, Any]] = response.json()
        return result

    def retrieve(self, path: str, accept: str = MULTIPART_DICOM) -> httpx.Response:
        """WADO-RS of a study, series, instance, frames or rendered path, fully read."""
        return self._check(self.http.get(path, headers={"Accept": accept}))

    def retrieve_streamed(self, path: str, accept: str = MULTIPART_DICOM) -> int:
        """WADO-RS read and discarded chunk by chunk (large studies); returns the bytes read."""
        total = 0
        with self.http.stream("GET", path, headers={"Accept": accept}) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for chunk in response.iter_raw(1 << 20):
                total += len(chunk)
        return total

    def metadata(self, path: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._check(
            self.http.get(f"{path}/metadata", headers={"Accept": DICOM_JSON})
        ).json()
        return result


class ClientPool:
    """``connections`` clients of one base URL, each on its own thread and connection."""

    def __init__(self, base_url: str, connections: int) -> None:
        self.clients = [DicomWebClient(base_url) for _ in range(connections)]

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store_batches(self, batches: Iterator[list[bytes]]) -> Throughput:
        """Store every batch, one request each, the pool's connections pulling from one queue.

        Batches are rendered inside the timed window, but rendering is a header splice
        (microseconds), the same for every server.
        """
        lock = threading.Lock()
        totals = {"requests": 0, "instances": 0, "bytes": 0, "failed": 0}

        def next_batch() -> list[bytes] | None:
            with lock:
                return next(batches, None)

        def worker(client: DicomWebClient) -> None:
            while (batch := next_batch()) is not None:
                result = client.store(batch)
                with lock:
                    totals["requests"] += 1
                    totals["instances"] += len(batch)
                    totals["bytes"] += sum(len(part) for part in batch)
                    totals["failed"] += result.failed

        return self._timed(worker, totals)

    def _timed(
        self, worker: Callable[[DicomWebClient], None], totals: dict[str, int]
    ) -> Throughput:
        start = time.perf_counter()
        with ThreadPoolExecutor(len(self.clients)) as executor:
            for future in [executor.submit(worker, client) for client in self.clients]:
                future.result()
        seconds = time.perf_counter() - start
        return Throughput(
            requests=totals["requests"],
            instances=totals["instances"],
            payload_bytes=totals["bytes"],
            seconds=seconds,
            failed=totals["failed"],
        )


def batched(instances: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for instance in instances:
        batch.append(instance)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def timed(call: Callable[[], object]) -> float:
    """Seconds one call took (perf_counter)."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile; p95 of 20 samples is the 19th smallest."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]
