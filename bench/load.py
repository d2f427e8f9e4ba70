"""A load generator in its own process: keep-alive HTTP/1.1 over raw sockets.

It opens ``--concurrency`` connections, each sending the same request back to
back for ``--seconds``, and prints one JSON object: requests, errors, req/s,
latency percentiles and, for streams, time to first byte.  Raw sockets keep
the client far cheaper than the servers it measures.

    python bench/load.py --url http://127.0.0.1:8080/v1/chat/completions \\
        --key sg-... --concurrency 8 --seconds 10 [--stream]

``--keys-file`` (one API key a line) sends each request with the next key of
the file, round robin, instead of one ``--key``: with more keys than
requests, no key is presented twice.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

BODY = {
    "model": "bench-model",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 32,
}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)
    """Connections that broke, by what broke them (after how many requests)."""


def build_request(url: str, key: str | None, stream: bool, model: str) -> bytes:
    parts = urlsplit(url)
    body = json.dumps({**BODY, "model": model, "stream": stream}).encode()
    headers = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if key:
        headers.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def read_response(
    reader: asyncio.StreamReader,
) -> tuple[int, float | None, bool]:
    """Read one response: its status, when its first body byte came, and
    whether the server closes the connection after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lines = head.lower().split(b"\r\n")
    closing = b"connection: close" in lines
    status_and_first = await _read_body(reader, status, lines)
    return (*status_and_first, closing)


async def _read_body(
    reader: asyncio.StreamReader, status: int, lines: list[bytes]
) -> tuple[int, float | None]:
    first_byte: float | None = None
    if any(line.startswith(b"transfer-encoding: chunked") for line in lines):
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.strip().split(b";")[0], 16)
            if first_byte is None:
                first_byte = time.perf_counter()
            await reader.readexactly(size + 2)
            if size == 0:
                return status, first_byte
    length = next(
        (
            int(line.split(b":")[1])
            for line in lines
            if line.startswith(b"content-length:")
        ),
        0,
    )
    if length:
        await reader.readexactly(1)
        first_byte = time.perf_counter()
        await reader.readexactly(length - 1)
    return status, first_byte


async def connection(
    host: str, port: int, requests: Iterator[bytes], until: float, tally: Tally
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    served = 0
    try:
        while time.perf_counter() < until:
            request = next(requests)
            started = time.perf_counter()
            served += 1
            writer.write(request)
            try:
                status, first_byte, closing = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                tally.errors += 1
                kind = f"{type(exc).__name__} after {served} requests"
                tally.broken[kind] = tally.broken.get(kind, 0) + 1
                served = 0
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            ended = time.perf_counter()
            if closing:  # e.g. the server's keep-alive request limit
                served = 0
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            tally.statuses[status] = tally.statuses.get(status, 0) + 1
            if status != 200:
                tally.errors += 1
                continue
            tally.latencies.append(ended - started)
            if first_byte is not None:
                tally.first_bytes.append(first_byte - started)
    finally:
        writer.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index] * 1000.0


def request_cycle(args: argparse.Namespace) -> Iterator[bytes]:
    """The requests to send, endlessly: one per key of ``--keys-file``, in
    turn, or the one request of ``--key``."""
    keys: list[str | None] = [args.key]
    if args.keys_file:
        keys = list(Path(args.keys_file).read_text().split())
    return itertools.cycle(
        [build_request(args.url, key, args.stream, args.model) for key in keys]
    )


async def run(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    requests = request_cycle(args)
    tally = Tally()
    warm_until = time.perf_counter() + args.warmup
    await asyncio.gather(
        *(
            connection(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                requests,
                warm_until,
                Tally(),
            )
            for _ in range(args.concurrency)
        )
    )
    started = time.perf_counter()
    until = started + args.seconds
    await asyncio.gather(
        *(
            connection(
                parts.hostname or "127.0.0.1", parts.port or 80, requests, until, tally
            )
            for _ in range(args.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    return {
        "requests": len(tally.latencies),
        "errors": tally.errors,
        "statuses": tally.statuses,
        "broken_connections": tally.broken,
        "rps": len(tally.latencies) / elapsed,
        "p50_ms": percentile(tally.latencies, 0.50),
        "p90_ms": percentile(tally.latencies, 0.90),
        "p99_ms": percentile(tally.latencies, 0.99),
        "mean_ms": statistics.fmean(tally.latencies) * 1000
        if tally.latencies
        else None,
        "ttfb_p50_ms": percentile(tally.first_bytes, 0.50),
        "ttfb_p90_ms": percentile(tally.first_bytes, 0.90),
        "ttfb_p99_ms": percentile(tally.first_bytes, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key")
    parser.add_argument("--keys-file", help="one API key a line, used in turn")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
