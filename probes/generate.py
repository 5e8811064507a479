"""Rungs ``load`` and ``generate``: vLLM's engine loads the checkpoint and decodes greedily; the token ids must
equal transformers' greedy ids for the same checkpoint and prompt.

Runs INSIDE the environment under test. Argument: JSON with ``model``, ``prompt``, ``max_tokens``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import ProbeFailure, main


def reference_ids(model_dir: str, prompt_ids: list[int], max_tokens: int) -> list[int]:
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
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from transformers import AutoTokenizer

    model_dir, max_tokens = args["model"], int(args.get("max_tokens", 8))
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = tok.apply_chat_template(
        [{"role": "user", "content": args.get("prompt", "hello world")}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tok.encode(text, add_special_tokens=False)
    t0 = time.perf_counter()
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_dir, dtype=args.get("dtype", "float32"), enforce_eager=True, max_model_len=256, seed=0)
    except Exception as exc:
        raise ProbeFailure(
            "load-failed", f"vLLM could not load the checkpoint: {type(exc).__name__}: {exc}", stage="load"
        ) from exc
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True)
    out = llm.generate([{"prompt_token_ids": list(prompt_ids)}], params)
    got = list(out[0].outputs[0].token_ids)
    gen_s = time.perf_counter() - t1
    evidence = {
        "prompt_ids": list(prompt_ids),
        "vllm_ids": got,
        "load_s": round(load_s, 2),
        "generate_s": round(gen_s, 2),
        "text": out[0].outputs[0].text,
    }
    if not args.get("reference", True):  # a real checkpoint: no second engine to hold it
        if not got:
            raise ProbeFailure("generate-mismatch", "vLLM generated no token", stage="generate", **evidence)
        return {"detail": f"loaded in {load_s:.1f}s; {len(got)} greedy tokens", "evidence": evidence}
    want = reference_ids(model_dir, list(prompt_ids), max_tokens)
    evidence = {
        "prompt_ids": list(prompt_ids),
        "vllm_ids": got,
        "transformers_ids": want,
        "load_s": round(load_s, 2),
        "generate_s": round(gen_s, 2),
        "text": out[0].outputs[0].text,
    }
    if got != want:
        raise ProbeFailure(
            "generate-mismatch",
            f"vLLM greedy ids {got} != transformers greedy ids {want}",
            stage="generate",
            **evidence,
        )
    return {
        "detail": f"loaded in {load_s:.1f}s; {len(got)} greedy tokens equal transformers' ({got})",
        "evidence": evidence,
    }


if __name__ == "__main__":
    main(run)
