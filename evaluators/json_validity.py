"""The ``json_validity`` evaluator: did the model answer JSON when asked?

It judges only requests that asked for JSON through ``response_format``
(``json_object`` or ``json_schema``); any other request gets a score of 0 and
no label.  An answer that does not parse scores 1 (``json:invalid``); JSON
wrapped in a Markdown code fence scores 0.5 (``json:fenced``): a client that
parses the answer as asked fails on both.  A ``json_schema`` answer is
checked for being a JSON object, not against the schema.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict

FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)
JSON_FORMATS = ("json_object", "json_schema")


def asked_for_json(body: dict[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and (
        response_format.get("type") in JSON_FORMATS
    )


def _parses(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _INVALID


_INVALID = object()


class JsonValidityEvaluator(Evaluator):
    """Flags answers that are not the JSON the request asked for."""

    name = "json_validity"
    version = "1.0"
    Config = EvaluatorConfig
    fast = False

    async def evaluate(self, sample: Sample) -> Verdict:
        if sample.response is None or not asked_for_json(sample.request_body):
            return Verdict(0.0)
        value = _parses(sample.response)
        if value is not _INVALID:
            if _wants_object(sample.request_body) and not isinstance(value, dict):
                return Verdict(1.0, ("json:not_object",), "asked for a JSON object")
            return Verdict(0.0)
        fenced = FENCE.match(sample.response)
        if fenced and _parses(fenced.group(1)) is not _INVALID:
            return Verdict(0.5, ("json:fenced",), "JSON inside a code fence")
        return Verdict(1.0, ("json:invalid",), "the answer is not JSON")


def _wants_object(body: dict[str, Any]) -> bool:
    return bool(body["response_format"].get("type") == "json_object")
