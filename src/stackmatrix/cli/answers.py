"""The parsers of the commands that answer questions (``advise``, ``bisect``): built from light vocabularies only,
so that building the parser never imports the pipeline the answers run on."""

from __future__ import annotations

import argparse
from typing import Any

from stackmatrix.cli.args import add_flags, common, existing_file, resolve, tier
from stackmatrix.domain import PASSING, StackKind
from stackmatrix.matrix.file import SYMBOLS
from stackmatrix.reports.formats import choices

AXES = ("vllm", "transformers", "triton")  # the pins bisect moves
BEST = 3  # advise: candidates shown in full, by default


def add_advise(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "advise", help="the smallest change from the stack you run to one that serves what you need"
    )
    common(p)
    p.add_argument(
        "--current", default=None, help="the stack you run, e.g. triton=26.03 or vllm=0.17.1,transformers=4.57.6"
    )
    p.add_argument("--policy", type=existing_file, default=None, help="a gate policy: its requirements (and current)")
    p.add_argument("--model", action="append", default=[], help="a catalog model that must serve (repeatable)")
    p.add_argument("--gpu", action="append", default=[], help="a target for each --model (repeatable; default l4x1)")
    p.add_argument("--min", choices=[str(v) for v in PASSING], default="predicted", help="the verdict each must reach")
    p.add_argument("--best", type=_positive, default=BEST, help=f"candidates shown in full (default {BEST})")
    p.add_argument("--format", choices=choices("advise"), default="md")
    tier(p)  # runtime: the best --best candidates climb the runtime tier before the answer
    resolve(p)
    add_flags(p, "fresh")
    return p


def add_bisect(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "bisect", help="from which release on an axis a model reaches a verdict (and where it broke)"
    )
    common(p)
    p.add_argument("--axis", choices=AXES, required=True, help="the pin that moves")
    p.add_argument("--model", required=True, help="catalog model id, case-insensitive, org optional")
    p.add_argument("--gpu", default="l4x1", help="target: a matrix target name or <gpu>x<count> (tp=count)")
    p.add_argument("--min", choices=[str(v) for v in PASSING], default="predicted", help="the verdict to reach")
    p.add_argument("--regression", action="store_true", help="also the last release that reaches it")
    p.add_argument("--triton", default=None, help="held fixed: a Triton release (its container, its vLLM)")
    p.add_argument("--vllm", default=None, help="held fixed: a vLLM version")
    p.add_argument("--transformers", default=None, help="held fixed: a version, or a rule: " + ", ".join(SYMBOLS))
    p.add_argument("--kind", choices=[str(k) for k in StackKind], default=None)
    p.add_argument("--format", choices=choices("bisect"), default="md")
    tier(p)
    resolve(p)
    add_flags(p, "fresh")
    return p


def _positive(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 100:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected a number from 1 to 100")
    return int(text)
