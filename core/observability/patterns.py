"""What log scrubbing adds to :mod:`sluicegate.core.redact`.

:func:`scrub_text` masks secret-looking query or form parameters
(``api_key=...``, ``token=...``), which travel in URLs that end up in logs,
then applies ``redact`` (e-mail, phone, card, IBAN, API key, bearer token).
"""

from __future__ import annotations

import re

from sluicegate.core.redact import redact

SECRET_PARAMETER = re.compile(
    r"(?i)\b((?:api[_-]?key|access[_-]?token|token|secret|password|passwd|key|"
    r"auth|authorization|sig|signature)=)[^&\s\"'#]+"
)


def scrub_text(text: str) -> str:
    """``text`` with secrets and personal data replaced by markers."""
    return redact(SECRET_PARAMETER.sub(r"\1[SECRET]", text))
