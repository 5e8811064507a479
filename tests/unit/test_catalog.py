from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.matrix.catalog import load_catalog


def test_catalog_loads_and_every_row_has_a_source() -> None:
    cat = load_catalog()
    assert {"L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100-80GB", "H200"} <= set(cat.gpus)
    assert all(g.source for g in cat.gpus.values())
    assert all(m.source for m in cat.models)
    assert all(r.source for r in cat.triton.values())
    variants = {m.variant for m in cat.models}
    assert {"E2B", "E4B", "26B-A4B", "31B"} <= variants
    assert {"it", "base"} <= {m.tuning for m in cat.models}
    assert any(m.quant != "none" for m in cat.models)
    releases = list(cat.triton)
    assert releases[0] == "24.08" and releases == sorted(releases)


def test_unknown_release_facts_stay_unknown() -> None:
    """26.04+ has no backend source in the catalog: the tool must say unknown, not guess (FACTS §8)."""
    cat = load_catalog()
    assert cat.triton["26.03"].import_set == "I" and cat.triton["26.03"].import_set_inferred
    assert cat.triton["26.04"].import_set is None
    assert cat.triton["26.10"].vllm_shipped is None and not cat.triton["26.10"].verified


def test_model_lookup_is_case_insensitive_with_or_without_org() -> None:
    cat = load_catalog()
    assert cat.model("GOOGLE/gemma-4-e4b-it").id == "google/gemma-4-E4B-it"
    assert cat.model("gemma-4-E4B-it").id == "google/gemma-4-E4B-it"
    with pytest.raises(BadInput, match="model"):
        cat.model("gemma-5-E4B-it")


def _copy(matrix_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "matrix"
    shutil.copytree(matrix_dir, dst)
    return dst


def test_unknown_key_names_file_key_and_value(matrix_dir: Path, tmp_path: Path) -> None:
    d = _copy(matrix_dir, tmp_path)
    gpus = d / "gpus.toml"
    gpus.write_text(gpus.read_text().replace('name = "L4"', 'name = "L4"\nmemory_gb = 24', 1))
    with pytest.raises(BadInput) as exc:
        load_catalog(d)
    assert exc.value.where == str(gpus) and exc.value.key == "gpu[0].memory_gb" and exc.value.value == 24
    assert "unknown key" in exc.value.expected


def test_wrong_type(matrix_dir: Path, tmp_path: Path) -> None:
    d = _copy(matrix_dir, tmp_path)
    models = d / "models.toml"
    models.write_text(models.read_text().replace("context_length = 131072", 'context_length = "128k"', 1))
    with pytest.raises(BadInput) as exc:
        load_catalog(d)
    assert exc.value.key == "model[0].context_length" and exc.value.value == "128k"
    assert "integer" in exc.value.expected


def test_malformed_toml(matrix_dir: Path, tmp_path: Path) -> None:
    d = _copy(matrix_dir, tmp_path)
    (d / "triton.toml").write_text("[[release]\nrelease = 1\n")
    with pytest.raises(BadInput) as exc:
        load_catalog(d)
    assert exc.value.key == "<syntax>" and "triton.toml" in exc.value.where


def test_import_set_reference_must_exist(matrix_dir: Path, tmp_path: Path) -> None:
    d = _copy(matrix_dir, tmp_path)
    t = d / "triton.toml"
    t.write_text(t.read_text().replace('import_set = "A"', 'import_set = "Z"', 1))
    with pytest.raises(BadInput) as exc:
        load_catalog(d)
    assert exc.value.key == "release[0].import_set" and exc.value.value == "Z"


def test_duplicate_model_slug(matrix_dir: Path, tmp_path: Path) -> None:
    d = _copy(matrix_dir, tmp_path)
    m = d / "models.toml"
    m.write_text(m.read_text().replace('id = "google/gemma-4-E2B"\n', 'id = "other/gemma-4-E2B-it"\n', 1))
    with pytest.raises(BadInput, match="unique"):
        load_catalog(d)
