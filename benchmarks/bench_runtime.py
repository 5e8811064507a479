"""The runtime tier on this CPU (issue 12's figures). ``nox -s bench -- runtime [--pairs N] [--skip PART]``.

1. ``cell``: one cold cell through the CLI (its environment and tiny checkpoint cached, no stored observation:
   ``--fresh``) vs a bare script in the same environment that starts the same server once and sends the same
   requests (completions with token ids, chat, chat streamed). Alternating pairs; best and median ratio.
   Target <= 1.25.
2. ``old``: the whole cell cold (its tiny checkpoint rebuilt too) vs the code before one engine start per cell
   (``git worktree`` of OLD, the same machine, the same run, alternating). Target <= 0.5.
3. ``sim``: the rung durations of this run's own cells, replayed on simulated inventories (4x L4, 8x H100, 2 CPU
   slots) for the default matrix's runtime selection (the cells the static tier leaves standing, by ladder):
   makespan vs the lower bound max(work / slots, longest task). Target within 10 %.
4. ``jobs``: a real run over >= 4 ladders with ``--jobs 2`` vs ``--jobs 1`` (environments cached, ``--fresh``).
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OLD = "fd72eb9"  # main before issue 12: an offline engine for load + generate, then a server for serve
CELL = "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1"
# Four ladders of two stacks (three checkpoints of one, one of another): the E-variants, the MoE, the dense 31B;
# the second stack takes transformers 5.24.0 (an override cell: vLLM 0.32.0 declares an older bound).
LADDERS = [
    "vllm-0.32.0-tf5.19.0__gemma-4-e2b-it__l4x1",
    "vllm-0.32.0-tf5.19.0__gemma-4-26b-a4b-it__h100x1",
    "vllm-0.32.0-tf5.19.0__gemma-4-31b-it__h100x1",
    "vllm-0.32.0-tf5.24.0__gemma-4-e2b-it__l4x1",
]
BARE = r"""
import json, os, subprocess, sys, time, urllib.request
model = sys.argv[1]
env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
       "--port", "8765", "--dtype", "float32", "--enforce-eager", "--max-model-len", "256",
       "--served-model-name", "tiny", "--seed", "0"]
server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(model)
ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True,
                                         tokenize=False), add_special_tokens=False)
def post(path, body):
    req = urllib.request.Request("http://127.0.0.1:8765" + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=300).read()
while True:
    try:
        urllib.request.urlopen("http://127.0.0.1:8765/v1/models", timeout=5).read()
        break
    except OSError:
        time.sleep(0.5)
common = {"model": "tiny", "max_tokens": 8, "min_tokens": 8, "ignore_eos": True, "temperature": 0}
post("/v1/completions", {**common, "prompt": ids, "return_token_ids": True})
chat = {**common, "messages": [{"role": "user", "content": "hello world"}]}
post("/v1/chat/completions", chat)
post("/v1/chat/completions", {**chat, "stream": True})
server.terminate()
server.wait()
"""


def sh(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def tool(cache: Path, reports: Path, *args: str, old: Path | None = None) -> float:
    """One ``stackmatrix run`` in a fresh interpreter (this checkout's, or the old worktree's)."""
    env = {**os.environ, "STACKMATRIX_CACHE_DIR": str(cache), "STACKMATRIX_REPORTS_DIR": str(reports)}
    if Path("/opt/wheels").is_dir():
        env.setdefault("STACKMATRIX_TORCH_FIND_LINKS", "/opt/wheels")
    if old is not None:
        env["PYTHONPATH"] = str(old / "src")
    argv = [sys.executable, "-m", "stackmatrix", "run", "--tier", "runtime", "--quiet", *args]
    return sh(argv, env, cwd=old or REPO)


def records(reports: Path) -> list[dict[str, Any]]:
    run = max((reports / "runs").iterdir())
    return [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines() if line.strip()]


def ratios(label: str, ours: list[float], theirs: list[float]) -> None:
    pairs = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(f"{label}: ours {[round(x, 1) for x in ours]} s, baseline {[round(x, 1) for x in theirs]} s")
    print(f"  ratio best {min(ours) / min(theirs):.2f}, median of pairs {statistics.median(pairs):.2f}")


def tiny_dirs(cache: Path) -> None:
    shutil.rmtree(cache / "tiny", ignore_errors=True)


def bench_cell(cache: Path, reports: Path, pairs: int) -> None:
    tool(cache, reports, "--only", CELL)  # warm: the environment and the tiny checkpoint
    (cell,) = [r for r in records(reports) if r["cell"] == CELL]
    env_root = next(p["evidence"]["root"] for p in cell["probes"] if p["name"] == "env")
    tiny = next(p["evidence"]["path"] for p in cell["probes"] if p["name"] == "tiny")
    script = cache / "bare.py"
    script.write_text(BARE)
    ours, bare = [], []
    for _ in range(pairs):
        ours.append(tool(cache, reports, "--only", CELL, "--fresh"))
        bare.append(sh([f"{env_root}/bin/python", str(script), tiny]))
    ratios("cold cell (environment and tiny cached) vs a bare script starting the same server once", ours, bare)


def bench_old(cache: Path, reports: Path, pairs: int) -> None:
    old = Path(tempfile.mkdtemp(prefix="sm-old-")) / "old"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), OLD], check=True, capture_output=True
    )
    try:
        ours, before = [], []
        for _ in range(pairs):
            tiny_dirs(cache)
            ours.append(tool(cache, reports, "--only", CELL, "--fresh"))
            tiny_dirs(cache)
            before.append(tool(cache, reports / "old", "--only", CELL, "--fresh", old=old))
        ratios(f"whole cell cold (tiny rebuilt) vs {OLD} (two engine starts, import and config apart)", ours, before)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)


def bench_jobs(cache: Path, reports: Path) -> None:
    only = [a for cell in LADDERS for a in ("--only", cell)]
    tool(cache, reports, *only, "--jobs", "1")  # warm: the environments and tiny checkpoints
    seen = {r["cell"]: r["verdict"] for r in records(reports)}
    one = tool(cache, reports, *only, "--jobs", "1", "--fresh")
    two = tool(cache, reports, *only, "--jobs", "2", "--fresh")
    print(f"{len(LADDERS)} ladders ({seen}): --jobs 1 {one:.1f} s, --jobs 2 {two:.1f} s, ratio {two / one:.2f}")


def bench_sim(reports: Path) -> None:
    from stackmatrix.executors.schedule import Task, simulate
    from stackmatrix.executors.slots import CpuSlots, GpuSlots, Need
    from stackmatrix.gpus.inventory import GIB, GpuInfo, Inventory

    seconds: dict[str, list[float]] = {"env": [], "ladder": []}
    for run in (reports / "runs").iterdir():
        for line in (run / "journal.jsonl").read_text().splitlines():
            rec = json.loads(line)
            probes = {p["name"]: p for p in rec.get("probes", [])}
            if probes.get("serve", {}).get("status") == "pass":
                if "built" in probes["env"]["detail"]:
                    seconds["env"].append(probes["env"]["duration_s"])
                seconds["ladder"].append(sum(p["duration_s"] for n, p in probes.items() if n not in ("env",)))
    ladder_s = statistics.median(seconds["ladder"]) if seconds["ladder"] else 70.0
    env_s = statistics.median(seconds["env"]) if seconds["env"] else 60.0
    ladders = standing_ladders()
    print(
        f"default matrix: {len(ladders)} ladders standing; stored rung durations: ladder {ladder_s:.1f} s, "
        f"environment build {env_s:.1f} s"
    )

    def inventory(name: str, n: int, gib: float) -> Inventory:
        gpus = tuple(GpuInfo(i, f"GPU-{i}", name, int(gib * GIB), int(gib * GIB), f"b{i}") for i in range(n))
        return Inventory(gpus=gpus)

    for label, slots in (
        ("4x L4", GpuSlots(inventory("NVIDIA L4", 4, 24), 0.9)),
        ("8x H100", GpuSlots(inventory("NVIDIA H100 80GB HBM3", 8, 80), 0.9)),
        ("2 CPU slots", CpuSlots(2, [0, 1])),
    ):
        tasks = [Task(key, Need(key, 1, 2 * GIB), (f"env {stack}",), ladder_s, env_s) for key, stack in ladders]
        got = simulate(tasks, slots)
        print(
            f"  {label}: makespan {got.makespan_s / 3600:.2f} h, lower bound {got.lower_bound_s / 3600:.2f} h, "
            f"ratio {got.ratio:.3f} ({got.tasks} ladders, {got.never} never fit)"
        )


def standing_ladders() -> list[tuple[str, str]]:
    """(ladder key, stack) of the default matrix's cells the static tier leaves standing, runnable here."""
    from stackmatrix.executors.static import evaluate, standing, warm
    from stackmatrix.ladder.runtime import tiny_spec
    from stackmatrix.matrix.file import default_matrix_path
    from stackmatrix.matrix.loaded import load
    from stackmatrix.options import resolve_settings
    from stackmatrix.pipeline.contexts import static_context
    from stackmatrix.pipeline.session import expand_matrix, open_session

    loaded = load(default_matrix_path())
    session = open_session(resolve_settings({}), loaded.spec.settings.platform)
    try:
        cells = expand_matrix(session, loaded).cells
        ctx = static_context(session, loaded)
        warm(cells, ctx, session)
        out = {}
        for cell in cells:
            if cell.stack.kind == "vllm" and standing(evaluate(cell, "", ctx)):
                spec = json.dumps(tiny_spec(cell.model, True), sort_keys=True)
                out[f"{cell.stack.id} {spec}"] = cell.stack.id
        return sorted(out.items())
    finally:
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], choices=["cell", "old", "sim", "jobs"])
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep environments between bench runs")
    args = parser.parse_args()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="sm-bench-cache-"))
    reports = Path(tempfile.mkdtemp(prefix="sm-bench-reports-"))
    print(f"cache {cache}, reports {reports}")
    if "cell" not in args.skip:
        bench_cell(cache, reports, args.pairs)
    if "old" not in args.skip:
        bench_old(cache, reports, max(1, args.pairs - 1))
    if "jobs" not in args.skip:
        bench_jobs(cache, reports)
    if "sim" not in args.skip:
        bench_sim(reports)


if __name__ == "__main__":
    main()
