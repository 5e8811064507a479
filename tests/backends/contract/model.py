"""A vLLM backend for Triton written for stackmatrix's tests. It keeps the contract of Triton's own vLLM backend
(``backends/vllm/model.py`` in a release's image), learnt by reading it, with none of its code:

- the engine's arguments are ``<model dir>/<version>/model.json``, passed whole to ``AsyncEngineArgs``;
- the model is decoupled; inputs ``text_input``, ``stream``, ``sampling_parameters`` (a JSON string, else the
  request's parameters), ``exclude_input_in_output``; output ``text_output``;
- not streaming: one response, the prompt prepended unless excluded; streaming: one response per new text;
- ``finalize`` stops the engine, so an unload in explicit model control leaves no engine behind.
"""

import asyncio
import json
import os
import threading
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.sampling_params import SamplingParams
from vllm.v1.engine.async_llm import AsyncLLM

INPUTS = [
    ("text_input", "TYPE_STRING", [1], False),
    ("stream", "TYPE_BOOL", [1], True),
    ("sampling_parameters", "TYPE_STRING", [1], True),
    ("exclude_input_in_output", "TYPE_BOOL", [1], True),
]


def _input(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else value


def _text(text):
    out = pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[out])


def _sampling(request):
    raw = _input(request, "sampling_parameters") or request.parameters() or "{}"
    given = json.loads(raw)
    known = {k: given[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "seed") if k in given}
    return SamplingParams(**{"temperature": 0.0, **known})


class TritonPythonModel:
    @classmethod
    def auto_complete_config(cls, config):
        have = {i["name"] for i in config.as_dict().get("input", [])}
        for name, dtype, dims, optional in INPUTS:
            if name not in have:
                config.add_input({"name": name, "data_type": dtype, "dims": dims, "optional": optional})
        if "text_output" not in {o["name"] for o in config.as_dict().get("output", [])}:
            config.add_output({"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]})
        config.set_model_transaction_policy({"decoupled": True})
        config.set_max_batch_size(0)
        return config

    def initialize(self, args):
        with open(os.path.join(pb_utils.get_model_dir(), "model.json")) as fh:
            engine_args = AsyncEngineArgs(**json.load(fh))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = asyncio.run_coroutine_threadsafe(self._start(engine_args), self.loop).result()

    async def _start(self, engine_args):
        return AsyncLLM.from_engine_args(engine_args)

    def execute(self, requests):
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._answer(request), self.loop)
        return None

    async def _answer(self, request):
        sender = request.get_response_sender()
        try:
            prompt = _input(request, "text_input")
            stream = bool(_input(request, "stream", False))
            exclude = bool(_input(request, "exclude_input_in_output", stream))
            if stream and not exclude:
                raise ValueError("streaming with the prompt in the output is not supported")
            sent = ""
            final = None
            async for output in self.engine.generate(prompt, _sampling(request), str(uuid.uuid4())):
                final = output
                text = output.outputs[0].text
                if stream and len(text) > len(sent):
                    sender.send(_text(text[len(sent) :]))
                    sent = text
            if not stream:
                text = final.outputs[0].text if final is not None else ""
                sender.send(_text(text if exclude else prompt + text))
        except Exception as exc:  # the client hears it; the model stays loaded
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self.engine.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
