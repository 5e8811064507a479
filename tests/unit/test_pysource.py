from __future__ import annotations

import ast
import sys
from typing import Any

import pytest

from stackmatrix.ladder import pysource
from stackmatrix.ladder.facts import relative_member
from stackmatrix.ladder.pysource import (
    callable_signature,
    import_origin,
    mapping_keys,
    module_symbols,
    vllm_registry,
)

REGISTRY = """
_TEXT_GENERATION_MODELS = {
    "Gemma3ForCausalLM": ("gemma3", "Gemma3ForCausalLM"),
    "Gemma4ForCausalLM": ("gemma4", "Gemma4ForCausalLM"),
}
_MULTIMODAL_MODELS: dict[str, tuple[str, str]] = {
    "Gemma4ForConditionalGeneration": ("gemma4_mm", "Gemma4ForConditionalGeneration"),
}
_VLLM_MODELS = {**_TEXT_GENERATION_MODELS, **_MULTIMODAL_MODELS}
"""


def test_vllm_registry_reads_every_models_dict() -> None:
    reg = vllm_registry(REGISTRY)
    assert reg["Gemma4ForConditionalGeneration"] == ["gemma4_mm", "Gemma4ForConditionalGeneration"]
    assert set(reg) == {"Gemma3ForCausalLM", "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"}


def test_mapping_keys_literal_ordereddict_update_and_merge() -> None:
    src = """
from collections import OrderedDict
CONFIG_MAPPING_NAMES = OrderedDict([("gemma3", "Gemma3Config"), ("gemma4", "Gemma4Config")])
CONFIG_MAPPING_NAMES.update({"mimi_decoder": "MimiDecoderConfig"})
CONFIG_MAPPING_NAMES = OrderedDict(**{"gpt-sw3": "GPT2Config"}, **CONFIG_MAPPING_NAMES)
"""
    keys, origin = mapping_keys(src, "CONFIG_MAPPING_NAMES")
    assert set(keys) == {"gemma3", "gemma4", "mimi_decoder", "gpt-sw3"}
    assert origin is None


def test_mapping_keys_follows_a_relative_import() -> None:
    keys, origin = mapping_keys("from .auto_mappings import CONFIG_MAPPING_NAMES\n", "CONFIG_MAPPING_NAMES")
    assert keys == [] and origin == ".auto_mappings"
    path = "transformers/models/auto/configuration_auto.py"
    assert relative_member(path, origin) == "transformers/models/auto/auto_mappings.py"
    assert relative_member(path, "..utils") == "transformers/models/utils.py"
    assert relative_member(path, "transformers.x") == "transformers/x.py"


def test_module_symbols_sees_defs_assignments_imports_and_guards() -> None:
    src = """
from typing import TYPE_CHECKING
from vllm.inputs.data import TokensPrompt as TP
import numpy as np
X: int = 1
Y = Z = 2
def random_uuid(): ...
class RequestOutput: ...
if TYPE_CHECKING:
    from foo import Guarded
try:
    from bar import Tried
except ImportError:
    Tried = None
"""
    sym = module_symbols(src)
    assert {"TP", "np", "X", "Y", "Z", "random_uuid", "RequestOutput", "Guarded", "Tried"} <= set(sym["names"])
    assert not sym["lazy"]


def test_module_symbols_lazy_getattr_records_strings() -> None:
    sym = module_symbols('_MAP = {"LLM": "vllm.entrypoints.llm"}\ndef __getattr__(name): ...\n')
    assert sym["lazy"] and "LLM" in sym["lazy_strings"]


def test_callable_signature_method_function_dataclass_and_kwargs() -> None:
    src = """
class AsyncLLM:
    @classmethod
    def from_vllm_config(cls, vllm_config, *, stat_loggers=None, usage_context=None): ...
    async def reset_mm_cache(self): ...
def build(engine_args, **kwargs): ...
class EngineArgs:
    model: str = "m"
    tensor_parallel_size: int = 1
class AsyncEngineArgs(EngineArgs):
    enable_log_requests: bool = False
"""
    sig = callable_signature(src, "AsyncLLM.from_vllm_config")
    assert sig is not None and sig["params"] == ["cls", "vllm_config", "stat_loggers", "usage_context"]
    assert not sig["var_keyword"]
    reset = callable_signature(src, "AsyncLLM.reset_mm_cache")
    assert reset is not None and reset["kind"] == "function"
    build = callable_signature(src, "build")
    assert build is not None and build["var_keyword"]
    dc = callable_signature(src, "AsyncEngineArgs")
    assert dc == {"kind": "dataclass", "params": ["enable_log_requests"], "var_keyword": False, "bases": ["EngineArgs"]}
    assert callable_signature(src, "Missing") is None
    assert callable_signature(src, "AsyncLLM.missing") is None


def test_import_origin() -> None:
    assert import_origin("from vllm.engine.arg_utils import AsyncEngineArgs\n", "AsyncEngineArgs") == (
        "vllm.engine.arg_utils:AsyncEngineArgs"
    )
    assert import_origin("x = 1\n", "x") is None


def test_every_parse_holds_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The static tier reads wheels in threads and CPython 3.11's ``ast.parse`` races with itself (gh-106905:
    "AST constructor recursion depth mismatch", seen here as cells recorded not-run): each extractor parses under
    the module's lock."""
    real = ast.parse
    unlocked: list[str] = []

    def parse(source: str, *args: Any, **kwargs: Any) -> ast.Module:  # ast's own: pytest parses with it too
        if sys._getframe(1).f_globals["__name__"] == pysource.__name__ and not pysource._PARSING.locked():
            unlocked.append(source)
        tree: ast.Module = real(source, *args, **kwargs)
        return tree

    monkeypatch.setattr(ast, "parse", parse)
    source = "x = {'a': 1}\nx.update({'b': 2})\ndef f(a, *, b=1): ...\nfrom .m import y\n"
    mapping_keys(source, "x")
    vllm_registry(source)
    module_symbols(source)
    callable_signature(source, "f")
    import_origin(source, "y")
    assert unlocked == []
