"""A fake OpenAI-compatible upstream for tests: a real HTTP/1.1 server.

It listens on 127.0.0.1 on a free port and runs its own event loop in a
background thread, so synchronous and asynchronous tests use it alike::

    with FakeUpstream(expected_key="sk-test") as up:
        up.script([Reply(status=503, headers={"retry-after": "2"}), Reply()])
        ...  # point a provider at up.base_url ("http://127.0.0.1:PORT/v1")
        assert up.calls == 2

It answers ``POST /v1/chat/completions`` (JSON, or SSE when the body says
``"stream": true``), ``POST /v1/embeddings`` and ``GET /v1/models`` with
bodies that validate against OpenAI's schemas and report fixed usage.  Each
request takes the next scripted :class:`Reply`, then the default one; a reply
can delay, fail with any status, reset the connection, send garbage, cut a
stream, slow it down or hold it until the test releases it.  Every request is
recorded.  Anything that goes wrong inside the server itself is raised when it
stops, so a bug in the fake fails the test that met it.

The server speaks HTTP/1.1 through h11 on asyncio streams: that keeps the
connection in the test's hands (a reset is a real TCP reset, a cut stream a
real unfinished chunked body).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, NamedTuple

import anyio
import h11
import orjson

log = logging.getLogger(__name__)

DEFAULT_CONTENT = "Hello from the fake upstream."
DEFAULT_MODELS = ("fake-model", "fake-embedding")
START_SECONDS = 10.0
GARBAGE = b'{"id": "chatcmpl-'
"""What ``Reply(garbage=True)`` sends: the start of a body, cut short."""


@dataclass(frozen=True)
class Reply:
    """How the fake answers one request (the defaults: a normal answer)."""

    status: int = 200
    """Any status but 200 sends ``body``, or an OpenAI error body."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after": "2"}``."""
    body: Any = None
    """A JSON body to send instead of the endpoint's answer."""
    content: str | None = None
    """The assistant's text (default: the upstream's ``content``)."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    reset: bool = False
    """Reset the connection (TCP RST) instead of answering."""
    garbage: bool = False
    """Answer 200 with a body that is not JSON."""
    stream_cut_after: int | None = None
    """Send this many events of a stream, then close the connection."""
    chunk_delay: float = 0.0
    """Seconds to wait after each event of a stream."""
    omit_usage: bool = False
    """Report no usage: no ``usage`` in a body, no usage event in a stream."""
    omit_done: bool = False
    """End a stream cleanly but without ``data: [DONE]``."""
    hold: threading.Event | None = None
    """Pause a stream after ``hold_after`` events until this is set (or the
    client hangs up)."""
    hold_after: int = 1


class RecordedRequest(NamedTuple):
    """One request the fake received; header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeUpstream:
    """An OpenAI-compatible server for tests; see the module docstring."""

    def __init__(
        self,
        *,
        expected_key: str | None = None,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        cached_tokens: int = 0,
        content: str = DEFAULT_CONTENT,
        models: Iterable[str] = DEFAULT_MODELS,
        default: Reply | None = None,
    ) -> None:
        self.expected_key = expected_key
        """When set, requests without ``Authorization: Bearer <it>`` get 401."""
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.content = content
        self.models = tuple(models)
        self.default = default or Reply()
        """The reply once the script is used up."""

        self._lock = threading.Lock()
        self._hung_up = threading.Condition(self._lock)
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._abandoned = 0
        self._server = _Server(self)
        self._thread: threading.Thread | None = None

    # -- the test's side ---------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        """The API root, as OpenAI's SDK and the openai provider take it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, replies: Iterable[Reply]) -> None:
        """Queue replies for the next requests, in order (after any queued)."""
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def abandoned(self) -> int:
        """Streams the client hung up on before their end."""
        with self._lock:
            return self._abandoned

    def wait_abandoned(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until ``count`` streams were abandoned; False on timeout."""
        with self._hung_up:
            return self._hung_up.wait_for(lambda: self._abandoned >= count, timeout)

    async def hung_up(self, count: int) -> bool:
        """:meth:`wait_abandoned` (5 s) for a client in this process's event
        loop, which must keep running to close its connection."""
        return await anyio.to_thread.run_sync(self.wait_abandoned, count)

    def start(self) -> FakeUpstream:
        self._thread = threading.Thread(
            target=self._server.run, name="fake-upstream", daemon=True
        )
        self._thread.start()
        if not self._server.ready.wait(START_SECONDS) or not self._server.port:
            raise RuntimeError(f"the fake upstream did not start: {self._errors}")
        return self

    def stop(self, *, check: bool = True) -> None:
        """Stop serving; with ``check``, raise what went wrong inside."""
        if self._thread is not None:
            self._server.stop()
            self._thread.join(START_SECONDS)
            if self._thread.is_alive():
                raise RuntimeError("the fake upstream did not stop within 10 s")
            self._thread = None
        if check and self._errors:
            raise AssertionError(
                "the fake upstream failed while serving:\n" + "\n".join(self._errors)
            )

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop(check=exc_type is None)

    # -- the server's side -------------------------------------------------

    def _admit(self, request: RecordedRequest) -> Reply:
        """Record ``request`` and choose its reply."""
        with self._lock:
            self._requests.append(request)
            if not self._authorized(request):
                return Reply(status=401, body=error_body(401, "Incorrect API key."))
            return self._script.popleft() if self._script else self.default

    def _authorized(self, request: RecordedRequest) -> bool:
        if self.expected_key is None:
            return True
        if request.headers.get("x-api-key") == self.expected_key:
            return True  # Anthropic's Messages API
        return request.headers.get("authorization") == f"Bearer {self.expected_key}"

    def _note_abandoned(self) -> None:
        with self._hung_up:
            self._abandoned += 1
            self._hung_up.notify_all()

    def _note_error(self, what: str) -> None:
        with self._lock:
            self._errors.append(what)

    def _usage(self, reply: Reply) -> dict[str, Any] | None:
        if reply.omit_usage:
            return None
        return usage_body(
            self.prompt_tokens, self.completion_tokens, self.cached_tokens
        )

    def _anthropic_usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.prompt_tokens - self.cached_tokens,
            "output_tokens": self.completion_tokens,
            "cache_read_input_tokens": self.cached_tokens,
            "cache_creation_input_tokens": 0,
        }


# -- what the fake says ------------------------------------------------------


def usage_body(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """An OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI error body."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = "invalid_api_key" if status == 401 else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def chat_completion(model: str, content: str, usage: dict[str, Any] | None) -> Any:
    """A whole ``chat.completion`` body."""
    message = {"role": "assistant", "content": content, "refusal": None}
    body: dict[str, Any] = {
        **_head(model),
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def stream_events(
    model: str,
    content: str,
    usage: dict[str, Any] | None,
    *,
    include_usage: bool,
    done: bool = True,
) -> Iterator[bytes]:
    """The SSE events of a streamed answer: role, one event per word, finish,
    usage (when asked for and known), then ``[DONE]``."""
    chunk: dict[str, Any] = {**_head(model), "object": "chat.completion.chunk"}
    if include_usage:
        chunk["usage"] = None

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _event({**chunk, "choices": [choice]})

    yield event({"role": "assistant", "content": ""})
    words = content.split(" ")
    for index, word in enumerate(words, start=1):
        yield event({"content": word if index == len(words) else f"{word} "})
    yield event({}, "stop")
    if include_usage and usage is not None:
        yield _event({**chunk, "choices": [], "usage": usage})
    if done:
        yield b"data: [DONE]\n\n"


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """An Anthropic error body."""
    kinds = {400: "invalid_request_error", 401: "authentication_error"}
    kinds |= {429: "rate_limit_error", 529: "overloaded_error"}
    error = {"type": kinds.get(status, "api_error"), "message": message}
    return {"type": "error", "error": error}


def anthropic_message(
    model: str, content: str, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """A whole Anthropic ``message``."""
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": content}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 0, "output_tokens": 0},
    }


def anthropic_stream_events(
    model: str, content: str, usage: dict[str, Any] | None, *, stop: bool = True
) -> Iterator[bytes]:
    """An Anthropic stream: message_start, a ping, one text block with one
    delta per word, message_delta (output usage), then message_stop."""
    message = {**anthropic_message(model, "", usage), "content": []}
    message["stop_reason"] = None
    message["usage"] = {**(usage or {}), "output_tokens": 1}
    yield _named("message_start", {"message": message})
    block = {"type": "text", "text": ""}
    yield _named("content_block_start", {"index": 0, "content_block": block})
    yield _named("ping", {})
    words = content.split(" ")
    for index, word in enumerate(words, start=1):
        text = word if index == len(words) else f"{word} "
        delta = {"type": "text_delta", "text": text}
        yield _named("content_block_delta", {"index": 0, "delta": delta})
    yield _named("content_block_stop", {"index": 0})
    output = {"output_tokens": (usage or {}).get("output_tokens", 0)}
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    yield _named("message_delta", {"delta": delta, "usage": output})
    if stop:
        yield _named("message_stop", {})


def _named(name: str, payload: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": name, **payload})
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def embeddings_body(model: str, inputs: list[Any], tokens: int) -> dict[str, Any]:
    """A ``list`` of embeddings, one deterministic 4-float vector per input."""
    data = [
        {"object": "embedding", "index": index, "embedding": _vector(item)}
        for index, item in enumerate(inputs)
    ]
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def models_body(models: Iterable[str]) -> dict[str, Any]:
    """A ``list`` of model objects."""
    data = [
        {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "fake"}
        for name in models
    ]
    return {"object": "list", "data": data}


def _head(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": model,
    }


def _event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _vector(item: Any) -> list[float]:
    digest = hashlib.sha256(orjson.dumps(item)).digest()
    return [round(value / 65535.0, 6) for value in struct.unpack("<4H", digest[:8])]


def _base64(vector: list[float]) -> str:
    """A vector as OpenAI sends it for ``encoding_format: base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _inputs(value: Any) -> list[Any] | None:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(item, int) for item in value):
        return [value]
    if all(isinstance(item, str | list) for item in value):
        return value
    return None


# -- the HTTP side -----------------------------------------------------------


@dataclass
class _Incoming:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def recorded(self) -> RecordedRequest:
        try:
            parsed = orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            parsed = None
        return RecordedRequest(self.method, self.path, self.headers, parsed)


class _Wire:
    """One client connection: its h11 state and its asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.SERVER)

    async def receive(self) -> _Incoming | None:
        """The next whole request, or None when the client closed between them."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                self.http.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return _incoming(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def next_cycle(self) -> bool:
        """Get ready for another request on this connection, if it stays open."""
        if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
            return False
        self.http.start_next_cycle()
        return True

    def gone(self) -> bool:
        """Whether the client has hung up."""
        return self.reader.at_eof() or self.writer.is_closing()

    async def send_whole(
        self, status: int, body: bytes, content_type: str, extra: Mapping[str, str]
    ) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        self._write(
            h11.Response(
                status_code=status,
                reason=_reason(status),
                headers=headers + _headers(extra),
            )
        )
        self._write(h11.Data(data=body))
        self._write(h11.EndOfMessage())
        await self.writer.drain()

    async def start_stream(self, extra: Mapping[str, str]) -> None:
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        self._write(
            h11.Response(
                status_code=200, reason=b"OK", headers=headers + _headers(extra)
            )
        )
        await self.writer.drain()

    async def send_chunk(self, data: bytes) -> None:
        self._write(h11.Data(data=data))
        await self.writer.drain()

    async def end_stream(self) -> None:
        self._write(h11.EndOfMessage())
        await self.writer.drain()

    def reset(self) -> None:
        """Drop the connection with a TCP reset, sending nothing more."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        self.writer.transport.abort()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        """Close gracefully: what was written is still delivered."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def _write(self, event: h11.Event) -> None:
        data = self.http.send(event)
        if data:
            self.writer.write(data)


Route = Callable[[_Wire, RecordedRequest, Reply], Awaitable[bool]]


class _Server:
    """The asyncio side of :class:`FakeUpstream`; runs in its own thread."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.ready = threading.Event()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._wires: dict[asyncio.Task[None], _Wire] = {}
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages"): self._messages,
        }

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            log.exception("the fake upstream stopped on an error")
            self.upstream._note_error(f"server: {type(exc).__name__}: {exc}")
        finally:
            self.ready.set()

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stopping.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()

        await self._stopping.wait()
        server.close()
        await asyncio.sleep(0)  # let connections accepted just now register
        for task, wire in list(self._wires.items()):
            task.cancel()
            wire.abort()
        await asyncio.gather(*self._wires, return_exceptions=True)
        await server.wait_closed()

    def _loop_error(
        self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]
    ) -> None:
        self.upstream._note_error(
            f"event loop: {context.get('message')}: {context.get('exception')!r}"
        )

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._serve(_Wire(reader, writer))
        except asyncio.CancelledError:
            # Only stop() cancels a connection.  Ending normally matters: on
            # Python 3.11 asyncio reports a cancelled connection task as an
            # error of the event loop.
            log.debug("fake upstream: connection closed by stop()")

    async def _serve(self, wire: _Wire) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._wires[task] = wire
        try:
            while (incoming := await wire.receive()) is not None:
                keep = await self._answer(wire, incoming.recorded())
                if not keep or not wire.next_cycle():
                    break
        except (ConnectionError, h11.RemoteProtocolError) as exc:
            log.debug("fake upstream: client went away (%s)", type(exc).__name__)
        except Exception as exc:
            log.exception("fake upstream: serving a request failed")
            self.upstream._note_error(f"connection: {type(exc).__name__}: {exc}")
        finally:
            del self._wires[task]
            await wire.close()

    async def _answer(self, wire: _Wire, request: RecordedRequest) -> bool:
        """Answer one request; False when the connection must not be reused."""
        reply = self.upstream._admit(request)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if wire.gone():
            return False
        if reply.reset:
            wire.reset()
            return False

        if reply.status != 200 or reply.body is not None:
            body = _scripted_body(reply)
            if request.path == "/v1/messages" and reply.body is None:
                body = anthropic_error_body(reply.status, body["error"]["message"])
            await _send_json(wire, reply.status, body, reply.headers)
            return True
        if reply.garbage:
            await wire.send_whole(200, GARBAGE, "application/json", reply.headers)
            return True
        route = self._routes.get((request.method, request.path), self._unknown)
        return await route(wire, request, reply)

    async def _unknown(
        self, wire: _Wire, request: RecordedRequest, reply: Reply
    ) -> bool:
        body = error_body(404, f"No route {request.method} {request.path}.")
        await _send_json(wire, 404, body, reply.headers)
        return True

    async def _chat(self, wire: _Wire, request: RecordedRequest, reply: Reply) -> bool:
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _send_json(wire, 400, error_body(400, "messages is required."), {})
            return True
        model = str(body.get("model", "fake-model"))
        content = reply.content if reply.content is not None else self.upstream.content
        usage = self.upstream._usage(reply)
        if body.get("stream") is not True:
            await _send_json(
                wire, 200, chat_completion(model, content, usage), reply.headers
            )
            return True

        options = body.get("stream_options")
        include_usage = (
            isinstance(options, dict) and options.get("include_usage") is True
        )
        events = stream_events(
            model, content, usage, include_usage=include_usage, done=not reply.omit_done
        )
        return await self._stream(wire, events, reply)

    async def _stream(self, wire: _Wire, events: Iterator[bytes], reply: Reply) -> bool:
        await wire.start_stream(reply.headers)
        try:
            for sent, event in enumerate(events, start=1):
                if wire.gone():
                    raise ConnectionResetError("the client hung up")
                await wire.send_chunk(event)
                if sent == reply.stream_cut_after:
                    await wire.close()
                    return False
                if reply.hold is not None and sent == reply.hold_after:
                    await _released(wire, reply.hold)
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
            await wire.end_stream()
        except ConnectionError:
            self.upstream._note_abandoned()
            return False
        return True

    async def _messages(
        self, wire: _Wire, request: RecordedRequest, reply: Reply
    ) -> bool:
        """Anthropic's Messages API: a message, or its stream of events."""
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("max_tokens"), int):
            error = anthropic_error_body(400, "max_tokens: Field required")
            await _send_json(wire, 400, error, {})
            return True
        model = str(body.get("model", "fake-model"))
        content = reply.content if reply.content is not None else self.upstream.content
        usage = None if reply.omit_usage else self.upstream._anthropic_usage()
        if body.get("stream") is not True:
            answer = anthropic_message(model, content, usage)
            await _send_json(wire, 200, answer, reply.headers)
            return True
        events = anthropic_stream_events(
            model, content, usage, stop=not reply.omit_done
        )
        return await self._stream(wire, events, reply)

    async def _embeddings(
        self, wire: _Wire, request: RecordedRequest, reply: Reply
    ) -> bool:
        body = request.json if isinstance(request.json, dict) else {}
        inputs = _inputs(body.get("input"))
        if inputs is None:
            error = error_body(400, "input must be a string, strings or token arrays.")
            await _send_json(wire, 400, error, {})
            return True
        model = str(body.get("model", "fake-embedding"))
        tokens = 0 if reply.omit_usage else self.upstream.prompt_tokens
        answer = embeddings_body(model, inputs, tokens)
        if body.get("encoding_format") == "base64":
            for item in answer["data"]:
                item["embedding"] = _base64(item["embedding"])
        if reply.omit_usage:
            del answer["usage"]
        await _send_json(wire, 200, answer, reply.headers)
        return True

    async def _models(
        self, wire: _Wire, request: RecordedRequest, reply: Reply
    ) -> bool:
        await _send_json(wire, 200, models_body(self.upstream.models), reply.headers)
        return True


def _scripted_body(reply: Reply) -> Any:
    if reply.body is not None:
        return reply.body
    return error_body(
        reply.status, f"The fake upstream was scripted to answer {reply.status}."
    )


async def _released(wire: _Wire, hold: threading.Event) -> None:
    """Wait until the test sets ``hold``; raise if the client hangs up first."""
    while not hold.is_set():
        if wire.gone():
            raise ConnectionResetError("the client hung up during a hold")
        await asyncio.sleep(0.002)
    await asyncio.sleep(0)  # see a hang-up that came just before the release


async def _send_json(
    wire: _Wire, status: int, body: Any, extra: Mapping[str, str]
) -> None:
    await wire.send_whole(status, orjson.dumps(body), "application/json", extra)


def _incoming(head: h11.Request, body: bytes) -> _Incoming:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path = head.target.decode("latin-1").split("?", 1)[0]
    return _Incoming(head.method.decode("ascii"), path, headers, body)


def _headers(extra: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in extra.items()]


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""
