"""Secrets never reach logs, reports or evidence: URL credentials and the values of secret-looking env vars."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def _secret_values() -> list[str]:
    return sorted((v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6), key=len, reverse=True)


def redact(text: str) -> str:
    text = _URL_USERINFO.sub(f"{MASK}@", text)
    for value in _secret_values():
        text = text.replace(value, MASK)
    return text


def redact_obj(value: Any) -> Any:
    """``redact`` applied to every string in a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
