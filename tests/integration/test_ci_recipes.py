"""The CI fan-out recipes in ``examples/ci/`` cannot rot: each YAML parses, and every ``stackmatrix`` command each
recipe runs is taken from the YAML (or, for Buildkite, from the pipeline its generator prints) and run in order in
a temporary workspace, with the CI's variables given the values the CI would give them. The shards' outputs are
where the next job finds them (the recipes' artifacts keep their paths)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from tests.frozen import AS_OF, AS_OF_ENV

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
pytestmark = pytest.mark.network
# Exit codes a command may end with in a recipe: a gate may fail its candidate (1), or be unable to decide it when
# the Triton images' registry cannot be reached (4: NGC, from the machines these tests run on); all else passes.
ALLOWED = {"gate": {0, 1, 4}}


def stackmatrix_commands(script: str) -> Iterator[str]:
    """The ``stackmatrix …`` commands of a shell script, in order (segments between ; && || and pipes, with the
    redirections of their segment kept)."""
    for line in script.replace("\\\n", " ").splitlines():
        for segment in re.split(r";|&&|\|\||(?<![>|])\|(?!\|)", line):
            segment = segment.strip()
            segment = re.sub(r"^(if|then|else|do)\s+", "", segment)
            if segment.startswith("stackmatrix "):
                yield segment


def run(command: str, cwd: Path, env: Mapping[str, str]) -> None:
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=900)
    sub = command.split()[1]
    assert proc.returncode in ALLOWED.get(sub, {0}), f"{command}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr


def workspace(tmp_path: Path) -> Path:
    """A checkout's worth for the commands: the matrix folder (policies, catalogs) where the recipes expect it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copytree(ROOT / "matrix", ws / "matrix")
    return ws


def base_env(ws: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKMATRIX_")}
    env[AS_OF_ENV] = AS_OF  # the recipes' runs read the index in the suite's frozen view
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this stackmatrix
    return {**env, **extra}


def merged_ok(ws: Path) -> None:
    runs = [p for p in (ws / "reports" / "runs").iterdir() if p.is_dir()]
    assert runs, "merge made no run"
    assert any((ws / "reports" / "rendered").glob("*.html")), "report rendered no HTML"


def test_every_recipe_parses() -> None:
    for path in (CI / "github-actions.yml", CI / "gitlab-ci.yml", CI / "buildkite" / "pipeline.yml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_github_actions(tmp_path: Path) -> None:
    doc = yaml.safe_load((CI / "github-actions.yml").read_text())
    assert doc[True]["schedule"] and "pull_request" in doc[True]  # YAML 1.1 reads the key `on` as True
    ws = workspace(tmp_path)
    github = {"${{ github.workspace }}": str(ws)}
    env = base_env(ws, {k: _subst(str(v), github) for k, v in doc["env"].items()})
    out = ws / "github_output"
    # plan: its steps run whole (they compute the shards), with GITHUB_OUTPUT as the runner gives it
    for step in doc["jobs"]["plan"]["steps"]:
        if "run" in step and not step["run"].startswith("pip install"):
            run(step["run"], ws, {**env, "GITHUB_OUTPUT": str(out)})
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    shards, total = json.loads(outputs["shards"]), outputs["total"]
    assert shards == list(range(1, int(total) + 1))
    for shard in shards:
        values = {"${{ matrix.shard }}": str(shard), "${{ needs.plan.outputs.total }}": total}
        for step in doc["jobs"]["shard"]["steps"]:
            for command in stackmatrix_commands(step.get("run", "")):
                run(_subst(command, values), ws, env)
    summary = ws / "step_summary.md"
    for step in doc["jobs"]["merge"]["steps"]:
        for command in stackmatrix_commands(step.get("run", "")):
            run(command, ws, {**env, "GITHUB_STEP_SUMMARY": str(summary)})
    merged_ok(ws)
    assert "Gate" in (ws / "gate.md").read_text() and summary.read_text().strip()


def test_gitlab_ci(tmp_path: Path) -> None:
    doc = yaml.safe_load((CI / "gitlab-ci.yml").read_text())
    ws = workspace(tmp_path)
    variables = {k: str(v).replace("$CI_PROJECT_DIR", str(ws)) for k, v in doc["variables"].items()}
    env = base_env(ws, {**variables, "CI_MERGE_REQUEST_IID": "7"})
    for command in (c for line in doc["plan"]["script"] for c in stackmatrix_commands(line)):
        run(command, ws, env)
    (matrix,) = doc["shard"]["parallel"]["matrix"]
    assert len(matrix["SHARD"]) == int(variables["SHARDS"])
    for shard in matrix["SHARD"]:
        for command in (c for line in doc["shard"]["script"] for c in stackmatrix_commands(line)):
            run(command, ws, {**env, "SHARD": shard})
    for command in (c for line in doc["merge"]["script"] for c in stackmatrix_commands(line)):
        run(command, ws, env)
    merged_ok(ws)
    assert "Gate" in (ws / "gate.md").read_text()


def test_buildkite(tmp_path: Path) -> None:
    doc = yaml.safe_load((CI / "buildkite" / "pipeline.yml").read_text())
    (step,) = doc["steps"]
    assert "examples/ci/buildkite/pipeline.py" in step["command"] and "pipeline upload" in step["command"]
    ws = workspace(tmp_path)
    env = base_env(ws, {})
    generated = subprocess.run(
        [sys.executable, str(CI / "buildkite" / "pipeline.py")], cwd=ws, env=env, capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    pipeline = yaml.safe_load(generated.stdout)  # what `buildkite-agent pipeline upload` reads
    shards = [s for s in pipeline["steps"] if str(s.get("key", "")).startswith("shard-")]
    assert shards and any("wait" in s for s in pipeline["steps"])
    for s in pipeline["steps"]:
        for line in [s.get("command", ""), *s.get("commands", [])]:
            for command in stackmatrix_commands(line):
                run(command, ws, env)
    merged_ok(ws)
    assert "Gate" in (ws / "reports" / "gate.md").read_text()


def _subst(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    assert "${{" not in text, f"a CI expression the test does not know: {text}"
    return text
