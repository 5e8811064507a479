"""The pure parts of the triton-vllm ladder: a refused load classified from the backend's traceback, the model
repository and backend directory it lays out, and the processes left in the server's session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from stackmatrix.domain import Reason, Stack, StackKind, Status
from stackmatrix.errors import InfraUnavailable
from stackmatrix.ladder.runtime import Ladder, find_cause
from stackmatrix.ladder.triton_vllm import (
    ServerRungs,
    backend_modules,
    backends_dir,
    container_label,
    engine_args,
    innermost_frame,
    refusal,
    write_repository,
)
from stackmatrix.runners import Container
from stackmatrix.runners.docker import PROBE_LABEL
from stackmatrix.triton.backend import BackendSource
from stackmatrix.triton.server import ContainerTritonServer, ServerInstall, TritonServer, session_processes

FILES = ["model.py", "utils/request.py"]
NO_MODULE = (
    "load failed for model 'gemma': ModuleNotFoundError: No module named 'vllm.inputs.data'\n\nAt:\n"
    "  <frozen importlib._bootstrap>(241): _call_with_frames_removed\n"
    "  /x/backends/vllm/utils/request.py(3): <module>\n"
    "  /x/backends/vllm/model.py(5): <module>\n"
)
NO_NAME = "ImportError: cannot import name 'X' from 'vllm.y' (/venv/site-packages/vllm/y.py)\n\nAt:\n"
KEYWORD = (
    "TypeError: AsyncEngineArgs.__init__() got an unexpected keyword argument 'disable_log_requests'\n\nAt:\n"
    "  /x/backends/vllm/model.py(230): _init_engine\n"
)


def server(tmp_path: Path) -> ServerInstall:
    root = tmp_path / "tritonserver"
    return ServerInstall(root / "bin" / "tritonserver", root / "backends", root / "caches")


# innermost_frame


def test_the_innermost_frame_skips_importlibs_own() -> None:
    assert innermost_frame(NO_MODULE) == "/x/backends/vllm/utils/request.py"


def test_a_message_without_a_traceback_has_no_frame() -> None:
    assert innermost_frame("ModuleNotFoundError: No module named 'vllm.inputs.data'") is None


def test_a_traceback_of_importlib_frames_only_has_no_frame() -> None:
    assert innermost_frame("x\nAt:\n  <frozen importlib._bootstrap>(241): _call_with_frames_removed\n") is None


# refusal


def test_a_module_the_backend_imports_and_vllm_lacks_names_the_backends_file() -> None:
    assert refusal(NO_MODULE, "", FILES) == (
        Reason.BACKEND_IMPORT_MISSING,
        "no module vllm.inputs.data (imported by utils/request.py)",
    )


def test_a_name_the_backend_imports_and_vllm_lacks_names_the_module_and_name() -> None:
    message = NO_NAME + "  /x/backends/vllm/model.py(5): <module>\n"
    assert refusal(message, "", FILES) == (Reason.BACKEND_IMPORT_MISSING, "vllm.y has no X (imported by model.py)")


def test_an_import_error_raised_inside_vllm_itself_is_not_the_backends() -> None:
    message = (
        NO_NAME + "  /venv/lib/python3.11/site-packages/vllm/engine/z.py(3): <module>\n"
        "  /x/backends/vllm/model.py(5): <module>\n"
    )
    reason, _ = refusal(message, "", FILES)
    assert reason is Reason.IMPORT_ERROR
    assert refusal(message, "", FILES) == find_cause(message + "\n")


def test_a_keyword_vllm_refuses_is_a_signature_mismatch_naming_it() -> None:
    assert refusal(KEYWORD, "", FILES) == (
        Reason.BACKEND_SIGNATURE_MISMATCH,
        "AsyncEngineArgs.__init__() refuses the keyword 'disable_log_requests'",
    )


def test_a_model_type_transformers_does_not_know_is_model_type_unknown() -> None:
    log = (
        "ValueError: The checkpoint you are trying to load has model type `gemma4` but Transformers does not "
        "recognize this architecture.\n"
    )
    reason, detail = refusal("load failed for model 'gemma'", log, FILES)
    assert reason is Reason.MODEL_TYPE_UNKNOWN
    assert "gemma4" in detail


def test_out_of_memory_is_oom() -> None:
    message = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert refusal(message, "", FILES)[0] is Reason.OOM


def test_anything_else_is_load_failed_with_the_first_line() -> None:
    message = "\nload failed for model 'gemma': the engine did not start\nmore detail\n"
    assert refusal(message, "", FILES) == (
        Reason.LOAD_FAILED,
        "load failed for model 'gemma': the engine did not start",
    )


# engine_args


def test_a_tiny_checkpoint_runs_in_float32_eager_with_a_short_context(tmp_path: Path) -> None:
    assert engine_args(tmp_path, False, 1, None) == {
        "model": str(tmp_path),
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 256,
    }


def test_a_tiny_checkpoint_on_a_gpu_set_takes_its_placement(tmp_path: Path) -> None:
    """The cell's tp and its share of a GPU it shares with other ladders reach the engine through model.json."""
    assert engine_args(tmp_path, False, 2, 0.5) == {
        "model": str(tmp_path),
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 256,
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.5,
        "distributed_executor_backend": "ray",
    }


def test_a_real_checkpoint_over_two_gpus_names_ray(tmp_path: Path) -> None:
    assert engine_args(tmp_path, True, 2, None) == {
        "model": str(tmp_path),
        "tensor_parallel_size": 2,
        "distributed_executor_backend": "ray",
    }


def test_a_real_checkpoint_gets_the_gpu_share_when_given(tmp_path: Path) -> None:
    assert engine_args(tmp_path, True, 1, 0.8) == {
        "model": str(tmp_path),
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.8,
    }


# write_repository


def test_the_repository_holds_a_decoupled_vllm_model_placed_by_vllm(tmp_path: Path) -> None:
    model = write_repository(tmp_path, {"model": "m"}, None)
    config = (model / "config.pbtxt").read_text()
    assert model == tmp_path / "gemma"
    assert 'backend: "vllm"' in config
    assert "KIND_MODEL" in config
    assert "decoupled: true" in config
    assert "EXECUTION_ENV_PATH" not in config


def test_the_stand_ins_environment_is_named_by_execution_env_path(tmp_path: Path) -> None:
    env = tmp_path / "env"
    config = (write_repository(tmp_path / "repo", {"model": "m"}, env) / "config.pbtxt").read_text()
    assert 'key: "EXECUTION_ENV_PATH"' in config
    assert f'string_value: "{env}"' in config


def test_model_json_holds_the_engine_arguments(tmp_path: Path) -> None:
    args = engine_args(tmp_path / "ckpt", True, 2, 0.7)
    assert json.loads((write_repository(tmp_path, args, None) / "1" / "model.json").read_text()) == args


# backends_dir


def test_the_backend_directory_links_the_servers_python_backend_and_the_release_backend(tmp_path: Path) -> None:
    install = server(tmp_path)
    where = backends_dir(tmp_path / "backends", install, tmp_path / "one")
    assert (where / "python").readlink() == install.backends / "python"
    assert (where / "vllm").readlink() == tmp_path / "one" / "vllm"


def test_another_installed_backend_repoints_vllm(tmp_path: Path) -> None:
    install = server(tmp_path)
    backends_dir(tmp_path / "backends", install, tmp_path / "one")
    where = backends_dir(tmp_path / "backends", install, tmp_path / "two")
    assert (where / "vllm").readlink() == tmp_path / "two" / "vllm"
    assert (where / "python").readlink() == install.backends / "python"


# session_processes


def test_a_pid_that_leads_no_session_has_no_processes() -> None:
    assert session_processes(2**22 - 1) == []


def test_a_child_left_in_the_session_is_listed() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        # the forked child is named "sh" until it has exec'd sleep: wait for the name too
        left = session_processes(proc.pid)
        while not any(p.endswith(" sleep") for p in left) and time.monotonic() < deadline:
            time.sleep(0.05)
            left = session_processes(proc.pid)
        assert len(left) == 1
        assert left[0].endswith(" sleep")
        assert int(left[0].split()[0]) != proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# backend_modules


def test_the_backend_imports_third_party_modules_only() -> None:
    model = (
        b"import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n"
        b"from vllm.engine.arg_utils import AsyncEngineArgs\nfrom utils.x import y\n"
    )
    source = BackendSource((("model.py", model), ("utils/x.py", b"y = 1\n")))
    assert backend_modules(source) == ["numpy", "vllm"]


def test_the_refusals_own_message_names_the_missing_module_before_the_log() -> None:
    log = "ImportError: cannot import name 'foo' from 'vllm.bar'\n"  # an earlier, unrelated line of the server
    assert refusal(NO_MODULE, log, FILES) == (
        Reason.BACKEND_IMPORT_MISSING,
        "no module vllm.inputs.data (imported by utils/request.py)",
    )


def test_a_backend_file_this_python_cannot_parse_is_skipped() -> None:
    source = BackendSource((("model.py", b"import numpy\n"), ("utils/new.py", b"def f(:\n")))
    assert backend_modules(source) == ["numpy"]


# the release's container (the docker runner)


def test_the_containers_server_is_pinned_to_its_gpu_set_on_loopback(tmp_path: Path) -> None:
    """One tritonserver per GPU set: its GPUs by device request and renumbered from 0 inside; the host's network
    with every port on 127.0.0.1; the repository and the checkpoint read-only at their host paths."""
    ckpt = tmp_path / "ckpt"
    container = Container("nvcr.io/nvidia/tritonserver:26.01-vllm-python-py3", (2, 3), "4g")
    server = ContainerTritonServer(
        container,
        [ckpt],
        ServerInstall.in_image(),
        tmp_path / "repo",
        tmp_path / "log",
        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        cpus=(0, 1),
    )
    spec = server.run_spec()
    assert spec["image"] == container.image and spec["network_mode"] == "host" and spec["detach"] is True
    command = spec["command"]
    assert command[0] == "/opt/tritonserver/bin/tritonserver" and "--model-control-mode=explicit" in command
    assert "--backend-directory=/opt/tritonserver/backends" in command
    assert {a.split("=")[1] for a in command if a.endswith("-address=127.0.0.1")} == {"127.0.0.1"}
    assert spec["volumes"] == {
        str(tmp_path / "repo"): {"bind": str(tmp_path / "repo"), "mode": "ro"},
        str(ckpt): {"bind": str(ckpt), "mode": "ro"},
    }
    (request,) = spec["device_requests"]
    assert request["DeviceIDs"] == ["2", "3"] and request["Capabilities"] == [["gpu"]]
    assert spec["environment"] == {"CUDA_VISIBLE_DEVICES": "0,1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert spec["cpuset_cpus"] == "0,1" and spec["shm_size"] == "4g"
    assert spec["labels"][PROBE_LABEL] == "1"  # reaped with the probes if this process dies


class FakeHandle:
    def __init__(self, rows: list[list[str]]) -> None:
        self.attrs = {"State": {"Pid": 100}}
        self.rows = rows

    def reload(self) -> None:
        pass

    def top(self) -> dict[str, Any]:
        return {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": self.rows}


def test_what_outlives_the_unload_in_a_container_is_listed(tmp_path: Path) -> None:
    server = ContainerTritonServer(Container("img"), [], ServerInstall.in_image(), tmp_path, tmp_path / "log")
    assert server.others() == []  # not started
    main = ["root", "100", "90", "0", "10:00", "?", "00:00:01", "tritonserver --model-repository=/r"]
    stub = ["root", "140", "100", "0", "10:00", "?", "00:00:03", "triton_python_backend_stub /r/gemma/1/model.py"]
    server.handle = FakeHandle([main])
    assert server.others() == []
    server.handle = FakeHandle([main, stub])
    assert server.others() == ["140 triton_python_backend_stub /r/gemma/1/model.py"]


def test_the_label_says_which_container_ran(tmp_path: Path) -> None:
    stock = Stack(StackKind.TRITON_VLLM, "0.13.0", "4.57.6", "3.12", triton="26.01", transformers_rule="@image")
    upgrade = Stack(StackKind.TRITON_VLLM, "0.32.0", "5.19.0", "3.12", triton="26.01")
    ladder = Ladder("k", stock, None, {}, tmp_path)
    assert container_label(ladder, "reg/t:26.01-vllm-python-py3") == (
        "tritonserver in Triton 26.01's container reg/t:26.01-vllm-python-py3"
    )
    assert container_label(Ladder("k", upgrade, None, {}, tmp_path), "stackmatrix/triton-vllm:ab") == (
        "tritonserver in Triton 26.01's container with vllm 0.32.0 and transformers 5.19.0 inside "
        "(stackmatrix/triton-vllm:ab)"
    )


class NoStart(TritonServer):
    def start(self) -> None:
        raise InfraUnavailable("tritonserver exited 127 at start: /opt/tritonserver/bin/tritonserver: not found")


def test_a_server_that_does_not_start_leaves_the_load_not_run(tmp_path: Path) -> None:
    """No server to load into says nothing of the backend: an error (not-run, tried again), never a traceback."""
    server = NoStart(ServerInstall.in_image(), tmp_path / "repo", tmp_path / "log")
    with ServerRungs(server, "label", {"server": "label"}, ["model.py"]) as rungs:
        outcome = rungs.load()
    assert (outcome.probe, outcome.status, outcome.reason) == ("load", Status.ERROR, Reason.SERVER_ERROR)
    assert "exited 127" in outcome.detail and outcome.evidence["server"] == "label"
