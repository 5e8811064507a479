"""Buildkite's dynamic pipeline for stackmatrix: ``stackmatrix list --json`` sizes the shards (about 1,500 cells
each, at most 8), then each shard runs ``stackmatrix run --shard i/n`` and uploads its reports, and one step merges,
renders and gates. Prints the pipeline as YAML (JSON is YAML) for ``buildkite-agent pipeline upload``.

Environment: POLICY and CANDIDATE (the gate; default the seed scenario), STACKMATRIX_* as everywhere.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

PER_SHARD, MAX_SHARDS = 1500, 8


def main() -> int:
    listing = subprocess.run(["stackmatrix", "list", "--json"], capture_output=True, text=True, check=False)
    if listing.returncode:
        sys.stderr.write(listing.stderr)
        return listing.returncode
    total = max(1, min(MAX_SHARDS, math.ceil(len(json.loads(listing.stdout)) / PER_SHARD)))
    policy = os.environ.get("POLICY", "matrix/policies/edge-4xl4.toml")
    candidate = os.environ.get("CANDIDATE", "triton=26.04")
    steps: list[object] = [
        {
            "label": f":test_tube: shard {i}/{total}",
            "key": f"shard-{i}",
            "command": f"stackmatrix run --shard {i}/{total} --reports-dir shard-{i} --quiet",
            "artifact_paths": f"shard-{i}/**/*",
        }
        for i in range(1, total + 1)
    ]
    steps.append({"wait": None, "continue_on_failure": True})
    steps.append(
        {
            "label": ":bar_chart: merge, report, gate",
            "key": "merge",
            "commands": [
                'buildkite-agent artifact download "shard-*/**/*" .',
                "stackmatrix merge shard-* --reports-dir reports",
                "stackmatrix report --format all --reports-dir reports --out reports/rendered",
                f"stackmatrix gate --policy {policy} --candidate {candidate} --reports-dir reports"
                " --summary reports/gate.md",
            ],
            "artifact_paths": "reports/**/*",
        }
    )
    steps.append(
        {
            "label": ":memo: gate summary",
            "depends_on": "merge",
            "allow_dependency_failure": True,  # a failed gate is exactly when its summary matters
            "command": (
                "buildkite-agent artifact download reports/gate.md . && buildkite-agent annotate < reports/gate.md"
            ),
        }
    )
    print(json.dumps({"steps": steps}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
