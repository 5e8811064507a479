"""Expansion and version rules over a small in-memory index (pure logic; the real index is in integration)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from packaging.specifiers import SpecifierSet

from stackmatrix.errors import BadInput
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.matrix.file import load_matrix
from stackmatrix.pipeline.expand import expand, transformers_for


class FakeIndex:
    uploads: ClassVar[dict[tuple[str, str], str]] = {
        ("vllm", "0.18.0"): "2026-03-20",
        ("vllm", "0.19.0"): "2026-04-03",
        ("vllm", "0.20.0"): "2026-05-01",
        ("transformers", "4.57.6"): "2026-01-10",
        ("transformers", "5.5.0"): "2026-04-02",
        ("transformers", "5.6.0"): "2026-04-20",
        ("transformers", "5.9.0"): "2026-05-20",
    }
    bounds: ClassVar[dict[str, str]] = {"0.18.0": "<5,>=4.56", "0.19.0": "<5,>=4.56", "0.20.0": ">=5.5.0,<5.9"}

    def versions(self, project: str) -> list[str]:
        return sorted((v for p, v in self.uploads if p == project), key=lambda v: tuple(map(int, v.split("."))))

    def newest(self, project: str) -> str:
        return self.versions(project)[-1]

    def upload_time(self, project: str, version: str) -> str | None:
        return self.uploads.get((project, version))

    def dependency_spec(self, project: str, version: str, dependency: str, python: str) -> SpecifierSet | None:
        return SpecifierSet(self.bounds[version])


def test_transformers_rules() -> None:
    idx = FakeIndex()
    assert transformers_for(idx, "0.19.0", "@release-day", "3.12") == "4.57.6"
    assert transformers_for(idx, "0.20.0", "@release-day", "3.12") == "5.6.0"
    assert transformers_for(idx, "0.20.0", "@newest-allowed", "3.12") == "5.6.0"
    assert transformers_for(idx, "0.20.0", "@newest", "3.12") == "5.9.0"
    # a container's cutoff, not the vLLM upload day
    assert transformers_for(idx, "0.20.0", "@release-day", "3.12", before="2026-04-10") == "5.5.0"


MATRIX = """
[targets.l4x1]
gpu = "L4"
count = 1
tp = 1
[targets.l4x2]
gpu = "L4"
count = 2
tp = 2
[models]
include = ["google/gemma-4-E4B-it", "google/gemma-4-31B-it"]
[[stack]]
kind = "vllm"
vllm = { from = "0.19.0" }
transformers = ["@release-day", "@newest-allowed", "@newest"]
[[stack]]
kind = "triton-vllm"
triton = ["26.03"]
vllm = ["0.20.0"]
transformers = ["5.9.0"]
[[exclude]]
cells = "*31b*__l4x1"
reason = "does not fit"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


def test_expand_ids_dedup_and_exclude(tmp_path: Path) -> None:
    cat = load_catalog()
    path = _write(tmp_path, MATRIX)
    exp = expand(load_matrix(path, cat), cat, FakeIndex(), str(path))
    stacks = sorted({c.id.split("__")[0] for c in exp.cells})
    assert stacks == [
        "triton-26.03-vllm0.20.0-tf5.9.0",
        "vllm-0.19.0-tf4.57.6",
        "vllm-0.19.0-tf5.9.0",
        "vllm-0.20.0-tf5.6.0",
        "vllm-0.20.0-tf5.9.0",
    ]
    assert len(exp.cells) == 5 * 3 and len(exp.excluded) == 5
    assert all("31b" not in c.id or c.target.name == "l4x2" for c in exp.cells)
    assert [c.id for c in exp.cells] == sorted(c.id for c in exp.cells)


@pytest.mark.parametrize(
    ("old", "new", "key", "value"),
    [
        ('gpu = "L4"', 'gpu = "L5"', "targets.l4x1.gpu", "L5"),
        ("tp = 2", "tp = 4", "targets.l4x2.tp", 4),
        ('triton = ["26.03"]', 'triton = ["26.13"]', "stack[1].triton", "26.13"),
        ('"@newest"]', '"@latest"]', "stack[0].transformers[2]", "@latest"),
        ('"@newest"]', '"5.5.0/../x"]', "stack[0].transformers[2]", "5.5.0/../x"),
        ('vllm = ["0.20.0"]', 'vllm = { from = "0.x" }', "stack[1].vllm.from", "0.x"),
        ("[targets.l4x1]", "[targets.'../l4x1']", "targets.../l4x1", "../l4x1"),
        ("[targets.l4x1]", "[targets.'l4__x1']", "targets.l4__x1", "l4__x1"),
        ("[models]", '[settings]\nplatform = ""\n[models]', "settings.platform", ""),
        ("[models]", "[settings]\noverhead_gib = inf\n[models]", "settings.overhead_gib", float("inf")),
        ('vllm = ["0.20.0"]', 'vllm = ["0.99.0"]', "stack[1].vllm", "0.99.0"),
        ('"google/gemma-4-31B-it"', '"google/gemma-9-*"', "models.include[1]", "google/gemma-9-*"),
        ('kind = "vllm"', 'kind = "sglang"', "stack[0].kind", "sglang"),
        ("[[exclude]]", "[[exclude]]\ncolour = 1", "exclude[0].colour", 1),
    ],
)
def test_bad_matrix_names_file_key_value(tmp_path: Path, old: str, new: str, key: str, value: object) -> None:
    cat = load_catalog()
    path = _write(tmp_path, MATRIX.replace(old, new, 1))
    with pytest.raises(BadInput) as exc:
        expand(load_matrix(path, cat), cat, FakeIndex(), str(path))
    assert (exc.value.where, exc.value.key, exc.value.value) == (str(path), key, value)
    assert exc.value.expected


def test_default_matrix_is_valid_and_large(matrix_dir: Path) -> None:
    cat = load_catalog()
    spec = load_matrix(matrix_dir / "default.toml", cat)
    assert set(spec.targets) == {"l4x1", "l4x2", "h100x1"}
    assert spec.targets["l4x2"].tp == 2


def test_triton_python_stacks_pin_triton_and_transformers_only(tmp_path: Path) -> None:
    cat = load_catalog()
    extra = '\n[[stack]]\nkind = "triton-python"\ntriton = ["24.10", "26.03"]\ntransformers = ["5.6.0", "@newest"]\n'
    path = _write(tmp_path, MATRIX + extra)
    exp = expand(load_matrix(path, cat), cat, FakeIndex(), str(path))
    tpy = sorted({c.id.split("__")[0] for c in exp.cells if c.id.startswith("tpy-")})
    assert tpy == ["tpy-24.10-tf5.6.0", "tpy-24.10-tf5.9.0", "tpy-26.03-tf5.6.0", "tpy-26.03-tf5.9.0"]
    stack = next(c.stack for c in exp.cells if c.id.startswith("tpy-24.10"))
    assert stack.vllm is None and stack.python == "3.10"  # the 24.10 container's Python


@pytest.mark.parametrize(
    ("rule", "key", "value"),
    [
        (
            'kind = "triton-python"\ntriton = ["26.03"]\nvllm = ["0.20.0"]\ntransformers = ["5.6.0"]',
            "stack[2]",
            "triton-python",
        ),
        ('kind = "triton-python"\ntriton = ["26.03"]', "stack[2]", "triton-python"),
        ('kind = "triton-python"\ntransformers = ["5.6.0"]', "stack[2].triton", None),
        ('kind = "triton-python"\ntriton = ["26.03"]\ntransformers = ["9.9.9"]', "stack[2].transformers", "9.9.9"),
    ],
)
def test_bad_triton_python_rules_name_the_key(tmp_path: Path, rule: str, key: str, value: object) -> None:
    cat = load_catalog()
    path = _write(tmp_path, MATRIX + "\n[[stack]]\n" + rule + "\n")
    with pytest.raises(BadInput) as exc:
        expand(load_matrix(path, cat), cat, FakeIndex(), str(path))
    assert (exc.value.key, exc.value.value) == (key, value)
