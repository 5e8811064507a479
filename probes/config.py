"""Rung ``config``: AutoConfig, the tokenizer and the chat template load from the checkpoint.
Runs INSIDE the environment under test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main


def run(args: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoConfig, AutoTokenizer

    model = args["model"]
    try:
        config = AutoConfig.from_pretrained(model)
    except (KeyError, ValueError) as exc:
        raise ProbeFailure("model-type-unknown", f"AutoConfig cannot read the checkpoint: {exc}") from exc
    tok = AutoTokenizer.from_pretrained(model)
    if not tok.chat_template:
        raise ProbeFailure("load-failed", "the tokenizer has no chat template")
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    return {
        "detail": f"{type(config).__name__} ({config.model_type}), {len(tok)} tokens, chat template renders",
        "evidence": {
            "model_type": config.model_type,
            "architectures": config.architectures,
            "vocab": len(tok),
            "rendered": text,
        },
    }


if __name__ == "__main__":
    main(run)
