"""The ``secrets`` evaluator: credentials and keys in a request or its answer.

It knows the shapes of common provider keys (OpenAI and Anthropic, AWS
access key ids, GitHub, GitLab, Slack, Google API and Stripe keys), PEM
private keys, JSON Web Tokens, bearer tokens and ``password = ...``-style
assignments.  A key that matches no known shape passes unnoticed.
"""

from __future__ import annotations

import re
from typing import ClassVar

from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict
from sluicegate.evaluators.patterns import Rule, Scope, texts_in, verdict_of


class SecretsConfig(EvaluatorConfig):
    scope: Scope = "both"


class SecretsEvaluator(Evaluator):
    """Scores the most dangerous kind of secret found."""

    name = "secrets"
    version = "1.0"
    Config = SecretsConfig
    fast = True

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "secret:private_key",
            1.0,
            re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
        ),
        Rule("secret:aws_key", 0.95, re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
        Rule(
            "secret:api_key",
            0.95,
            re.compile(
                r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"
                r"|\b(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{36}\b"
                r"|\bgithub_pat_[A-Za-z0-9_]{22,}"
                r"|\bglpat-[A-Za-z0-9_-]{20}\b"
                r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
                r"|\bAIza[0-9A-Za-z_-]{35}\b"
                r"|\b[rs]k_live_[A-Za-z0-9]{16,}"
            ),
        ),
        Rule(
            "secret:jwt",
            0.7,
            re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[\w-]{8,}"),
        ),
        Rule(
            "secret:bearer_token",
            0.7,
            re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}"),
        ),
        Rule(
            "secret:password",
            0.6,
            re.compile(
                r"(?i)\b(?:password|passwd|pwd|secret|api_?key)\s*[:=]\s*"
                r"['\"]?[^\s'\"]{6,}"
            ),
        ),
    )

    config: SecretsConfig

    async def evaluate(self, sample: Sample) -> Verdict:
        return verdict_of(self.RULES, texts_in(sample, self.config.scope))
