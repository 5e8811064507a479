from __future__ import annotations

import pytest

from stackmatrix.redact import redact, redact_obj


def test_url_credentials_and_secret_env_values_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    text = "cannot reach https://user:s3cr3t@mirror.local/simple/vllm/ with token hf_abcdefghijkl"
    out = redact(text)
    assert "s3cr3t" not in out and "hf_abcdefghijkl" not in out
    assert "https://***@mirror.local/simple/vllm/" in out
    assert redact_obj({"a": ["x hf_abcdefghijkl", 3]}) == {"a": ["x ***", 3]}


def test_query_tokens_and_known_secrets() -> None:
    from stackmatrix.redact import register_secret, split_secrets

    text = "GET https://m.local/simple/?token=abc123&x=1 and https://s3/x.whl?X-Amz-Signature=deadbeef&v=2"
    out = redact(text)
    assert "abc123" not in out and "deadbeef" not in out and "x=1" in out and "v=2" in out
    assert redact("https://u:p@ss@host/x") == "https://***@host/x"  # an unescaped "@" in the password
    assert redact("https://host/pkg@1.0") == "https://host/pkg@1.0"
    register_secret("pw-0xfeedface")
    assert redact("auth failed for pw-0xfeedface") == "auth failed for ***"
    assert split_secrets("https://u:p%40w@h:8080/s/?token=t&a=1") == ("https://h:8080/s/?a=1", ("u", "p@w"), True)
    assert split_secrets("https://h/s") == ("https://h/s", None, False)
