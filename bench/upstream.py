"""A fast fake OpenAI upstream for benchmarks, run in its own process.

A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies) that
answers every POST with a fixed chat completion, or with a fixed SSE stream
when the body asks for ``"stream": true``; an optional delay simulates model
latency.  It is deliberately minimal so that it is never the bottleneck.

    python bench/upstream.py --port 9100 [--delay-ms 0] [--chunks 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the bench."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


def stream_body(chunks: int) -> bytes:
    events = []
    for index in range(chunks):
        delta = (
            {"role": "assistant", "content": ""} if index == 0 else {"content": "x "}
        )
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        events.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": chunks,
            "total_tokens": 12 + chunks,
        },
    }
    events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def response(body: bytes, content_type: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: keep-alive\r\n\r\n"
        + body
    )


class Upstream(asyncio.Protocol):
    def __init__(self, answers: tuple[bytes, bytes], delay: float) -> None:
        self.answers = answers
        self.delay = delay
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4 : end]
            self.buffer = self.buffer[end:]
            streaming = b'"stream": true' in body or b'"stream":true' in body
            answer = self.answers[1] if streaming else self.answers[0]
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._send, answer)
            else:
                self._send(answer)

    def _send(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def serve(port: int, delay: float, chunks: int) -> None:
    answers = (
        response(COMPLETION, b"application/json"),
        response(stream_body(chunks), b"text/event-stream"),
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(answers, delay), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    coroutine = serve(args.port, args.delay_ms / 1000.0, args.chunks)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


if __name__ == "__main__":
    main()
