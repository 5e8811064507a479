"""Static tier over the full default matrix: cold cache vs warm cache, bytes fetched per vLLM release.

Prints figures and ratios against the issue's targets (warm <= 2 s, cold <= 90 s, <= 5 MB per vLLM release).
Run with ``nox -s bench`` (or ``python benchmarks/bench_static.py [--cache-dir DIR]``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from stackmatrix.ladder.static import Context
from stackmatrix.matrixfile import default_matrix_path
from stackmatrix.options import resolve_settings
from stackmatrix.pipeline import evaluate, expand_matrix, load, open_session, warm

MB = 1_000_000


@dataclass
class Pass:
    seconds: float
    cells: int
    requests: int
    bytes_by_label: dict[str, int]
    wheel_sizes: dict[str, int]


def static_tier(cache_dir: Path) -> Pass:
    """Load, expand, fetch facts and evaluate every cell of the default matrix (no storing, no rendering)."""
    t0 = time.perf_counter()
    loaded = load(default_matrix_path())
    session = open_session(resolve_settings({"cache_dir": str(cache_dir)}), loaded.spec.settings.platform)
    try:
        cells = expand_matrix(session, loaded).cells
        ctx = Context(loaded.catalog, session.facts, loaded.spec.settings)
        warm(cells, ctx, session)
        for cell in cells:
            evaluate(cell, ctx, session)
        seconds = time.perf_counter() - t0
        sizes = {}
        for c in cells:
            if c.stack.vllm:
                w = session.facts.wheel("vllm", c.stack.vllm, c.stack.python)
                sizes[w.label] = w.size or 0
        return Pass(seconds, len(cells), session.http.requests, dict(session.http.bytes_by_label), sizes)
    finally:
        session.close()


def cli_run(cache_dir: Path) -> float:
    """The whole ``stackmatrix run`` (a fresh process: start-up, probing, 1 JSON per cell, 4 report formats)."""
    with tempfile.TemporaryDirectory() as reports:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stackmatrix",
                "run",
                "--cache-dir",
                str(cache_dir),
                "--reports-dir",
                reports,
                "--quiet",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="stackmatrix-bench-")
        args.cache_dir = Path(tmp.name)
    cold = static_tier(args.cache_dir)
    warm_runs = [static_tier(args.cache_dir) for _ in range(3)]
    warm_best = min(warm_runs, key=lambda p: p.seconds)
    run_s = min(cli_run(args.cache_dir) for _ in range(2))

    vllm = {k: v for k, v in cold.bytes_by_label.items() if k.startswith("vllm==")}
    per_release = sorted(vllm.values())
    whole = sum(cold.wheel_sizes.get(k, 0) for k in vllm)
    print(f"default matrix: {cold.cells} cells, {len(cold.wheel_sizes)} vLLM releases read")
    print(f"{'figure':<44}{'value':>14}{'target':>12}{'ratio':>10}")
    rows = [
        ("static tier, cold cache (s)", cold.seconds, 90.0),
        ("static tier, warm cache (s, best of 3)", warm_best.seconds, 2.0),
        ("stackmatrix run, warm, whole process (s)", run_s, None),
        ("MB fetched per vLLM release (max)", per_release[-1] / MB, 5.0),
        ("MB fetched per vLLM release (median)", statistics.median(per_release) / MB, 5.0),
        ("MB fetched, all wheels and listings (cold)", sum(cold.bytes_by_label.values()) / MB, None),
        ("HTTP requests (cold)", float(cold.requests), None),
        ("HTTP requests (warm)", float(warm_best.requests), None),
    ]
    for name, value, target in rows:
        ratio = f"{value / target:.2f}" if target else ""
        print(f"{name:<44}{value:>14.2f}{(f'{target:.1f}' if target else ''):>12}{ratio:>10}")
    print(
        f"bytes fetched vs downloading the same vLLM wheels whole: {sum(vllm.values()) / MB:.1f} MB vs "
        f"{whole / MB:.0f} MB = 1/{whole / max(1, sum(vllm.values())):.0f}"
    )
    print(f"warm vs cold: {warm_best.seconds / cold.seconds:.3f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
