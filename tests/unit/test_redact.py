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
