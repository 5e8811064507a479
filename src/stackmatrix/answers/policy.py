"""A gate policy (TOML): the models that must serve, on which targets, at which minimum verdict.

```toml
name = "edge-4xl4"
current = "triton=25.12"            # optional: the stack the site runs today (the baseline's cells)
fail_on = "regression"              # or "unmet": fail on every requirement the candidate misses
[targets.l4x1]
gpu = "L4"
count = 1
tp = 1
[[require]]
model = "google/gemma-4-E2B-it"
target = "l4x1"
min = "predicted"                   # serves > runs-tiny > predicted > override
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from stackmatrix.domain import Model, Target, Verdict
from stackmatrix.errors import BadInput
from stackmatrix.files.tomlfile import Strict, load
from stackmatrix.matrix.file import TargetSpec, check_target, target_of
from stackmatrix.matrix.loaded import Loaded
from stackmatrix.pipeline.stackspec import StackSpec, parse_spec, parse_target


class _Require(Strict):
    model: str
    target: str
    min: Literal["serves", "runs-tiny", "predicted", "override"] = "predicted"
    note: str = ""


class _Policy(Strict):
    name: str
    description: str = ""
    current: str | None = None
    fail_on: Literal["regression", "unmet"] = "regression"
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    require: list[_Require] = Field(min_length=1)


@dataclass(frozen=True)
class Requirement:
    model: Model
    target: Target
    minimum: Verdict
    note: str


@dataclass(frozen=True)
class Policy:
    path: Path
    name: str
    description: str
    current: StackSpec | None
    fail_on: str  # "regression": only what got worse fails; "unmet": every requirement the candidate misses
    requirements: tuple[Requirement, ...]


def load_policy(path: Path, loaded: Loaded) -> Policy:
    raw = load(path, _Policy)
    where = str(path)
    catalog = loaded.catalog
    targets: dict[str, Target] = {}
    for name, t in raw.targets.items():
        check_target(name, t, catalog, where)
        targets[name] = target_of(name, t, catalog, where, loaded.host)
    requirements = []
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(raw.require):
        model = catalog.model(r.model, where=f"{where}: require[{i}].model")
        target = targets.get(r.target) or parse_target(r.target, loaded, where=f"{where}: require[{i}].target")
        if (model.id, target.name) in seen:
            raise BadInput(where, f"require[{i}]", f"{r.model} on {r.target}", "each model x target once")
        seen.add((model.id, target.name))
        requirements.append(Requirement(model, target, Verdict(r.min), r.note))
    current = parse_spec(raw.current, where=f"{where}: current") if raw.current else None
    return Policy(path, raw.name, raw.description, current, raw.fail_on, tuple(requirements))
