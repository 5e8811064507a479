"""A vLLM backend for stackmatrix's tests that imports, from its own ``utils/``, a module vLLM 0.32.0 no longer
has (``vllm.inputs.data``, which the 26.01 backend's ``utils/request.py`` imports): Triton must refuse to load it,
and the runtime tier must name what is missing."""

import triton_python_backend_utils as pb_utils  # noqa: F401
from utils.request import prompt_of  # noqa: F401


class TritonPythonModel:
    def initialize(self, args):
        raise AssertionError("the import above fails first")
