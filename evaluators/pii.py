"""The ``pii`` evaluator: personal data in a request or its answer.

It finds, by pattern and checksum:

* e-mail addresses (``pii:email``);
* phone numbers: international ``+`` numbers of 8 to 15 digits and North
  American ``(555) 123-4567`` forms (``pii:phone``);
* payment card numbers: 13 to 19 digits, spaced or dashed, passing the Luhn
  check (``pii:card``);
* IBANs: a country code, two check digits and 11 to 30 letters or digits,
  spaced in fours or not, passing the ISO 13616 mod-97 check (``pii:iban``);
* national identifiers: US Social Security numbers in ``AAA-GG-SSSS`` form
  with the SSA's rules for never-issued numbers (``pii:us_ssn``) and UK
  National Insurance numbers with HMRC's prefix rules (``pii:uk_nino``).

Names, postal addresses and free-form identifiers are not found: this is
pattern matching, not understanding.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from sluicegate.core.evaluator import Evaluator, EvaluatorConfig, Sample, Verdict
from sluicegate.core.redact import (
    CARD,
    EMAIL,
    IBAN,
    PHONE,
    iban_valid,
    luhn_valid,
    phone_plausible,
)
from sluicegate.evaluators.patterns import Rule, Scope, texts_in, verdict_of

US_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
UK_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
)


def ssn_issuable(text: str) -> bool:
    area, group, serial = text.split("-")
    if area in ("000", "666") or area.startswith("9"):
        return False
    return group != "00" and serial != "0000"


class PiiConfig(EvaluatorConfig):
    scope: Scope = "both"
    kinds: frozenset[str] = Field(
        default=frozenset({"email", "phone", "card", "iban", "us_ssn", "uk_nino"}),
        description="Which kinds of personal data to look for.",
    )


class PiiEvaluator(Evaluator):
    """Scores the most sensitive kind of personal data found."""

    name = "pii"
    version = "1.0"
    Config = PiiConfig
    fast = True

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("pii:card", 0.9, CARD, luhn_valid),
        Rule("pii:iban", 0.8, IBAN, iban_valid),
        Rule("pii:us_ssn", 0.9, US_SSN, ssn_issuable),
        Rule("pii:uk_nino", 0.8, UK_NINO),
        Rule("pii:email", 0.5, EMAIL),
        Rule("pii:phone", 0.4, PHONE, phone_plausible),
    )

    config: PiiConfig

    async def evaluate(self, sample: Sample) -> Verdict:
        rules = [rule for rule in self.RULES if rule.label[4:] in self.config.kinds]
        return verdict_of(rules, texts_in(sample, self.config.scope))
