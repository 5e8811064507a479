"""Drives one tritonserver over HTTP: the repository extension (load with a config override, unload, index) and
health through ``tritonclient``; the generate extension (``/generate``, ``/generate_stream`` as server-sent
events), which tritonclient does not speak, and the Prometheus metrics through httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import tritonclient.http as triton_http  # type: ignore[import-untyped]
from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

from stackmatrix.triton.repository import config_json


class TritonError(Exception):
    """The server refused a request: ``status`` is its HTTP status (a string, as tritonclient gives it)."""

    def __init__(self, what: str, status: str | None, message: str) -> None:
        self.what, self.status, self.message = what, status, message
        super().__init__(f"{what}: {message} (status {status})")


@dataclass(frozen=True)
class Generated:
    text: str
    chunks: int
    seconds: float


class TritonDriver:
    def __init__(self, url: str, metrics_url: str, timeout: float = 900.0) -> None:
        self.url, self.metrics_url = url, metrics_url
        # Loading a real checkpoint takes minutes: the network timeout must outlast it.
        self.client = triton_http.InferenceServerClient(url=url, connection_timeout=10.0, network_timeout=timeout)
        self.http = httpx.Client(trust_env=False, timeout=timeout)

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def __enter__(self) -> TritonDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            raise TritonError(what, exc.status(), str(exc.message())) from None

    def live(self) -> bool:
        return bool(self._call("live", self.client.is_server_live))

    def server_version(self) -> str:
        return str(self._call("server metadata", self.client.get_server_metadata).get("version"))

    def load(self, model: str, config: Mapping[str, Any] | None = None) -> None:
        """Load (or reload) ``model``; ``config`` replaces its config.pbtxt for this load."""
        self._call("load", self.client.load_model, model, config=config_json(config) if config else None)

    def ready(self, model: str) -> bool:
        return bool(self._call("ready", self.client.is_model_ready, model))

    def unload(self, model: str, wait: float = 60.0) -> None:
        """Unload, and wait until the index says so: unloading finishes in the background (READY, then
        UNLOADING, then UNAVAILABLE)."""
        self._call("unload", self.client.unload_model, model)
        deadline = time.monotonic() + wait
        while (state := self.state(model)) not in (None, "UNAVAILABLE"):
            if time.monotonic() > deadline:
                raise TritonError("unload", None, f"{model} still {state} {wait:.0f}s after unload")
            time.sleep(0.1)

    def state(self, model: str) -> str | None:
        """The model's state in the repository index (None: not in it, e.g. a model loaded only by API)."""
        states = {row.get("name"): row.get("state") for row in self.index()}
        state = states.get(model)
        return None if state is None else str(state)

    def index(self) -> list[dict[str, Any]]:
        """Every model in the repository: name, version, state (READY / UNAVAILABLE / ...) and reason."""
        rows: list[dict[str, Any]] = self._call("index", self.client.get_model_repository_index)
        return rows

    def generate(self, model: str, prompt: str, **parameters: Any) -> Generated:
        t0 = time.perf_counter()
        body = {"text_input": prompt, "parameters": parameters}
        r = self.http.post(f"http://{self.url}/v2/models/{model}/generate", json=body)
        doc = r.json()
        if r.status_code != 200 or "error" in doc:
            raise TritonError("generate", str(r.status_code), str(doc.get("error", doc)))
        return Generated(str(doc["text_output"]), 1, time.perf_counter() - t0)

    def generate_stream(self, model: str, prompt: str, **parameters: Any) -> Generated:
        """Server-sent events, one ``data: {...}`` per response. The status is fixed by the first chunk, so an
        error can arrive later as a chunk under a 200 (FACTS §3)."""
        t0 = time.perf_counter()
        body = {"text_input": prompt, "stream": True, "parameters": parameters}
        parts: list[str] = []
        with self.http.stream("POST", f"http://{self.url}/v2/models/{model}/generate_stream", json=body) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                doc = json.loads(line[len("data:") :])
                if r.status_code != 200 or "error" in doc:
                    raise TritonError("generate_stream", str(r.status_code), str(doc.get("error", doc)))
                parts.append(str(doc.get("text_output", "")))
        if not parts:
            raise TritonError("generate_stream", str(r.status_code), "no event in the stream")
        return Generated("".join(parts), len(parts), time.perf_counter() - t0)

    def metrics_counting(self, succeeded: int, wait: float = 10.0) -> dict[str, float]:
        """The metrics once they count ``succeeded`` successful requests, or as they are after ``wait`` seconds:
        counters land when a request's last response is released, a moment after the client saw it."""
        deadline = time.monotonic() + wait
        while (metrics := self.metrics()).get("nv_inference_request_success", 0.0) < succeeded:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        return metrics

    def metrics(self) -> dict[str, float]:
        """The Prometheus text, summed per metric name (labels dropped): e.g. ``nv_inference_request_success``."""
        out: dict[str, float] = {}
        for line in self.http.get(self.metrics_url).text.splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            try:
                out[name] = out.get(name, 0.0) + float(value)
            except ValueError:
                continue
        return out
