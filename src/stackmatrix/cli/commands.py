"""Every command as one record: its name, its help, the function that answers it and the Option records it takes
(a shared record as declared, or a variant of it for this command). cli/args.py builds the parser from these;
the functions live in cli/probe.py, cli/stored.py and cli/image.py, imported only when run: the tool starts
often (CI shards, gates, diffs) and a diff should not pay for pandas."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from stackmatrix.matrix.file import SYMBOLS
from stackmatrix.options import OPTIONS, Option, given_path
from stackmatrix.reports.formats import VIEWS, choices
from stackmatrix.request import Request as R


@dataclass(frozen=True)
class Command:
    name: str  # "tiny build": a command of a group
    help: str
    run: str  # "<module under cli>:<function>", imported when the command runs
    takes: tuple[Option[Any], ...]
    stores: bool = True  # False: it answers on the terminal (nothing stored, no progress)
    example: str = ""  # one command line a user would type (its --help shows it)


def _format(answer: str, default: str) -> Option[str]:
    return R.format.but(
        choices=tuple(choices(answer)), default=default, help=f"the answer's format (default {default})"
    )


DESCRIPTION = (
    "which Triton Inference Server release x vLLM x transformers serves which model on which GPUs, with evidence; "
    "and the smallest change that makes it serve"
)

# The matrix, a configuration file and every setting (a site's, with its env var).
COMMON: Final[tuple[Option[Any], ...]] = (R.matrix, R.config, *OPTIONS.values())
SELECTION: Final[tuple[Option[Any], ...]] = (R.keyword, R.only, R.shard)
RUNTIME: Final[tuple[Option[Any], ...]] = (
    R.override,
    R.full_class,
)  # how the runtime tier's environments and checkpoints are made
TIER: Final[tuple[Option[Any], ...]] = (R.tier, *RUNTIME)
STORED: Final[tuple[Option[Any], ...]] = (OPTIONS["reports_dir"],)  # commands over stored runs: only where the runs are
HELD = "held fixed: "

_DECLARED: Final[tuple[Command, ...]] = (
    Command(
        "list",
        "expand the matrix and list the selected cell ids",
        "probe:cmd_list",
        (*COMMON, *SELECTION, R.plan, R.json),
    ),
    Command(
        "run",
        "probe the selected cells, store the run, render the readiness table",
        "probe:cmd_run",
        (*COMMON, *SELECTION, *TIER, R.resolve, R.plan, R.resume, R.fresh, R.detach, R.quiet, R.table),
    ),
    Command(
        "advise",
        "the smallest change from the stack you run to one that serves what you need",
        "probe:cmd_advise",
        (
            *COMMON,
            R.current,
            R.policy,
            R.models,
            R.targets,
            R.min.but(help="the verdict each must reach"),
            R.best,
            _format("advise", "md"),
            R.answer_tier,
            *RUNTIME,
            R.resolve,
            R.fresh,
        ),
        stores=False,
    ),
    Command(
        "bisect",
        "from which release on an axis a model reaches a verdict (and where it broke)",
        "probe:cmd_bisect",
        (
            *COMMON,
            R.axis.but(required=True),
            R.model,
            R.gpu,
            R.min,
            R.regression,
            R.triton.but(help=HELD + "a Triton release (its container, its vLLM)"),
            R.vllm.but(help=HELD + "a vLLM version"),
            R.transformers.but(help=HELD + "a version, or a rule: " + ", ".join(SYMBOLS)),
            R.kind.but(help="stack kind (default: from the pins held fixed)"),
            _format("bisect", "md"),
            *TIER,
            R.resolve,
            R.fresh,
        ),
        stores=False,
    ),
    Command(
        "collect",
        "wait for a run's executor tasks, fold their records in, store and render",
        "probe:cmd_collect",
        (*COMMON, R.run.but(help="run id or prefix (default: the newest)"), R.quiet, R.table),
    ),
    Command(
        "worker",
        "run one task of a submitted array (its batch script calls this)",
        "probe:cmd_worker",
        (*COMMON, R.submission, R.task),
        stores=False,
    ),
    Command(
        "tiny build",
        "build (or reuse) one, inside an environment with that transformers",
        "probe:cmd_tiny",
        (
            *COMMON,
            R.model.but(flag="model"),
            R.transformers.but(help="transformers version (default: the newest)"),
            *RUNTIME,
        ),
    ),
    Command(
        "image facts",
        "the versions an image ships and its Triton vLLM backend's imports",
        "image:cmd_image",
        (*COMMON, R.ref, _format("image", "table")),
    ),
    Command(
        "image build",
        "build or pull the images the selected cells need under the docker runner, and push them",
        "probe:cmd_image_build",
        (
            *COMMON,
            *SELECTION,
            R.plan,
            R.push,
            R.override,
        ),
    ),
    Command(
        "check",
        "one cell, the question a release gate asks",
        "probe:cmd_check",
        (
            *COMMON,
            R.model,
            R.triton,
            R.vllm,
            R.transformers,
            R.kind,
            R.gpu,
            _format("check", "table"),
            *TIER,
            R.resolve,
            R.fresh,
        ),
        stores=False,
    ),
    Command(
        "stage",
        "download every wheel the selected cells need into a wheelhouse (air-gapped)",
        "probe:cmd_stage",
        (*COMMON, *SELECTION, R.wheelhouse, R.cert, R.override),
    ),
    Command(
        "history",
        "a cell's verdicts over every stored run",
        "stored:cmd_history",
        (*STORED, R.keyword, R.only, R.last, _format("history", "text")),
    ),
    Command(
        "diff",
        "cells whose verdict or reason changed between two runs (default: the two latest)",
        "stored:cmd_diff",
        (*STORED, R.runs, _format("diff", "text"), R.output),
    ),
    Command(
        "report",
        "render a stored run (default: the latest) in any format",
        "stored:cmd_report",
        (
            *STORED,
            R.keyword,
            R.only,
            R.run,
            R.formats.but(help=f"comma-separated: {', '.join(choices('report'))}, or all (default all; repeatable)"),
            R.view.but(choices=VIEWS),
            R.out,
            R.title,
        ),
    ),
    Command(
        "recipe",
        "what it takes to run a cell that serves: hashed lock and server line, or image and model repository",
        "recipe:cmd_recipe",
        (*COMMON, R.cell, R.from_run, R.out.but(help="where the recipe goes (default <reports>/recipes/<cell>)")),
        stores=False,
    ),
    Command(
        "merge",
        "fold the runs of --shard i/n jobs into one run",
        "stored:cmd_merge",
        (*STORED, R.dirs, R.exit_status),
    ),
    Command(
        "gate",
        "may we upgrade? probe a candidate stack against a policy and a baseline",
        "stored:cmd_gate",
        (
            *COMMON,
            R.policy.but(check=given_path, required=True, help="policy TOML: the models x targets that must serve"),
            R.candidate,
            R.baseline,
            R.summary,
            *TIER,
            R.resolve,
            R.fresh,
        ),
    ),
)
# One example per command, shown by its --help (and the first few by stackmatrix --help).
EXAMPLES: Final = {
    "run": "stackmatrix run --only 'vllm-0.32*' --tier runtime",
    "check": "stackmatrix check --model gemma-4-E4B-it --triton 26.03 --format json",
    "advise": "stackmatrix advise --current triton=26.03 --model gemma-4-E4B-it --gpu l4x1",
    "report": "stackmatrix report --format html,md --out /tmp/readiness",
    "gate": "stackmatrix gate --policy matrix/policies/edge-4xl4.toml --candidate triton=26.04",
    "list": "stackmatrix list -k 'e4b and l4x1' --json",
    "bisect": "stackmatrix bisect --axis vllm --model gemma-4-E4B-it --regression",
    "collect": "stackmatrix collect 20261206T2218",
    "worker": "stackmatrix worker reports/runs/<run>/slurm/1 --task 0",
    "tiny build": "stackmatrix tiny build gemma-4-E2B-it --transformers 5.19.0",
    "image facts": "stackmatrix image facts nvcr.io/nvidia/tritonserver:26.04-vllm-python-py3 --format json",
    "image build": "stackmatrix image build -k 'triton-26.04' --push registry.lab:5000/mirror",
    "stage": "stackmatrix stage --only 'vllm-0.32.0*' --wheelhouse /srv/wheels",
    "history": "stackmatrix history -k 'gemma-4-e4b-it and l4x1' --last 5",
    "diff": "stackmatrix diff --format md --output diff.md",
    "merge": "stackmatrix merge shard-1/ shard-2/ --exit-status shard-2=137",
    "recipe": "stackmatrix recipe vllm-0.19.1-tf5.5.4__gemma-4-e4b-it__l4x1 --out ./e4b-on-l4",
}
COMMANDS: Final = tuple(replace(c, example=EXAMPLES[c.name]) for c in _DECLARED)
GROUPS: Final = {
    "tiny": "tiny random-weight checkpoints of a catalog model's architecture",
    "image": "container images: what one holds (read from its registry), and the ones a run needs (built)",
}
