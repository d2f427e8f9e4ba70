"""Personal data and secrets in free text: the one set of patterns.

:func:`redact` replaces what looks like an e-mail address, a phone number, a
payment card number (Luhn-checked), an IBAN (mod-97-checked), an API key or a
bearer token with a fixed marker such as ``[EMAIL]``.  The ``pii`` evaluator
and the log scrubber use the same patterns and checks, so what is flagged and
what is masked never disagree.  It is pattern matching, not understanding: it errs
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
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
PHONE = re.compile(
    r"(?<![\w+])\+\d[\d ().-]{6,18}\d(?!\w)"
    r"|(?<![\w(])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)"
)


def redact(text: str) -> str:
    """``text`` with personal data and secrets replaced by markers."""
    text = BEARER.sub("Bearer [SECRET]", text)
    text = API_KEY.sub("[SECRET]", text)
    text = EMAIL.sub("[EMAIL]", text)
    text = IBAN.sub(_iban, text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


def luhn_valid(text: str) -> bool:
    """A card number's Luhn check (separators ignored; all-same digits fail)."""
    digits = re.sub(r"\D", "", text)
    if len(set(digits)) == 1:
        return False  # 0000 0000 0000 0000 passes Luhn but is no card
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: 15 to 34 characters whose rearranged number mod 97 is 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def phone_plausible(text: str) -> bool:
    """8 to 15 digits, as E.164 allows."""
    return 8 <= len(re.sub(r"\D", "", text)) <= 15


def _iban(match: re.Match[str]) -> str:
    return "[IBAN]" if iban_valid(match.group()) else match.group()


def _card(match: re.Match[str]) -> str:
    return "[CARD]" if luhn_valid(match.group()) else match.group()


def _phone(match: re.Match[str]) -> str:
    return "[PHONE]" if phone_plausible(match.group()) else match.group()
