"""Triton Python-backend model: a causal LM served with transformers under the cell's pins (the
``triton-python`` stack). Decoupled, so one request can stream: ``/generate`` answers once, ``/generate_stream``
answers one chunk per token. Its inputs mirror Triton's vLLM backend (``text_input``, ``stream``,
``sampling_parameters``, ``exclude_input_in_output``; output ``text_output``), so one driver talks to both.

Runs inside tritonserver's Python stub, in the interpreter of the config's ``EXECUTION_ENV_PATH``: stdlib,
numpy, torch and transformers only. Greedy decoding (the probes compare text with transformers' greedy output).
"""

from __future__ import annotations

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

DEFAULT_MAX_TOKENS = 16


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else value


class _Sender(BaseStreamer):
    """Sends the text each new token adds (decoding the whole completion each time: a token can complete a
    multi-byte character the previous one started)."""

    def __init__(self, tokenizer, sender, prefix):
        self.tokenizer, self.sender, self.prefix = tokenizer, sender, prefix
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() first hands the streamer the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.sent) and not text.endswith("\ufffd"):
            delta, self.sent = text[len(self.sent) :], text
            self.sender.send(_response(self.prefix + delta))
            self.prefix = ""

    def end(self):
        pass


def _response(text):
    out = pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))
    return pb_utils.InferenceResponse(output_tensors=[out])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = params["model_path"]
        torch.manual_seed(0)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # the runtime tier's CPU: float32 (as its reference ids); a recipe for a GPU names bfloat16 and cuda
        dtype = getattr(torch, params.get("dtype", "float32"))
        self.device = params.get("device", "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device)
        self.model.eval()
        self.max_tokens = int(params.get("max_tokens", DEFAULT_MAX_TOKENS))

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._one(request, sender)
            except Exception as exc:  # the error reaches the client; the model stays loaded
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _one(self, request, sender):
        prompt = _scalar(request, "text_input", "")
        stream = bool(_scalar(request, "stream", False))
        exclude = bool(_scalar(request, "exclude_input_in_output", stream))
        if stream and not exclude:
            raise ValueError("streaming returns only the completion: exclude_input_in_output must not be false")
        sampling = json.loads(_scalar(request, "sampling_parameters", "") or request.parameters() or "{}")
        max_tokens = int(sampling.get("max_tokens", self.max_tokens))
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.device)
        kwargs = {"max_new_tokens": max_tokens, "do_sample": False, "min_new_tokens": max_tokens, "pad_token_id": 0}
        with torch.no_grad():
            if stream:
                self.model.generate(ids, streamer=_Sender(self.tokenizer, sender, ""), **kwargs)
                return
            out = self.model.generate(ids, **kwargs)[0, ids.shape[1] :]
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        sender.send(_response(text if exclude else prompt + text))

    def finalize(self):
        self.model = None
