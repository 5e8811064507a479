"""transformers' own greedy completion of a prompt: the reference a served completion must equal.

Runs INSIDE the environment under test. Argument: JSON with ``model``, ``prompt``, ``max_tokens``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import main
from generate import reference_ids


def run(args: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    prompt_ids = tokenizer(args["prompt"]).input_ids
    ids = reference_ids(args["model"], prompt_ids, int(args.get("max_tokens", 8)))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return {"detail": f"{len(ids)} greedy tokens", "evidence": {"ids": ids, "text": text}}


if __name__ == "__main__":
    main(run)
