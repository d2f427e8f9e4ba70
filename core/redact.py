"""Masking personal data and secrets in free text.

:func:`redact` replaces what looks like an e-mail address, a phone number, a
payment card number (Luhn-checked), an API key or a bearer token with a fixed
marker such as ``[EMAIL]``.  It is pattern matching, not understanding: it errs
towards masking, and names, postal addresses or free-form identifiers pass
through.  The audit trail uses it for stored payloads; logs may use it too.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")
API_KEY = re.compile(
    r"\b(?:sk|pk|rk|sg|xox[abpr]|ghp|gho|github_pat|glpat)[-_][A-Za-z0-9_-]{12,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])\+\d[\d ().-]{6,}\d(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
)


def redact(text: str) -> str:
    """``text`` with personal data and secrets replaced by markers."""
    text = BEARER.sub("Bearer [SECRET]", text)
    text = API_KEY.sub("[SECRET]", text)
    text = EMAIL.sub("[EMAIL]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if _luhn(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[PHONE]" if 8 <= len(digits) <= 15 else match.group()


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0
