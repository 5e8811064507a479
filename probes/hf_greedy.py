"""transformers' own greedy completion of a prompt: the reference a served completion must equal.

Runs INSIDE the environment under test. Argument: JSON with ``model``, ``prompt``, ``max_tokens``.
``reference_ids`` is also what ``engine.py`` computes while its server starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import main


def reference_ids(model_dir: str, prompt_ids: list[int], max_tokens: int) -> list[int]:
    """Greedy ids in float32 (the tiny checkpoints' dtype on both engines: the ids compare exactly)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=max_tokens,
            do_sample=False,
            min_new_tokens=max_tokens,
            pad_token_id=0,
        )
    return [int(t) for t in out[0][len(prompt_ids) :]]


def run(args: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    prompt_ids = tokenizer(args["prompt"]).input_ids
    ids = reference_ids(args["model"], prompt_ids, int(args.get("max_tokens", 8)))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return {"detail": f"{len(ids)} greedy tokens", "evidence": {"ids": ids, "text": text}}


if __name__ == "__main__":
    main(run)
