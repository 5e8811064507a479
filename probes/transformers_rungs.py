"""Rungs ``import``, ``tiny`` and ``config`` of a stack that serves with transformers itself (Triton's Python
backend), and the reference its server must answer, in ONE process: the stack is imported once.

Runs INSIDE the environment under test. One line per rung (``_common.rung``), then one line with transformers'
own greedy completion of ``prompt`` (``reference``: true), the text the served completion must equal. Argument:
JSON with ``model``, ``modules``, ``build`` (the tiny checkpoint's spec, built into ``model`` when given),
``prompt``, ``max_tokens``, ``reference`` (false: a real checkpoint, not loaded twice).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, outcome, rung
from engine import read_config
from import_stack import run as imports
from tiny_build import build_once


def reference(args: dict[str, Any]) -> dict[str, Any]:
    from hf_greedy import reference_ids
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    ids = reference_ids(args["model"], tokenizer(args["prompt"]).input_ids, int(args.get("max_tokens", 8)))
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return {"detail": f"{len(ids)} greedy tokens", "evidence": {"ids": ids, "text": text}}


def main() -> None:
    args = json.loads(sys.argv[1])
    if not rung("import", lambda: imports({"modules": args.get("modules", ["torch", "transformers"])})):
        return
    if args.get("build") and not rung("tiny", lambda: build_once({**args["build"], "out": args["model"]})):
        return
    if not rung("config", lambda: read_config(args["model"])) or not args.get("reference", True):
        return
    emit({**outcome(lambda: reference(args)), "reference": True})


if __name__ == "__main__":
    main()
