"""What the kernel and driver rungs cost the static tier on the default matrix (5,760 cells).

In one process, alternating: the static tier with every rung against the same with the kind modules' ``kernel``
and ``driver`` rungs left out (the baseline, measured in the same run): cold (a fresh cache each, the wheels'
members fetched: the quantization schemes' sources and the torch wheels' metadata are the new reads) and warm
(the facts cached, every cell evaluated again). Prints the figures and the ratios.
Run with ``nox -s bench -- rungs``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_static import static_tier  # the static tier's own pass, shared

AS_OF = "2026-12-01"  # the index as of a fixed day: both passes read the same releases


@contextmanager
def without_new_rungs() -> Iterator[None]:
    """Each kind's static rungs without ``kernel`` and ``driver``: the ladder as it was before them."""
    from stackmatrix.domain import Rung
    from stackmatrix.kinds import KINDS

    saved = [(module, module.static_rungs) for module in KINDS.values()]
    for module, original in saved:
        kept = tuple(r for r in original() if r.rung not in (Rung.KERNEL, Rung.DRIVER))
        setattr(module, "static_rungs", lambda kept=kept: kept)  # noqa: B010  (a module of the registry, patched)
    try:
        yield
    finally:
        for module, original in saved:
            setattr(module, "static_rungs", original)  # noqa: B010


def timed(cache: Path, new: bool) -> float:
    if new:
        return static_tier(cache, as_of=AS_OF).seconds
    with without_new_rungs():
        return static_tier(cache, as_of=AS_OF).seconds


def main() -> int:
    cold: dict[bool, list[float]] = {True: [], False: []}
    for with_them in (False, True, False, True):
        with tempfile.TemporaryDirectory(prefix="stackmatrix-bench-") as tmp:
            cold[with_them].append(timed(Path(tmp), with_them))
    with tempfile.TemporaryDirectory(prefix="stackmatrix-bench-") as tmp:
        cache = Path(tmp)
        timed(cache, True)  # every fact fetched once
        warm: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(3):
            for with_them in (False, True):
                t0 = time.perf_counter()
                timed(cache, with_them)
                warm[with_them].append(time.perf_counter() - t0)
    print(f"{'figure':<48}{'without':>10}{'with':>10}{'ratio':>8}")
    for name, runs in (("cold static tier, default matrix (median of 2)", cold), ("warm (median of 3)", warm)):
        base, new = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"{name:<48}{base:>9.2f}s{new:>9.2f}s{new / base:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
