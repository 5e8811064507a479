"""Model repositories for tritonserver: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/<files>``.

One ModelConfig as a plain dict gives both forms Triton reads: protobuf text (config.pbtxt on disk) and JSON
(the ``config`` parameter of a repository load, which replaces the file). Enum values are written as their names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackmatrix.files.atomic import atomic_write_bytes, atomic_write_text

# Fields whose string values are protobuf enum names, written unquoted in text format.
ENUM_FIELDS = frozenset({"data_type", "kind"})
# The inputs and output of Triton's vLLM backend: the triton-python model takes the same, so one driver serves both.
TEXT_IO: dict[str, Any] = {
    "input": [
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "stream", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
        {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
        {"name": "exclude_input_in_output", "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    ],
    "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]}],
}


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if key in ENUM_FIELDS:
        return str(value)
    return json.dumps(str(value))  # protobuf text strings take C-style escapes; JSON's are a compatible subset


def to_pbtxt(config: Mapping[str, Any], indent: int = 0) -> str:
    """Protobuf text format: messages as ``key { ... }``, repeated fields as ``key [ ... ]``, maps (``parameters``)
    as one ``key: { key: K value: { ... } }`` entry per item."""
    pad = "  " * indent
    lines = []
    for key, value in config.items():
        if key == "parameters":
            for name, param in value.items():
                inner = to_pbtxt(param, indent + 2)
                lines.append(
                    f"{pad}parameters: {{\n{pad}  key: {json.dumps(name)}\n{pad}  value: {{\n{inner}{pad}  }}\n{pad}}}"
                )
        elif isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            items = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(items) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ " + ", ".join(_scalar(key, v) for v in value) + " ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(key, value)}")
    return "".join(line + "\n" for line in lines)


def string_params(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"string_value": v} for k, v in values.items()}


def python_model_config(name: str, model_path: Path, env_path: Path, max_tokens: int = 16) -> dict[str, Any]:
    """The triton-python stack: a decoupled Python-backend model running transformers in ``env_path``."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        **TEXT_IO,
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": string_params(
            {"EXECUTION_ENV_PATH": str(env_path), "model_path": str(model_path), "max_tokens": str(max_tokens)}
        ),
    }


def vllm_model_config(name: str) -> dict[str, Any]:
    """Triton's vLLM backend: the engine arguments live in ``1/model.json``; KIND_MODEL lets vLLM place itself."""
    return {
        "name": name,
        "backend": "vllm",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        **TEXT_IO,
        "instance_group": [{"count": 1, "kind": "KIND_MODEL"}],
    }


def vllm_model_json(model: str, tp: int, gpu_memory_utilization: float = 0.9, **engine: Any) -> dict[str, Any]:
    """vLLM engine arguments for the backend. tp > 1 under explicit model control needs Ray: with vLLM's default
    multiprocessing executor the backend cannot stop its workers on unload (vllm_backend PR #47; FACTS §4)."""
    args: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": tp,
        "gpu_memory_utilization": gpu_memory_utilization,
        "disable_log_stats": False,
        **engine,
    }
    if tp > 1:
        args["distributed_executor_backend"] = "ray"
    return args


def write_model(repo: Path, config: Mapping[str, Any], files: Mapping[str, bytes]) -> Path:
    """``repo/<name>/config.pbtxt`` and ``repo/<name>/1/<file>`` for each file; returns the model directory."""
    model_dir = repo / str(config["name"])
    atomic_write_text(model_dir / "config.pbtxt", to_pbtxt(config))
    for rel, data in files.items():
        atomic_write_bytes(model_dir / "1" / rel, data)
    return model_dir


def config_json(config: Mapping[str, Any]) -> str:
    """The ``config`` load parameter: ModelConfig as JSON (a string inside the request body)."""
    return json.dumps(config, sort_keys=True)
