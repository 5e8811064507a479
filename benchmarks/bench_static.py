"""Static tier over the full default matrix: cold cache vs warm cache, bytes fetched per vLLM release.

Prints figures and ratios against the issues' targets (warm <= 2 s, cold <= 90 s, <= 5 MB per vLLM release), and
the warm ``stackmatrix run`` of the default matrix (a fresh process, the store included: target <= 1 s) against its
steps and against the same run with ``--fresh`` (every cell probed again).
Run with ``nox -s bench`` (or ``python benchmarks/bench_static.py [--cache-dir DIR]``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

MB = 1_000_000
CLI = (sys.executable, "-m", "stackmatrix")


@dataclass
class Pass:
    seconds: float
    cells: int
    requests: int
    bytes_by_label: dict[str, int]
    wheel_sizes: dict[str, int]


def static_tier(cache_dir: Path, **options: str) -> Pass:
    """Load, expand, fetch facts and evaluate every cell of the default matrix (no storing, no rendering);
    ``options``: settings as the command line gives them (``index_ttl="0"``, ``as_of=...``)."""
    # here, not at the top: ``--parts`` runs this file to time the imports a run makes
    from stackmatrix.executors.static import evaluate, warm
    from stackmatrix.ladder.static import Context
    from stackmatrix.matrix.file import default_matrix_path
    from stackmatrix.matrix.loaded import load
    from stackmatrix.options import resolve_settings
    from stackmatrix.pipeline.session import expand_matrix, open_session

    t0 = time.perf_counter()
    settings = resolve_settings({"cache_dir": str(cache_dir), **options})
    loaded = load(default_matrix_path(), as_of=settings.as_of)
    session = open_session(settings, loaded.spec.settings.platform)
    try:
        cells = expand_matrix(session, loaded).cells
        ctx = Context(loaded.catalog, session.facts, loaded.spec.settings)
        warm(cells, ctx, session)
        for cell in cells:
            evaluate(cell, "", ctx)
        seconds = time.perf_counter() - t0
        sizes = {}
        for c in cells:
            if c.stack.vllm:
                w = session.facts.wheel("vllm", c.stack.vllm, c.stack.python)
                sizes[w.label] = w.size or 0
        return Pass(seconds, len(cells), session.http.requests, dict(session.http.bytes_by_label), sizes)
    finally:
        session.close()


def cli_run(cache_dir: Path, reports: Path, *extra: str) -> float:
    """The whole ``stackmatrix run`` in a fresh process: start-up, load -> render, the store included."""
    t0 = time.perf_counter()
    subprocess.run(
        [*CLI, "run", "--cache-dir", str(cache_dir), "--reports-dir", str(reports), "--quiet", *extra],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def parts(cache_dir: Path, reports: Path) -> dict[str, float]:
    """The warm run's parts, each in a fresh process as the run has it (``--parts``): its imports, each step of
    workflow.RUN, and what is left of the process's wall time (the interpreter's start and exit)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--parts", str(cache_dir), str(reports)], check=True, capture_output=True, text=True
    ).stdout
    wall = time.perf_counter() - t0
    found: dict[str, float] = json.loads(out.splitlines()[-1])
    return {**found, "interpreter start and exit": wall - sum(found.values())}


def _parts_here(cache_dir: str, reports: str) -> None:
    """``--parts``: time this process's imports and steps (the CLI's, as ``stackmatrix run --quiet`` runs them)."""
    t0 = time.perf_counter()
    import contextlib
    import io

    import stackmatrix.cli.main  # noqa: F401  (what start-up costs)
    from stackmatrix.cli.args import build_parser, request_of
    from stackmatrix.pipeline.steps import RUN, Job

    out = {"start-up (import stackmatrix.cli.main)": time.perf_counter() - t0}
    request = request_of(
        build_parser().parse_args(["run", "--cache-dir", cache_dir, "--reports-dir", reports, "--quiet"])
    )
    job = Job(request, request.settings())
    value: object = None
    with contextlib.redirect_stdout(io.StringIO()):
        for step in RUN:
            t0 = time.perf_counter()
            value = step(value, job)
            out[step.__name__] = time.perf_counter() - t0  # its lazy imports included
    if job.session is not None:
        job.session.close()
    print(json.dumps(out))


ADVISE = ["advise", "--current", "triton=26.03", "--model", "google/gemma-4-E4B-it", "--gpu", "l4x1"]


def cli_advise(cache_dir: Path) -> float:
    """``advise`` for one model on one GPU class in a fresh process (the first call reads what the candidates
    need; the timed ones answer from warm caches)."""
    t0 = time.perf_counter()
    subprocess.run([*CLI, *ADVISE, "--cache-dir", str(cache_dir)], stdout=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument("--parts", nargs=2, metavar=("CACHE", "REPORTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parts:
        _parts_here(*args.parts)
        return 0
    tmp = None
    if args.cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="stackmatrix-bench-")
        args.cache_dir = Path(tmp.name)
    cold = static_tier(args.cache_dir)
    warm_runs = [static_tier(args.cache_dir) for _ in range(3)]
    warm_best = min(warm_runs, key=lambda p: p.seconds)
    # Listings asked again (a TTL of 0) against the same with --as-of yesterday: listings fetched after it are settled
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    refreshed = min((static_tier(args.cache_dir, index_ttl="0") for _ in range(3)), key=lambda p: p.seconds)
    as_of = min(
        (static_tier(args.cache_dir, index_ttl="0", as_of=yesterday) for _ in range(3)), key=lambda p: p.seconds
    )
    with tempfile.TemporaryDirectory(prefix="stackmatrix-bench-reports-") as tmp_reports:
        reports = Path(tmp_reports)
        first_s = cli_run(args.cache_dir, reports)  # probes every cell (facts cached): what a cache hit saves
        fresh_s = statistics.median(cli_run(args.cache_dir, reports, "--fresh") for _ in range(3))
        warm_s = [cli_run(args.cache_dir, reports) for _ in range(5)]
        samples = [parts(args.cache_dir, reports) for _ in range(3)]
        advise_cold = cli_advise(args.cache_dir)
        advise_s = statistics.median(cli_advise(args.cache_dir) for _ in range(3))
    split = {name: statistics.median(p[name] for p in samples) for name in samples[0]}

    vllm = {k: v for k, v in cold.bytes_by_label.items() if k.startswith("vllm==")}
    per_release = sorted(vllm.values())
    whole = sum(cold.wheel_sizes.get(k, 0) for k in vllm)
    print(f"default matrix: {cold.cells} cells, {len(cold.wheel_sizes)} vLLM releases read")
    print(f"{'figure':<44}{'value':>14}{'target':>12}{'ratio':>10}")
    rows = [
        ("static tier, cold cache (s)", cold.seconds, 90.0),
        ("static tier, warm cache (s, best of 3)", warm_best.seconds, 2.0),
        ("run, warm store, fresh process (s, median of 5)", statistics.median(warm_s), 1.0),
        ("run --fresh: every cell probed, facts warm (s)", fresh_s, None),
        ("run, first into an empty store (s)", first_s, None),
        ("advise, 1 model x 1 GPU, warm (s, median of 3)", advise_s, 2.0),
        ("advise, its first call after the run (s)", advise_cold, None),
        ("MB fetched per vLLM release (max)", per_release[-1] / MB, 5.0),
        ("MB fetched per vLLM release (median)", statistics.median(per_release) / MB, 5.0),
        ("MB fetched, all wheels and listings (cold)", sum(cold.bytes_by_label.values()) / MB, None),
        ("HTTP requests (cold)", float(cold.requests), None),
        ("HTTP requests (warm)", float(warm_best.requests), None),
        ("warm, listings asked again (--index-ttl 0) (s)", refreshed.seconds, None),
        (f"  the same --as-of {yesterday} (s)", as_of.seconds, None),
        ("  HTTP requests, listings asked again", float(refreshed.requests), None),
        ("  HTTP requests, the same --as-of", float(as_of.requests), None),
    ]
    for name, value, target in rows:
        ratio = f"{value / target:.2f}" if target else ""
        print(f"{name:<44}{value:>14.2f}{(f'{target:.1f}' if target else ''):>12}{ratio:>10}")
    print(
        f"bytes fetched vs downloading the same vLLM wheels whole: {sum(vllm.values()) / MB:.1f} MB vs "
        f"{whole / MB:.0f} MB = 1/{whole / max(1, sum(vllm.values())):.0f}"
    )
    print(f"warm vs cold: {warm_best.seconds / cold.seconds:.3f}")
    print(f"--as-of vs listings asked again: {as_of.seconds / refreshed.seconds:.2f} ({as_of.requests} requests)")
    runs = ", ".join(f"{s:.2f}" for s in warm_s)
    print(f"warm run vs --fresh: {statistics.median(warm_s) / fresh_s:.2f} (warm runs: {runs} s)")
    print("the warm run's parts (a fresh process each, median of 3; each step with its lazy imports):")
    for name, seconds in split.items():
        print(f"  {name:<36}{seconds:>8.3f} s")
    print(f"  {'sum':<36}{sum(split.values()):>8.3f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
