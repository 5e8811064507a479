"""Image facts from a real OCI registry on loopback (Debian's docker-registry, tests/registry.py): only the layers
holding the backend and the dist-infos are read, a second read fetches nothing, a damaged layer is named, an
unreachable registry is ``registry-unreachable``, credentials work and never show."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackmatrix.cli.main import main
from stackmatrix.matrix.catalog import load_catalog
from stackmatrix.triton.server import free_port
from tests.registry import READER, Instance, Layer, Pushed, push_image, registries, triton_layers

pytestmark = pytest.mark.registry
TAG = "26.04-vllm-python-py3"
SHIPPED_VLLM = "0.19.0+6bc3197f.nv26.04.48761268"


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    with registries(tmp_path_factory.mktemp("registry")) as pair:
        yield pair


@pytest.fixture(scope="module")
def image(regs: tuple[Instance, Instance], tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A Triton 26.04-like image under a 20 MB bottom layer, in the anonymous repository of the token registry."""
    catalog = load_catalog()
    layers = triton_layers(
        catalog.import_sets["I"],
        catalog.extern_imports["I"],
        [*catalog.model_json_keys, *catalog.model_json_keys_tp],
        tmp_path_factory.mktemp("img"),
        SHIPPED_VLLM,
        "5.6.0",
    )
    return push_image(regs[0], "public/tritonserver", TAG, layers, big=20_000_000)


def facts(cache: Path, ref: str, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(["image", "facts", ref, "--cache-dir", str(cache), "--format", "json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_facts_read_only_the_needed_layers(image: Pushed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, got, err = facts(tmp_path, image.ref, capsys=capsys)
    assert code == 0, err
    assert got["digest"] == image.digest  # the linux/amd64 manifest of the index, not the arm64 decoy
    assert got["shipped"]["vllm"]["version"] == SHIPPED_VLLM
    assert got["shipped"]["transformers"]["version"] == "5.6.0"
    assert got["shipped"]["numpy"]["version"] == "1.26.4"  # the upper layer's; the whited-out 1.0.0 is hidden
    assert got["shipped"]["torch"]["version"] == "2.12.0a0+5aff3928d8"  # from the zstd layer
    assert got["backend"]["files"] == ["model.py", "utils/__init__.py", "utils/engine.py"]
    assert "vllm.engine.arg_utils" in got["backend"]["imports"]
    big = image.layers[0][0]
    assert big not in [layer["digest"] for layer in got["layers_read"]]
    assert got["bytes_read"] < 0.10 * image.size, (got["bytes_read"], image.size)
    assert got["learnt_bytes"] < 0.10 * image.size
    # The bottom Python layer was left as soon as torch's METADATA was seen: it was not read to its end.
    assert [layer["to_end"] for layer in got["layers_read"]] == [True, True, True, False]
    code, again, err = facts(tmp_path, image.ref, capsys=capsys)
    assert code == 0 and again["requests"] == 0 and again["bytes_read"] == 0
    assert again["shipped"] == got["shipped"]


def test_the_text_output(image: Pushed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "facts", image.ref, "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"vllm          {SHIPPED_VLLM}" in out and "backend       /opt/tritonserver/backends/vllm: 3 files" in out
    assert "import      vllm.engine.arg_utils: AsyncEngineArgs" in out


def test_a_damaged_layer_is_named(
    regs: tuple[Instance, Instance], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = load_catalog()
    layers = triton_layers(
        catalog.import_sets["I"], catalog.extern_imports["I"], ["model"], tmp_path, "0.19.0", "5.6.0"
    )
    unique = Layer({"etc/unique": os.urandom(16)})  # a top layer no other image shares (blobs are deduplicated)
    pushed = push_image(regs[0], "public/damaged", TAG, [*layers, unique], index=False)
    top = pushed.layers[-1][0]
    blob = regs[0].blob_file(top)
    other = push_image(regs[0], "public/other", TAG, [layers[2]], index=False).layers[-1][0]  # gzip as well
    shutil.copyfile(regs[0].blob_file(other), blob)  # a valid layer, not the one its digest names
    code, _, err = facts(tmp_path / "cache", pushed.ref, capsys=capsys)
    assert code == 4, err
    assert top in err and "does not match its digest" in err and err.count("\n") == 1


def test_an_unreachable_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"127.0.0.1:{free_port()}/public/tritonserver:{TAG}"
    code, _, err = facts(tmp_path, ref, capsys=capsys)
    assert code == 4 and "cannot reach" in err and err.count("\n") == 1


@pytest.mark.network
def test_check_reads_the_stock_stack_from_the_image(
    image: Pushed, regs: tuple[Instance, Instance], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = f"{regs[0].host}/public/tritonserver:{{release}}-{{variant}}"
    argv = ["check", "--triton", "26.04", "--model", "gemma-4-E4B-it", "--format", "json"]
    assert main([*argv, "--cache-dir", str(tmp_path), "--triton-image", template]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert not err, err
    assert result["declared"]["transformers"] == "5.6.0" and result["declared"]["transformers_rule"] == "@image"
    probes = {p["name"]: p for p in result["probes"]}
    assert probes["backend-imports"]["status"] == "pass", probes["backend-imports"]
    assert probes["backend-imports"]["evidence"]["digest"] == image.digest
    assert "read from the image" in probes["backend-imports"]["detail"]
    assert result["verdict"] == "predicted", result
    # No registry: the catalog is the fallback, and what only the image could tell is registry-unreachable.
    dead = f"127.0.0.1:{free_port()}/public/tritonserver:{{release}}-{{variant}}"
    assert main([*argv, "--cache-dir", str(tmp_path), "--triton-image", dead]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["verdict"] == "not-run" and result["reason"] == "registry-unreachable", result
    assert result["declared"]["transformers_rule"] == "@release-day"
    # one short line: how many, why, and how a site without a registry silences it
    assert err.startswith("stackmatrix: warning: 1 Triton image not read (cannot reach") and err.count("\n") == 1
    assert "catalog is the fallback" in err and "STACKMATRIX_IMAGES=none" in err
    # A site that reads no registry says so once: nothing asked, no warning, each record says why.
    assert main([*argv, "--cache-dir", str(tmp_path), "--triton-image", dead, "--images", "none"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert not err, err
    assert result["verdict"] == "not-run" and result["reason"] == "unknown", result
    assert "this site reads no registry (images = none)" in json.dumps(result["probes"])


def _secrets_absent(root: Path, *texts: str) -> None:
    for text in texts:
        assert READER[1] not in text
    for path in root.rglob("*"):
        if path.is_file():
            assert READER[1].encode() not in path.read_bytes(), path


def test_htpasswd_credentials(
    regs: tuple[Instance, Instance], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    basic = regs[1]
    catalog = load_catalog()
    layers = triton_layers(
        catalog.import_sets["I"], catalog.extern_imports["I"], ["model"], tmp_path, "0.19.0", "5.6.0"
    )
    pushed = push_image(basic, "private/tritonserver", TAG, layers, index=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    cache = tmp_path / "cache"
    code, _, err = facts(cache, pushed.ref, capsys=capsys)  # anonymous: refused, and told what to do
    assert code == 2 and "--registry-auth" in err and "docker login" in err
    code, _, err = facts(cache, pushed.ref, "--registry-auth", f"{READER[0]}:wrong-password-0123", capsys=capsys)
    assert code == 2 and "credentials" in err and "wrong-password-0123" not in err and err.count("\n") == 1
    auth = f"{basic.host}={READER[0]}:{READER[1]}"
    code, got, err = facts(cache, pushed.ref, "--registry-auth", auth, capsys=capsys)
    assert code == 0, err
    assert got["shipped"]["vllm"]["version"] == "0.19.0"
    # Docker's config.json, as `docker login` writes it.
    (tmp_path / "docker").mkdir()
    token = base64.b64encode(f"{READER[0]}:{READER[1]}".encode()).decode()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {basic.host: {"auth": token}}}))
    code, got2, err2 = facts(tmp_path / "cache2", pushed.ref, capsys=capsys)
    assert code == 0, err2
    _secrets_absent(cache, err, err2, json.dumps(got), json.dumps(got2))
    _secrets_absent(tmp_path / "cache2")
    assert os.environ["DOCKER_CONFIG"] == str(tmp_path / "docker")


@pytest.mark.network
def test_gate_reads_the_candidate_from_the_image(
    image: Pushed, regs: tuple[Instance, Instance], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gate --candidate triton=26.04`` takes the stock stack from the image; with no registry the candidate's
    unmet requirements are undecided, not failed: exit 4."""
    argv = ["gate", "--policy", "matrix/policies/edge-4xl4.toml", "--candidate", "triton=26.04"]
    root = Path(__file__).resolve().parents[2]
    os.chdir(root)
    template = f"{regs[0].host}/public/tritonserver:{{release}}-{{variant}}"
    code = main(
        [*argv, "--cache-dir", str(tmp_path / "c"), "--reports-dir", str(tmp_path / "r"), "--triton-image", template]
    )
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    assert "triton-26.04" in out and "registry-unreachable" not in out
    dead = f"127.0.0.1:{free_port()}/x:{{release}}-{{variant}}"
    code = main(
        [*argv, "--cache-dir", str(tmp_path / "c"), "--reports-dir", str(tmp_path / "r2"), "--triton-image", dead]
    )
    out, err = capsys.readouterr()
    assert code == 4, (out, err)
    assert "image registry was unreachable" in err
