"""Options resolve defaults -> env -> flags, and a bad value is exit 2 naming the flag or the env var."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.options import OPTIONS, resolve_settings


def test_layers_and_types(tmp_path: Path) -> None:
    env = {"STACKMATRIX_JOBS": "3", "STACKMATRIX_OFFLINE": "yes", "STACKMATRIX_READ_TIMEOUT": "2.5"}
    s = resolve_settings({"jobs": "5", "find_links": str(tmp_path)}, env)
    assert (s.jobs, s.offline, s.read_timeout, s.find_links) == (5, True, 2.5, tmp_path)
    assert resolve_settings({}, {}).connect_timeout == 10.0
    assert resolve_settings({"torch_index": ""}, {}).torch_index is None
    assert (
        resolve_settings({"index_url": "https://u:p@m.example/simple/"}, {}).index_url == "https://u:p@m.example/simple"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("jobs", "0"),
        ("jobs", "-3"),
        ("jobs", "many"),
        ("connect_timeout", "nan"),
        ("read_timeout", "inf"),
        ("read_timeout", "0"),
        ("index_ttl", "-1"),
        ("index_url", ""),
        ("index_url", "pypi.org/simple"),
        ("index_url", "ftp://m/simple"),
        ("index_url", "https://"),
        ("index_url", "https://m:99999/simple"),
        ("index_url", "https://m/sim ple"),
        ("torch_index", "file:///opt/wheels"),
        ("find_links", "/nonexistent-wheelhouse"),
        ("torch_find_links", "/nonexistent-wheelhouse"),
        ("weights_dir", "/nonexistent-weights"),
        ("device", "tpu"),
        ("runner", "k8s"),
        ("base_python", "python3"),
        ("triton_image", "t:latest"),
        ("offline", "maybe"),
        ("base_image", "  "),
        ("cache_dir", "a\nb"),
    ],
)
def test_bad_values_name_the_flag_and_the_env_var(key: str, value: str) -> None:
    opt = OPTIONS[key]
    if key != "offline":  # --offline is a switch on the command line; its value comes from the env
        with pytest.raises(BadInput) as exc:
            resolve_settings({key: value}, {})
        assert (exc.value.where, exc.value.key, exc.value.value) == (opt.flag, key, value)
    with pytest.raises(BadInput) as exc:
        resolve_settings({}, {opt.env: value})
    assert (exc.value.where, exc.value.key) == (f"env {opt.env}", key)


def test_a_file_where_a_directory_must_be(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    for key in ("cache_dir", "reports_dir", "find_links"):
        with pytest.raises(BadInput):
            resolve_settings({key: str(tmp_path / "f")}, {})
