"""Runtime tier on this CPU: one cell's wall time split by rung, the tool's overhead against a bare script
doing the same load + generate in the same environment, and a second run with warm caches.

Targets (issue 3): overhead ratio <= 1.10; second run <= 10 % of the first. ``nox -s bench -- runtime``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from stackmatrix.contexts import runtime_context
from stackmatrix.domain import Cell, Outcome, Rung
from stackmatrix.ladder.runtime import RuntimeContext, run_probe, tiny_spec
from stackmatrix.ladder.static import Context
from stackmatrix.matrixfile import default_matrix_path
from stackmatrix.options import resolve_settings
from stackmatrix.pipeline import Session, evaluate, expand_matrix, load, open_session

CELL = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"
BARE = """
import os, sys
if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # as the probes do
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    model = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(model)
    text = tok.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True,
                                   tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=256, seed=0)
    out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(temperature=0, max_tokens=8, min_tokens=8,
                                                                    ignore_eos=True))
    ref = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).generate(
        torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    assert list(out[0].outputs[0].token_ids) == [int(t) for t in ref[0][len(ids):]]
"""


def one_run(session: Session, cell: Cell, ctx: Context, rctx: RuntimeContext) -> tuple[float, list[Outcome]]:
    rctx.memo.clear()
    t0 = time.perf_counter()
    result = evaluate(cell, "", ctx, session, rctx, session.settings.cache_dir / "bench-logs")
    return time.perf_counter() - t0, list(result.outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument("--pairs", type=int, default=3, help="alternating tool/bare samples for the overhead ratio")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="stackmatrix-rbench-") if args.cache_dir is None else None
    cache = args.cache_dir or Path(tmp.name)  # type: ignore[union-attr]
    if Path("/opt/wheels").is_dir():
        os.environ.setdefault("STACKMATRIX_TORCH_FIND_LINKS", "/opt/wheels")
    loaded = load(default_matrix_path())
    session = open_session(resolve_settings({"cache_dir": str(cache)}), loaded.spec.settings.platform)
    cell = next(c for c in expand_matrix(session, loaded).cells if c.id == CELL)
    ctx = Context(loaded.catalog, session.facts, loaded.spec.settings)
    rctx = runtime_context(session)
    shutil.rmtree(cache / "results", ignore_errors=True)  # the first run observes; it must not be a cache hit
    first_s, first = one_run(session, cell, ctx, rctx)
    second_s, _ = one_run(session, cell, ctx, rctx)
    by_rung = {o.probe: o for o in first}
    print(f"cell {CELL}: verdict after first run: {[o.probe + ':' + str(o.status) for o in first]}")
    print(f"{'rung':<12}{'seconds':>10}")
    for name in (Rung.ENV, Rung.IMPORT, Rung.TINY, Rung.CONFIG, Rung.LOAD, Rung.GENERATE, Rung.SERVE):
        if name in by_rung:
            print(f"{name:<12}{by_rung[name].duration_s:>10.1f}")
    # The generate rung's probe process does load + generate + the transformers cross-check; so does BARE.
    # Alternate the two, several times: on 2 shared cores one sample of an ~80 s job varies by +-20 %.
    env_python = Path(by_rung[Rung.ENV].evidence["root"]) / "bin" / "python"
    arch = tiny_spec(cell.model, True)["architecture"]
    checkpoint = next(p for p in (cache / "tiny").iterdir() if p.name.startswith(arch) and "partial" not in p.name)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(BARE)
    tool, bare = [], []
    for _ in range(args.pairs):
        run = run_probe(env_python, "generate.py", {"model": str(checkpoint)}, 900, cache / "bench-logs" / "g.log")
        assert run.result and run.result["status"] == "pass", run.log_tail
        tool.append(run.seconds)
        t0 = time.perf_counter()
        subprocess.run([str(env_python), fh.name, str(checkpoint)], check=True, capture_output=True)
        bare.append(time.perf_counter() - t0)
    bare_s, rung_s = min(bare), min(tool)
    print(f"{'figure':<52}{'value':>10}{'target':>10}")
    print(f"{'first run, whole cell (s)':<52}{first_s:>10.1f}")
    print(f"{'second run, warm caches (s)':<52}{second_s:>10.1f}")
    print(f"{'second / first':<52}{second_s / first_s:>10.3f}{0.10:>10.2f}")
    print(f"{'bare script load+generate+cross-check (s, best of ' + str(args.pairs) + ')':<52}{bare_s:>10.1f}")
    print(f"{'tool generate rung, same work (s, best of ' + str(args.pairs) + ')':<52}{rung_s:>10.1f}")
    print(f"{'overhead ratio tool / bare (best / best)':<52}{rung_s / bare_s:>10.3f}{1.10:>10.2f}")
    median_ratio = statistics.median(tool) / statistics.median(bare)
    print(f"{'overhead ratio tool / bare (median / median)':<52}{median_ratio:>10.3f}")
    print(f"samples tool {[round(t, 1) for t in tool]} bare {[round(b, 1) for b in bare]}")
    session.close()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
