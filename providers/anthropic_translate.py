"""Translation between the OpenAI chat shape and Anthropic's Messages API.

Both ways, for requests, whole answers and streams:

* ``chat_to_messages_request`` / ``messages_to_chat_response`` /
  :class:`MessagesToChatEvents`: an OpenAI-shaped request to an Anthropic
  target (the ``anthropic`` provider kind).
* ``messages_to_chat_request`` / ``chat_to_messages_response`` /
  :class:`ChatToMessagesEvents`: an Anthropic-shaped request
  (``POST /v1/messages``) to an OpenAI-compatible target.

What maps: system prompts, text, images (base64 data and URLs), tools and
tool calls with their results, stop sequences, ``max_tokens``, temperature,
``top_p``, the end user, finish reasons and usage.  What has no counterpart
is dropped (``n``, ``logprobs``, ``top_k``, Anthropic's ``thinking``).
:class:`TranslatedStream` applies an event translator to a relayed stream.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from sluicegate.core.context import Usage
from sluicegate.core.errors import ProviderError
from sluicegate.core.reliability.first_byte import close_stream
from sluicegate.providers.sse import DONE, DONE_EVENT, EventSplitter, data_of

# TODO(anthropic-thinking): thinking blocks, citations and server tools are
# dropped in translation to the OpenAI shape; clients that need them must use
# /v1/messages against an Anthropic target (native, unchanged).
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires ``max_tokens``; an OpenAI request may leave it out."""

_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


# -- OpenAI chat request -> Anthropic Messages request ------------------------


def chat_to_messages_request(
    body: dict[str, Any], model: str, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages request of an OpenAI chat request, for ``model``."""
    system, messages = _split_system(body.get("messages") or [])
    out: dict[str, Any] = {
        "model": model,
        "messages": _merge_roles([_to_anthropic_message(m) for m in messages]),
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or default_max_tokens,
    }
    if system:
        out["system"] = system
    _copy_sampling(body, out)
    if body.get("stream"):
        out["stream"] = True
    if body.get("tools"):
        out["tools"] = [_to_anthropic_tool(tool) for tool in body["tools"]]
    if (choice := _to_anthropic_tool_choice(body.get("tool_choice"))) is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def _split_system(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    rest: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        else:
            rest.append(message)
    return "\n\n".join(part for part in system if part), rest


def _copy_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    if body.get("temperature") is not None:
        out["temperature"] = min(1.0, float(body["temperature"]))
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)


def _to_anthropic_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if role in ("tool", "function"):
        result = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id") or message.get("name", ""),
            "content": _text_of(message.get("content")),
        }
        return {"role": "user", "content": [result]}
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_blocks(message)}
    return {"role": "user", "content": _user_blocks(message.get("content"))}


def _user_blocks(content: Any) -> Any:
    if isinstance(content, str) or content is None:
        return content or ""
    return [block for part in content if (block := _to_anthropic_part(part))]


def _to_anthropic_part(part: dict[str, Any]) -> dict[str, Any] | None:
    if part.get("type") == "text":
        return {"type": "text", "text": part.get("text", "")}
    if part.get("type") != "image_url":
        return None
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": function.get("name", ""),
                "input": _json_object(function.get("arguments")),
            }
        )
    return blocks


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic wants user and assistant turns to alternate: join neighbours."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"] = _blocks(merged[-1]["content"]) + _blocks(
                message["content"]
            )
        else:
            merged.append(message)
    return merged


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


def _to_anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    out = {
        "name": function.get("name", ""),
        "input_schema": function.get("parameters") or {"type": "object"},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _to_anthropic_tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return {"type": "tool", "name": choice["function"].get("name", "")}
    return None


# -- Anthropic Messages answer -> OpenAI chat answer ---------------------------


def messages_to_chat_response(body: dict[str, Any]) -> dict[str, Any]:
    """The ``chat.completion`` of a whole Messages answer."""
    text = "".join(
        block.get("text", "")
        for block in body.get("content") or []
        if block.get("type") == "text"
    )
    calls = [
        _to_openai_tool_call(block)
        for block in body.get("content") or []
        if block.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    finish = _STOP_TO_FINISH.get(str(body.get("stop_reason")), "stop")
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    answer = {**_chat_head(body.get("id"), body.get("model")), "choices": [choice]}
    answer["object"] = "chat.completion"
    if (usage := usage_from_anthropic(body.get("usage"))) is not None:
        answer["usage"] = openai_usage(usage)
    return answer


def _to_openai_tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }


def usage_from_anthropic(raw: Any, into: Usage | None = None) -> Usage | None:
    """The :class:`Usage` of an Anthropic ``usage`` object (cache reads and
    writes count as prompt tokens); fields it lacks keep ``into``'s values."""
    if not isinstance(raw, dict):
        return into
    usage = into or Usage()
    cached = _count(raw.get("cache_read_input_tokens"))
    written = _count(raw.get("cache_creation_input_tokens"))
    if (prompt := _count(raw.get("input_tokens"))) is not None:
        usage.prompt_tokens = prompt + (cached or 0) + (written or 0)
        usage.cached_tokens = cached or 0
    if (completion := _count(raw.get("output_tokens"))) is not None:
        usage.completion_tokens = completion
    return usage


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _chat_head(upstream_id: Any, model: Any) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{upstream_id or uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": str(model or ""),
    }


class MessagesToChatEvents:
    """Turns the events of an Anthropic stream into OpenAI chunk events."""

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._head: dict[str, Any] = _chat_head(None, None)
        self._usage = Usage()
        self._tools: dict[int, int] = {}
        """Anthropic content block index -> OpenAI tool call index."""

    def __call__(self, event: bytes) -> list[bytes]:
        name, data = anthropic_event(event)
        if name == "error":
            message = str((data.get("error") or {}).get("message", "stream error"))
            raise ProviderError("anthropic", f"the stream reported: {message}")
        if name == "message_start":
            return self._start(data.get("message") or {})
        if name == "content_block_start":
            return self._block_start(data)
        if name == "content_block_delta":
            return self._block_delta(data)
        if name == "message_delta":
            usage_from_anthropic(data.get("usage"), self._usage)
            stop = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _STOP_TO_FINISH.get(str(stop), "stop"))]
        if name == "message_stop":
            return self._stop()
        return []

    def _start(self, message: dict[str, Any]) -> list[bytes]:
        self._head = _chat_head(message.get("id"), message.get("model"))
        usage_from_anthropic(message.get("usage"), self._usage)
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = data.get("content_block") or {}
        if block.get("type") != "tool_use":
            return []
        index = self._tools.setdefault(int(data.get("index", 0)), len(self._tools))
        call = {
            "index": index,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "input_json_delta":
            index = self._tools.get(int(data.get("index", 0)), 0)
            arguments = {"arguments": delta.get("partial_json", "")}
            return [
                self._chunk({"tool_calls": [{"index": index, "function": arguments}]})
            ]
        return []

    def _stop(self) -> list[bytes]:
        events = []
        if self._include_usage:
            usage = openai_usage(self._usage)
            events.append(_data({**self._chunk_head(), "choices": [], "usage": usage}))
        return [*events, DONE_EVENT]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _data({**self._chunk_head(), "choices": [choice]})

    def _chunk_head(self) -> dict[str, Any]:
        head = {**self._head, "object": "chat.completion.chunk"}
        if self._include_usage:
            head["usage"] = None
        return head


# -- Anthropic Messages request -> OpenAI chat request -------------------------


def messages_to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat request of a Messages request (model left as it came)."""
    messages: list[dict[str, Any]] = []
    system = _text_of(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for message in body.get("messages") or []:
        messages.extend(_to_openai_messages(message))
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": body.get("max_tokens"),
    }
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _copy_tools_to_openai(body, out)
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    return out


def _to_openai_messages(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": message.get("role"), "content": content}]
    blocks = [block for block in content or [] if isinstance(block, dict)]
    if message.get("role") == "assistant":
        return [_openai_assistant(blocks)]
    results = [_openai_tool_result(b) for b in blocks if b.get("type") == "tool_result"]
    parts = [part for block in blocks if (part := _to_openai_part(block))]
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _openai_assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [_to_openai_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _openai_tool_result(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "tool",
        "tool_call_id": block.get("tool_use_id", ""),
        "content": _text_of(block.get("content")),
    }


def _to_openai_part(block: dict[str, Any]) -> dict[str, Any] | None:
    if block.get("type") == "text":
        return {"type": "text", "text": block.get("text", "")}
    if block.get("type") != "image":
        return None
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    else:
        url = str(source.get("url", ""))
    return {"type": "image_url", "image_url": {"url": url}}


def _copy_tools_to_openai(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools") or []
    if tools:
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.get("name", ""),
                    "description": tool.get("description", ""),
                    "parameters": tool.get("input_schema") or {"type": "object"},
                },
            }
            for tool in tools
        ]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        out["tool_choice"] = kind
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {
            "type": "function",
            "function": {"name": choice.get("name", "")},
        }


# -- OpenAI chat answer -> Anthropic Messages answer ---------------------------


def chat_to_messages_response(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages answer of a whole ``chat.completion`` (its first choice)."""
    choices = body.get("choices") or [{}]
    message = choices[0].get("message") or {}
    content: list[dict[str, Any]] = []
    if text := _text_of(message.get("content")):
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        content.append(_tool_use_of(call))
    stop = _FINISH_TO_STOP.get(str(choices[0].get("finish_reason")), "end_turn")
    usage = body.get("usage") or {}
    return {
        "id": f"msg_{body.get('id') or uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }


def anthropic_usage(usage: dict[str, Any]) -> dict[str, int]:
    details = usage.get("prompt_tokens_details") or {}
    cached = _count(details.get("cached_tokens")) or 0
    prompt = _count(usage.get("prompt_tokens")) or 0
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": _count(usage.get("completion_tokens")) or 0,
        "cache_read_input_tokens": cached,
    }


def _tool_use_of(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "input": _json_object(function.get("arguments")),
    }


class ChatToMessagesEvents:
    """Turns the events of an OpenAI stream into Anthropic stream events."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: tuple[str, int] | None = None
        """The open content block: ("text", -1) or ("tool", OpenAI index)."""
        self._blocks = 0
        self._stop = "end_turn"
        self._usage: dict[str, Any] = {}

    def __call__(self, event: bytes) -> list[bytes]:
        data = data_of(event)
        if data is None:
            return []
        if data == DONE:
            return self._finish()
        chunk = _loads(data)
        events = [] if self._started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            events += self._delta(choice.get("delta") or {})
            if choice.get("finish_reason"):
                self._stop = _FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
        return events

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        self._started = True
        message: dict[str, Any] = {
            "id": f"msg_{chunk.get('id') or uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [anthropic_event_bytes("message_start", {"message": message})]

    def _delta(self, delta: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        if delta.get("content"):
            events += self._open(("text", -1), {"type": "text", "text": ""})
            text = {"type": "text_delta", "text": delta["content"]}
            events.append(self._block_delta(text))
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            tool = {"type": "tool_use", "id": call.get("id", ""), "input": {}}
            tool["name"] = function.get("name", "")
            events += self._open(("tool", int(call.get("index", 0))), tool)
            if function.get("arguments"):
                partial = {"type": "input_json_delta"}
                partial["partial_json"] = function["arguments"]
                events.append(self._block_delta(partial))
        return events

    def _open(self, block: tuple[str, int], start: dict[str, Any]) -> list[bytes]:
        if self._block == block:
            return []
        events = self._close()
        self._block = block
        payload = {"index": self._blocks, "content_block": start}
        return [*events, anthropic_event_bytes("content_block_start", payload)]

    def _close(self) -> list[bytes]:
        if self._block is None:
            return []
        self._block = None
        self._blocks += 1
        return [
            anthropic_event_bytes("content_block_stop", {"index": self._blocks - 1})
        ]

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        payload = {"index": self._blocks, "delta": delta}
        return anthropic_event_bytes("content_block_delta", payload)

    def _finish(self) -> list[bytes]:
        events = [] if self._started else self._start({})
        events += self._close()
        usage = anthropic_usage(self._usage)
        delta = {"stop_reason": self._stop, "stop_sequence": None}
        events.append(
            anthropic_event_bytes("message_delta", {"delta": delta, "usage": usage})
        )
        events.append(anthropic_event_bytes("message_stop", {}))
        return events


# -- streams and events ------------------------------------------------------


class TranslatedStream(AsyncIterator[bytes]):
    """A relayed stream with each of its events replaced by a translator's."""

    def __init__(
        self, source: AsyncIterator[bytes], translate: Callable[[bytes], list[bytes]]
    ) -> None:
        self._source = source
        self._translate = translate
        self._events = EventSplitter()

    async def __anext__(self) -> bytes:
        while True:
            chunk = await anext(self._source)
            out = [
                translated
                for event in self._events.feed(chunk)
                for translated in self._translate(event)
            ]
            if out:
                return b"".join(out)

    async def aclose(self) -> None:
        await close_stream(self._source)


def anthropic_event(event: bytes) -> tuple[str, dict[str, Any]]:
    """The name (``event:``, else the data's ``type``) and data of an event."""
    name = ""
    for line in event.splitlines():
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", errors="replace")
    data = _loads(data_of(event) or b"")
    return name or str(data.get("type", "")), data


def anthropic_event_bytes(name: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: ``event:`` line, ``data:`` line with ``type``."""
    data = orjson.dumps({"type": name, **payload})
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
    )


def _json_object(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    value = _loads(arguments.encode() if isinstance(arguments, str) else b"")
    return value


def _loads(data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
