"""One prepared check for a GPU machine (any host runs it; without a GPU the GPU parts say why they were skipped).

1. The NVML inventory (``stackmatrix.gpus.inventory``) and a packing plan for a few cells on it; each planned GPU
   set (and an index-form and an empty ``CUDA_VISIBLE_DEVICES`` as controls) is given to a child process, which
   reports what torch sees from inside: the pinning is checked where it matters, not assumed.
2. Tiny random-weight Gemma 4 text checkpoints (the three structural kinds: per-layer inputs, MoE, K=V), built
   from the project's own tiny config (``probes/tiny_build.py``: no hub, no network), saved, loaded back with
   transformers and generated greedily on CPU and on CUDA: the token ids must be equal.
3. A JSON summary on stdout, also written to ``$OUT/device_check.json`` when ``OUT`` is set. Exit 0 when every
   check that ran passed.

Run from the repository root: ``python3 benchmarks/device_check.py`` (needs torch and transformers with Gemma 4;
nvidia-ml-py for the inventory). Only stdlib and ``stackmatrix.gpus`` are imported from the project, so the
project's own dependencies need not be installed.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "probes")]

from stackmatrix.gpus.inventory import GIB, Inventory, read_inventory  # noqa: E402
from stackmatrix.gpus.packing import CellRequest, Slot, plan  # noqa: E402

# Per-GPU GiB the ``fit`` rung estimates (8,192 KV tokens, 1 GiB overhead) for catalog cells: a plan with sharing,
# a wait and a cell that can never run on one card.
CELLS = (
    CellRequest("gemma-4-31b-it-tp2", 2, int(30.61 * GIB)),
    CellRequest("gemma-4-31b-it", 1, int(60.21 * GIB)),
    CellRequest("gemma-4-26b-a4b-it", 1, int(49.61 * GIB)),
    CellRequest("gemma-4-e4b-it", 1, int(16.19 * GIB)),
    CellRequest("gemma-4-e2b-it", 1, int(10.57 * GIB)),
)
# The structural kinds of Gemma 4 text decoders (ladder/runtime.py tiny_spec): E-models, the MoE, the dense 31B.
VARIANTS = {
    "e-model": {"per_layer": True, "moe": False, "k_eq_v": False},
    "moe": {"per_layer": False, "moe": True, "k_eq_v": True},
    "dense": {"per_layer": False, "moe": False, "k_eq_v": True},
}
PROMPT = [2, 5, 17, 42, 99, 123, 7, 64]
NEW_TOKENS = 12
CHILD_TIMEOUT_S = 120

CHILD = r"""
import json, os, time
t0 = time.perf_counter()
import torch
n = torch.cuda.device_count()
devices = []
for i in range(n):
    p = torch.cuda.get_device_properties(i)
    uuid = getattr(p, "uuid", None)
    devices.append({"name": p.name, "uuid": f"GPU-{uuid}" if uuid is not None else None,
                    "total_gib": round(p.total_memory / 2**30, 2)})
value = float((torch.arange(4, device="cuda") * 2).sum().item()) if n else None
print(json.dumps({"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device_count": n,
                  "devices": devices, "kernel_result": value, "seconds": round(time.perf_counter() - t0, 2)}))
"""


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - t0, 3)


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A part that raises is reported, not fatal: the summary must come back from a one-shot machine."""
    try:
        return fn()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}


def child(visible: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
    """What a process pinned to ``visible`` sees; ``expected`` are the inventory's cards it must see, in order."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    run = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    if run.returncode != 0:
        return {"cuda_visible_devices": visible, "ok": False, "error": run.stderr[-2000:]}
    seen: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    names_ok = [d["name"] for d in seen["devices"]] == [g["name"] for g in expected]
    uuids = [_uuid(d["uuid"]) for d in seen["devices"]]
    uuids_ok = None in uuids or uuids == [_uuid(g["uuid"]) for g in expected]
    kernel_ok = seen["kernel_result"] == (12.0 if expected else None)
    seen["expected"] = [g["index"] for g in expected]
    seen["ok"] = seen["device_count"] == len(expected) and names_ok and uuids_ok and kernel_ok
    return seen


def _uuid(value: str | None) -> str | None:
    """torch prints a card's UUID bare, NVML with a ``GPU-`` prefix."""
    return None if value is None else value.lower().removeprefix("gpu-")


def pinning(inventory: Inventory) -> dict[str, Any]:
    result = plan(inventory, CELLS)
    cards = {g.index: g.to_json() for g in inventory.gpus}
    checks: list[dict[str, Any]] = []
    firsts: dict[tuple[int, ...], Slot] = {}
    for slot in result.slots:  # one child per GPU set: cells sharing a card see the same thing
        firsts.setdefault(slot.gpus, slot)
    for slot in firsts.values():
        checks.append({"slot": slot.key, **child(slot.cuda_visible_devices, [cards[i] for i in slot.gpus])})
    if inventory.gpus:
        last = inventory.gpus[-1]  # the index form, as a user's --gpus or nvidia-smi names it
        checks.append({"slot": "index-form", **child(str(last.index), [cards[last.index]])})
    checks.append({"slot": "none", **child("", [])})  # the control: an empty mask hides every card
    return {
        "ok": all(c["ok"] for c in checks),
        "plan": result.to_json(),
        "children": checks,
    }


def generation() -> dict[str, Any]:
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    tiny_build = importlib.import_module("tiny_build")
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "cuda_available": bool(torch.cuda.is_available()),
    }
    devices = ["cpu"]
    if info["cuda_available"]:
        _, info["cuda_init_s"] = timed(lambda: torch.zeros(1, device="cuda").sum().item())
        info["cuda_device"] = torch.cuda.get_device_name(0)
        devices.append("cuda")
    else:
        info["cuda_skipped"] = "torch.cuda.is_available() is False"
    variants: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="stackmatrix-tiny-") as tmp:
        for name, features in VARIANTS.items():
            out = Path(tmp) / name
            variants[name] = guarded(partial(_variant, torch, transformers, tiny_build, out, features, devices))
    info["variants"] = variants
    info["ok"] = all(v.get("ok") for v in variants.values())
    return info


def _variant(
    torch: Any, transformers: Any, tiny_build: Any, out: Path, features: dict[str, bool], devices: list[str]
) -> dict[str, Any]:
    def build() -> int:
        torch.manual_seed(0)
        config = transformers.Gemma4TextConfig(**tiny_build.text_config_kwargs(features, tiny_build.VOCAB))
        config.architectures = ["Gemma4ForCausalLM"]
        model = transformers.Gemma4ForCausalLM(config).to(torch.float32)
        model.save_pretrained(out, safe_serialization=True)
        return sum(p.numel() for p in model.parameters())

    parameters, build_s = timed(build)
    result: dict[str, Any] = {"features": features, "parameters": parameters, "build_s": build_s, "runs": {}}
    for device in devices:
        result["runs"][device] = _generate(torch, transformers, out, device)
    cpu = result["runs"]["cpu"]
    if "cuda" in result["runs"]:
        gpu = result["runs"]["cuda"]
        result["ids_equal"] = cpu["ids"] == gpu["ids"]
        result["max_abs_logit_diff_step0"] = max(abs(a - b) for a, b in zip(cpu["step0"], gpu["step0"], strict=True))
        result["ok"] = result["ids_equal"]
    else:
        result["ok"] = len(cpu["ids"]) > 0
    for run in result["runs"].values():
        del run["step0"]  # the comparison is kept, the 512 logits are not
    return result


def _generate(torch: Any, transformers: Any, path: Path, device: str) -> dict[str, Any]:
    model, load_s = timed(
        lambda: transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    )
    ids = torch.tensor([PROMPT], device=device)

    def run() -> Any:
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )

    out, generate_s = timed(run)
    if device == "cuda":
        torch.cuda.synchronize()
    new = out.sequences[0, len(PROMPT) :].tolist()
    # How close greedy came to a tie at each step: a tiny margin explains a CPU/CUDA split if one ever appears.
    margins = [float(s[0].topk(2).values.diff().abs().item()) for s in out.scores]
    return {
        "ids": new,
        "min_top2_margin": round(min(margins), 6),
        "load_s": load_s,
        "generate_s": generate_s,
        "step0": [float(x) for x in out.scores[0][0].cpu().tolist()],
    }


def host() -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    smi = shutil.which("nvidia-smi")
    if smi:  # NVIDIA's own listing, to hold the inventory against
        for key, args in (("nvidia_smi_L", ["-L"]), ("nvidia_smi_topo", ["topo", "-m"])):
            run = subprocess.run([smi, *args], capture_output=True, text=True, timeout=60, check=False)
            facts[key] = (run.stdout or run.stderr).strip()[-3000:]
    return facts


def main() -> int:
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"host": guarded(host)}
    inventory, summary["inventory_s"] = timed(read_inventory)
    summary["inventory"] = inventory.to_json()
    summary["pinning"], summary["pinning_s"] = timed(lambda: guarded(lambda: pinning(inventory)))
    summary["generation"], summary["generation_s"] = timed(lambda: guarded(generation))
    summary["ok"] = bool(summary["pinning"].get("ok") and summary["generation"].get("ok"))
    summary["total_s"] = round(time.perf_counter() - t0, 3)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "device_check.json").write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
