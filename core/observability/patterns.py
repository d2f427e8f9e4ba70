"""Secret and personal-data patterns that :mod:`sluicegate.core.redact` lacks.

:func:`scrub_text` applies ``redact`` (e-mail, phone, card, API key, bearer
token) and then these: IBANs and secret-looking query or form parameters
(``api_key=...``, ``token=...``), which travel in URLs that end up in logs.
"""

from __future__ import annotations

import re

from sluicegate.core.redact import redact

IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
SECRET_PARAMETER = re.compile(
    r"(?i)\b((?:api[_-]?key|access[_-]?token|token|secret|password|passwd|key|"
    r"auth|authorization|sig|signature)=)[^&\s\"'#]+"
)


def scrub_text(text: str) -> str:
    """``text`` with secrets and personal data replaced by markers."""
    text = SECRET_PARAMETER.sub(r"\1[SECRET]", text)
    text = redact(text)
    return IBAN.sub(_iban, text)


def _iban(match: re.Match[str]) -> str:
    compact = match.group().replace(" ", "")
    return (
        "[IBAN]"
        if 15 <= len(compact) <= 34 and _iban_checks(compact)
        else (match.group())
    )


def _iban_checks(iban: str) -> bool:
    """The ISO 13616 check: the rearranged number modulo 97 is 1."""
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1
