"""The default matrix's verdict counts (static tier) with a loopback registry holding Triton-like test images for
26.02-26.08 and 26.10, against the same run with no registry (the catalog as fallback). NGC is not reachable from
the machines this runs on: the images' contents below are stated, and assumed where no document gives them.

    python benchmarks/registry_matrix.py      # needs Debian's docker-registry and openssl (tests/provision.py)
"""

from __future__ import annotations

import collections
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.registry import push_image, registries, triton_layers  # noqa: E402

from stackmatrix.matrix.catalog import load_catalog  # noqa: E402
from stackmatrix.triton.server import free_port  # noqa: E402

# release -> (vLLM shipped: Triton's compatibility.md; transformers: FACTS §12 for 26.03, assumed for the rest)
IMAGES = {
    "26.02": ("0.15.1+nv26.2", "4.57.6"),
    "26.03": ("0.17.1+fb2e3ab6.nv26.3.46332470.cu132", "4.57.5"),
    "26.04": ("0.19.0+6bc3197f.nv26.04.48761268", "5.5.0"),
    "26.05": ("0.19.0+6bc3197f.nv26.04.48761268", "5.5.0"),
    "26.06": ("0.22.1+7b9cb5b7.nv26.6.55098374", "5.6.0"),
    "26.07": ("0.24.0+092c4842.nv26.7.57386851", "5.8.0"),
    "26.08": ("0.27.1+b1082979.nv26.8.62699174", "5.12.0"),
    "26.10": ("0.31.0", "5.17.0"),
}


def counts(template: str, reports: Path) -> collections.Counter[tuple[str, str]]:
    argv = [sys.executable, "-m", "stackmatrix", "run", "--tier", "static", "--quiet", "--reports-dir", str(reports)]
    proc = subprocess.run([*argv, "--triton-image", template], capture_output=True, text=True, cwd=ROOT, check=False)
    print(proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else proc.stderr[-500:])
    with (reports / "latest" / "readiness.csv").open() as f:
        return collections.Counter((r["verdict"], r["reason"]) for r in csv.DictReader(f))


def main() -> int:
    catalog = load_catalog()
    fields = [*catalog.model_json_keys, *catalog.model_json_keys_tp]
    with tempfile.TemporaryDirectory(prefix="registry-matrix-") as tmp:
        root = Path(tmp)
        with registries(root / "registry") as (token, _basic):
            for release, (vllm, transformers) in IMAGES.items():
                layers = triton_layers(
                    catalog.import_sets["I"], catalog.extern_imports["I"], fields, root / release, vllm, transformers
                )
                push_image(token, "public/tritonserver", f"{release}-vllm-python-py3", layers, index=False)
            with_images = counts(f"{token.host}/public/tritonserver:{{release}}-{{variant}}", root / "with")
        without = counts(f"127.0.0.1:{free_port()}/x:{{release}}-{{variant}}", root / "without")
    for label, found in (("with the test images", with_images), ("no registry (catalog fallback)", without)):
        print(f"{label}:", ", ".join(f"{v}{f' {r}' if r else ''} {n}" for (v, r), n in found.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
