"""A fake Sentry ingest endpoint on a loopback port, for tests.

Point a DSN at :attr:`FakeSentry.dsn`; every envelope the SDK sends is kept,
decompressed, as raw bytes in :attr:`FakeSentry.envelopes`.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class FakeSentry:
    """Collects envelopes; use as a context manager."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-sentry", daemon=True
        )

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self._server.server_address[1]}/1"

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` envelopes arrived; False on timeout."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.envelopes) >= count, timeout)

    def received(self) -> bytes:
        with self._lock:
            return b"\n".join(self.envelopes)

    def _keep(self, body: bytes) -> None:
        with self._arrived:
            self.envelopes.append(body)
            self._arrived.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                fake._keep(_decoded(body, self.headers.get("content-encoding", "")))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: object) -> None:
                return None

        return Handler

    def __enter__(self) -> FakeSentry:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        decoded: bytes = brotli.decompress(body)
        return decoded
    return body
