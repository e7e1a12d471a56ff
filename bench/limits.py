"""The machine's own ceilings, measured with the bytes the servers are given: write + fsync +
rename and read-back of instance files on the benchmark's disk, and a plain loopback HTTP
transfer of a static file (download and upload) through the same httpx client.

Run as ``python -m bench.limits serve PORT FILE`` it is the static-file server itself.
"""

from __future__ import annotations

import os
import socketserver
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.client import body_chunks
from bench.servers import ServerProcess, free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Limit:
    """One ceiling: ``files`` of ``payload_bytes`` in all moved in ``seconds``."""

    name: str
    files: int
    payload_bytes: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "mb_per_s": round(self.megabytes_per_second, 1),
            "files_per_s": round(self.files_per_second, 1),
        }


def disk_write_fsync(directory: Path, payloads: Sequence[bytes]) -> Limit:
    """Each payload to its own file: temp write, fsync, rename (what a durable blob store does)."""
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for index, payload in enumerate(payloads):
        temporary = directory / f".{index}.tmp"
        with temporary.open("wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        temporary.rename(directory / f"{index}.dcm")
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    seconds = time.perf_counter() - start
    return Limit("disk write+fsync", len(payloads), sum(map(len, payloads)), seconds)


def disk_read(directory: Path) -> Limit:
    """Read back every file just written; they are in the page cache, as a hot store's are."""
    paths = sorted(directory.glob("*.dcm"))
    start = time.perf_counter()
    total = sum(len(path.read_bytes()) for path in paths)
    return Limit("disk read (page cache)", len(paths), total, time.perf_counter() - start)


def _static_app(path: Path):  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Route

    async def download(request: Request) -> FileResponse:
        return FileResponse(path, media_type="application/octet-stream")

    async def upload(request: Request) -> PlainTextResponse:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        return PlainTextResponse(str(size))

    return Starlette(routes=[Route("/file", download), Route("/upload", upload, methods=["POST"])])


class StaticServer(ServerProcess):
    """One file served over loopback, by ``kind``: ``sendfile`` (a bare socket server, the
    kernel copying the file: what the client and loopback can do) or ``uvicorn`` (uvicorn +
    Starlette, dicomql's HTTP stack with nothing behind it)."""

    def __init__(self, kind: str, path: Path, log_path: Path) -> None:
        port = free_port()
        command = [sys.executable, "-m", "bench.limits", kind, str(port), str(path)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        super().__init__(command, port, log_path, env=env)
        self.name = f"static file ({kind})"


def loopback_http(work_dir: Path, payload: bytes, kind: str, repeats: int = 3) -> list[Limit]:
    """Best of ``repeats`` GETs and POSTs of ``payload`` over one keep-alive connection."""
    path = work_dir / "static.bin"
    path.write_bytes(payload)
    server = StaticServer(kind, path, work_dir / f"static-{kind}.log")
    server.start("/ready")
    downloads, uploads = [], []
    try:
        with httpx.Client(base_url=server.url, timeout=600) as http:
            for _ in range(repeats):
                start = time.perf_counter()
                size = 0
                with http.stream("GET", "/file") as response:
                    for chunk in response.iter_raw(1 << 20):
                        size += len(chunk)
                seconds = time.perf_counter() - start
                downloads.append(Limit(f"loopback HTTP GET ({kind})", 1, size, seconds))
                start = time.perf_counter()
                response = http.post(
                    "/upload",
                    content=body_chunks(payload),
                    headers={"Content-Length": str(len(payload))},
                )
                seconds = time.perf_counter() - start
                uploads.append(
                    Limit(f"loopback HTTP POST ({kind})", 1, int(response.text), seconds)
                )
    finally:
        server.stop()
        path.unlink()
    return [
        min(downloads, key=lambda limit: limit.seconds),
        min(uploads, key=lambda limit: limit.seconds),
    ]


def measure(work_dir: Path, payloads: Sequence[bytes], http_bytes: int) -> list[Limit]:
    """All ceilings, on ``work_dir``'s disk, with ``payloads`` as the instance files."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="limits-") as scratch:
        directory = Path(scratch) / "files"
        write = disk_write_fsync(directory, payloads)
        read = disk_read(directory)
        blob = b"".join(payloads)
        payload = (blob * (http_bytes // max(len(blob), 1) + 1))[:http_bytes]
        return [
            write,
            read,
            *loopback_http(Path(scratch), payload, "sendfile"),
            *loopback_http(Path(scratch), payload, "uvicorn"),
        ]


class _SendfileHandler(socketserver.StreamRequestHandler):
    """Just enough HTTP/1.1 for one keep-alive client: GET sends the file with sendfile(2),
    POST reads Content-Length bytes into one reused buffer."""

    path: Path

    def handle(self) -> None:
        buffer = bytearray(1 << 20)
        while request_line := self.rfile.readline():
            headers = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if request_line.startswith(b"POST"):
                remaining = int(headers.get("content-length", "0"))
                view = memoryview(buffer)
                while remaining:
                    read = self.rfile.readinto(view[: min(remaining, len(buffer))])
                    if not read:
                        return
                    remaining -= read
                body = headers.get("content-length", "0").encode()
                self.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                self.wfile.flush()
                continue
            if request_line.split()[1] != b"/file":
                self.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                self.wfile.flush()
                continue
            size = self.path.stat().st_size
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % size
            )
            self.wfile.flush()
            with self.path.open("rb") as file:
                self.connection.sendfile(file)


def _serve_sendfile(port: int, path: Path) -> None:
    handler = type("Handler", (_SendfileHandler,), {"path": path})
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), handler) as server:
        server.serve_forever()


def _serve(port: int, path: Path) -> None:
    import uvicorn

    uvicorn.run(
        _static_app(path), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    servers = {"sendfile": _serve_sendfile, "uvicorn": _serve}
    if len(sys.argv) == 4 and sys.argv[1] in servers:
        servers[sys.argv[1]](int(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m bench.limits sendfile|uvicorn PORT FILE")
