"""Secrets never reach logs, reports, evidence, caches or the terminal: URL credentials (``user:password@``),
secret-named query parameters (``?token=``, ``X-Amz-Signature=``) and the values of secret-looking env vars."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

# Up to the last "@" of the authority: a password may hold an unescaped "@" (urlsplit splits at the last one).
_URL_USERINFO = re.compile(r"(?<=://)[^\s/@\"'<>]*(?:@[^\s/@\"'<>]*)*@")
# Query parameter names that carry secrets (matched as substrings: masking a harmless value costs nothing).
_SECRET_WORDS = r"TOKEN|SECRET|PASSWORD|PASSWD|PWD|KEY|CREDENTIAL|SIG|AUTH|SESSION"
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
_SECRET_QUERY = re.compile(rf"([?&;][^=&\s#\"'<>]*(?:{_SECRET_WORDS})[^=&\s#\"'<>]*=)[^&\s#\"'<>]+", re.IGNORECASE)
_SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"
_KNOWN: set[str] = set()  # secrets this process was handed (a URL's password, a query token): masked anywhere


def register_secret(value: str) -> None:
    """Mask ``value`` wherever it appears from now on, also outside a URL (an error message quoting it)."""
    if len(value) >= 4:
        _KNOWN.add(value)


def _secret_values() -> list[str]:
    env = (v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6)
    return sorted({*env, *_KNOWN}, key=len, reverse=True)


def redact(text: str) -> str:
    return _redact(text, _secret_values())


def _redact(text: str, values: list[str]) -> str:
    text = _URL_USERINFO.sub(f"{MASK}@", text)
    text = _SECRET_QUERY.sub(rf"\1{MASK}", text)
    for value in values:
        text = text.replace(value, MASK)
    return text


_ANY_USERINFO = re.compile(r"[^\s/@\"'<>]*@")


def mask_userinfo(text: str) -> str:
    """A value that failed its URL check shown without what could be user info (``https:/user:pw@host`` has no
    ``://`` for ``redact`` to find): everything before an ``@`` up to a slash is masked."""
    return _ANY_USERINFO.sub(f"{MASK}@", redact(text))


def redact_obj(value: Any) -> Any:
    """``redact`` applied to every string in a JSON-like structure (the secrets to mask looked up once: an
    outcome's evidence holds hundreds of strings, and the environment is read for each lookup)."""
    return _redact_obj(value, _secret_values())


def _redact_obj(value: Any, values: list[str]) -> Any:
    if isinstance(value, str):
        return _redact(value, values)
    if isinstance(value, Mapping):
        return {k: _redact_obj(v, values) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_obj(v, values) for v in value]
    return value


def split_secrets(url: str) -> tuple[str, tuple[str, str] | None, bool]:
    """(the URL without user info and secret query parameters, the (user, password) it carried, whether a secret
    query parameter was dropped): what may be stored, the credentials to send from memory, and whether the
    stored URL lost something a fetch needs."""
    parts = urlsplit(url)
    creds = None
    if parts.username is not None or parts.password is not None:
        creds = (unquote(parts.username or ""), unquote(parts.password or ""))
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not _SECRET_NAME.search(k)]
    clean = urlunsplit(
        (parts.scheme, netloc, parts.path, urlencode(kept) if len(kept) < len(query) else parts.query, "")
    )
    return clean, creds, len(kept) < len(query)
