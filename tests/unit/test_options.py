"""Options are declared once (one record each), resolve defaults -> env -> flags with where each value came from,
and a bad value is exit 2 naming the flag or the env var; merge compares the options that change results."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import stackmatrix
from stackmatrix.errors import BadInput
from stackmatrix.matrix.file import Settings as MatrixSettings
from stackmatrix.options import OPTIONS, Option, Settings, resolve_settings
from stackmatrix.request import FLAGS, Request, affects_results, differing_options, option_sources


def test_layers_and_types(tmp_path: Path) -> None:
    env = {"STACKMATRIX_JOBS": "3", "STACKMATRIX_OFFLINE": "yes", "STACKMATRIX_READ_TIMEOUT": "2.5"}
    s = resolve_settings({"jobs": "5", "find_links": str(tmp_path)}, env)
    assert (s.jobs, s.offline, s.read_timeout, s.find_links) == (5, True, 2.5, tmp_path)
    assert resolve_settings({}, {}).connect_timeout == 10.0
    assert resolve_settings({"torch_index": ""}, {}).torch_index is None
    assert (
        resolve_settings({"index_url": "https://u:p@m.example/simple/"}, {}).index_url == "https://u:p@m.example/simple"
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("jobs", "0"),
        ("jobs", "-3"),
        ("jobs", "many"),
        ("connect_timeout", "nan"),
        ("read_timeout", "inf"),
        ("read_timeout", "0"),
        ("index_ttl", "-1"),
        ("index_url", ""),
        ("index_url", "pypi.org/simple"),
        ("index_url", "ftp://m/simple"),
        ("index_url", "https://"),
        ("index_url", "https://m:99999/simple"),
        ("index_url", "https://m/sim ple"),
        ("torch_index", "file:///opt/wheels"),
        ("find_links", "/nonexistent-wheelhouse"),
        ("torch_find_links", "/nonexistent-wheelhouse"),
        ("weights_dir", "/nonexistent-weights"),
        ("device", "tpu"),
        ("runner", "k8s"),
        ("base_python", "python3"),
        ("triton_image", "t:latest"),
        ("offline", "maybe"),
        ("base_image", "  "),
        ("cache_dir", "a\nb"),
        ("executor", "kubernetes"),
        ("slurm_args", "constraint=a100"),
        ("slurm_args", "--comment 'unclosed"),
        ("slurm_tasks", "0"),
        ("slurm_max_running", "-1"),
        ("slurm_poll", "0"),
        ("slurm_partition", " "),
    ],
)
def test_bad_values_name_the_flag_and_the_env_var(key: str, value: str) -> None:
    opt = OPTIONS[key]
    if key != "offline":  # --offline is a switch on the command line; its value comes from the env
        with pytest.raises(BadInput) as exc:
            resolve_settings({key: value}, {})
        assert (exc.value.where, exc.value.key, exc.value.value) == (opt.flag, key, value)
    with pytest.raises(BadInput) as exc:
        resolve_settings({}, {opt.env: value})
    assert (exc.value.where, exc.value.key) == (f"env {opt.env}", key)


def test_a_file_where_a_directory_must_be(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    for key in ("cache_dir", "reports_dir", "find_links"):
        with pytest.raises(BadInput):
            resolve_settings({key: str(tmp_path / "f")}, {})


def test_sources_say_where_each_value_came_from(tmp_path: Path) -> None:
    s = resolve_settings({"jobs": "5", "offline": True}, {"STACKMATRIX_DEVICE": "gpu", "STACKMATRIX_JOBS": "3"})
    assert (s.sources["jobs"], s.sources["device"], s.sources["offline"], s.sources["runner"]) == (
        "cli --jobs",
        "env STACKMATRIX_DEVICE",
        "cli --offline",
        "default",
    )


def test_one_record_per_option_is_the_typed_attribute() -> None:
    """The record is the Settings attribute (on the class) and reads as its checked value (on an instance): names,
    flags and variables follow one pattern, and every default passes its own check."""
    s = resolve_settings({}, {})
    assert OPTIONS and FLAGS and not set(OPTIONS) & set(FLAGS)
    for name, opt in OPTIONS.items():
        assert getattr(Settings, name) is opt and opt.name == name
        assert opt.flag == "--" + name.replace("_", "-") and opt.env == "STACKMATRIX_" + name.upper()
        assert s.sources[name] == "default"
        if opt.default is None:
            assert getattr(s, name) is None
        else:
            assert getattr(s, name) is not None
    assert all(not opt.env and opt.name == name for name, opt in FLAGS.items())
    assert (s.jobs, s.offline, s.reports_dir, s.device, s.retries) == (None, False, Path("reports"), "cpu", 2)
    with pytest.raises(AttributeError):
        s.jobs = 3
    assert s == resolve_settings({}, {}) and hash(s) == hash(resolve_settings({}, {}))


def test_choices_come_from_the_record() -> None:
    assert Settings.device.allowed() == ("cpu", "gpu")
    opt = Option[str]("--x", "X", "a", "help", lambda where, v: v, choices=lambda: ["a", "b"])
    assert opt.parse("--x", "b") == "b"
    with pytest.raises(BadInput, match="a or b"):
        opt.parse("--x", "c")


def test_no_argument_is_added_by_hand() -> None:
    """Every parser argument is generated from a record: ``add_argument`` appears only in cli/args.py's
    ``add_option``, and no two settings share a flag."""
    assert len({opt.flag for opt in OPTIONS.values()}) == len(OPTIONS)
    by_hand = []
    for path in Path(stackmatrix.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        allowed = set()
        in_args = path.parts[-2:] == ("cli", "args.py")
        for node in ast.walk(tree):
            if in_args and isinstance(node, ast.FunctionDef) and node.name == "add_option":
                allowed = {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", None) == "add_argument"
                and id(node) not in allowed
            ):
                by_hand.append(f"{path.name}:{node.lineno}")
    assert not by_hand


MATRIX = Path("m.toml")


def test_option_sources_for_run_json() -> None:
    settings = resolve_settings({"index_url": "https://user:hunter22@m.example/simple?token=s3cr3t"}, {})
    request = Request("run", {"tier": "runtime", "only": ("a*",), "keyword": None}, given={"tier"})
    out = option_sources(settings, request, MATRIX, MatrixSettings(python="3.11"))
    assert out["jobs"] == {"value": None, "source": "default"}  # from the host when it runs
    assert out["reports_dir"] == {"value": "reports", "source": "default"}
    assert out["index_url"]["source"] == "cli --index-url"
    assert "hunter22" not in json.dumps(out) and "s3cr3t" not in json.dumps(out)
    assert out["tier"] == {"value": "runtime", "source": "cli --tier"}
    assert out["only"] == {"value": ["a*"], "source": "default"}
    assert out["shard"] == {"value": None, "source": "default"}  # every flag that shapes a run, given or not
    assert "model" not in out and "format" not in out  # a command's own flags are not a run's shape
    assert out["python"] == {"value": "3.11", "source": "matrix m.toml"}
    assert out["platform"] == {"value": "x86_64", "source": "default"}
    assert json.loads(json.dumps(out)) == out


def _options(**values: object) -> dict[str, dict[str, object]]:
    out = option_sources(resolve_settings({}, {}), Request("run"), MATRIX, MatrixSettings())
    for key, value in values.items():
        out[key] = {"value": value, "source": "cli"}
    return out


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({}, {}, None),
        ({"jobs": 3, "read_timeout": 1.0, "cache_dir": "/c", "reports_dir": "r", "only": ["x"]}, {}, None),
        ({"tier": "runtime"}, {}, ("tier", "runtime", "static")),
        ({"index_url": "https://m/simple"}, {}, ("index_url", "https://m/simple", "https://pypi.org/simple")),
        ({"device": "gpu", "runner": "docker"}, {}, ("device", "gpu", "cpu")),
        ({}, {"python": "3.11"}, ("python", "3.12", "3.11")),
        ({"override": ["a==1", "b==2"]}, {"override": ["b==2", "a==1"]}, None),
        ({"override": ["a==1"]}, {}, ("override", ["a==1"], [])),
        ({"some_new_option": 1}, {"some_new_option": 2}, ("some_new_option", 1, 2)),
    ],
)
def test_differing_options_names_the_first_that_changes_results(
    a: dict[str, object], b: dict[str, object], expected: tuple[str, object, object] | None
) -> None:
    assert differing_options(_options(**a), _options(**b)) == expected


def test_differing_options_compares_only_what_both_recorded() -> None:
    a = _options(tier="runtime")
    assert differing_options(a, {}) is None
    assert differing_options({"tier": "runtime"}, {"tier": {"value": "static"}}) == ("tier", "runtime", "static")
    assert [n for n in [*OPTIONS, *FLAGS] if affects_results(n)] == [
        *("index_url", "as_of", "find_links", "torch_find_links", "torch_index", "weights_dir", "device"),
        *("climb", "runner", "base_image", "base_python", "triton_image", "vllm_backend", "vllm_backend_url"),
        *("tier", "override", "full_class", "resolve"),
    ]


def test_settings_travel_as_environment_variables(tmp_path: Path) -> None:
    """A Slurm task resolves the submitter's settings from the environment sbatch passes on: every value, the
    secret ones too (they are never written to a file), paths made absolute."""
    from stackmatrix.options import settings_env

    given = {
        "cache_dir": str(tmp_path / "c"),
        "reports_dir": "rel/reports",
        "index_url": "https://u:tok@mirror.example/simple",
        "gpus": "2,0",
        "offline": True,
        "registry_auth": "nvcr.io=$oauthtoken:s3cr=t",
        "slurm_args": "--constraint='a100 80gb' --exclusive",
        "slurm_max_running": "3",
        "executor": "slurm",
    }
    settings = resolve_settings(given, {})
    env = settings_env(settings)
    again = resolve_settings({}, env)
    differ = [n for n in OPTIONS if again.value_of(n) != settings.value_of(n)]
    assert differ == ["reports_dir"], differ  # made absolute: the task may start elsewhere
    assert again.registry_auth is not None and again.registry_auth.password == "s3cr=t"
    assert env["STACKMATRIX_REPORTS_DIR"] == str(Path("rel/reports").absolute())
    assert again.slurm_args == ("--constraint=a100 80gb", "--exclusive")
    assert "STACKMATRIX_FIND_LINKS" not in env  # unset stays unset


def test_a_configuration_file_sits_below_env_and_flags(tmp_path: Path) -> None:
    conf = tmp_path / "site.toml"
    conf.write_text(
        'slurm_partition = "gpu"\nslurm-tasks = 8\nslurm_args = ["--constraint=a100 80gb"]\noffline = true\n'
    )
    settings = resolve_settings({"config": str(conf)}, {})
    assert (settings.slurm_partition, settings.slurm_tasks, settings.offline) == ("gpu", 8, True)
    assert settings.slurm_args == ("--constraint=a100 80gb",)
    assert settings.sources["slurm_partition"] == f"file {conf}"
    over = resolve_settings({"slurm_tasks": "2"}, {"STACKMATRIX_CONFIG": str(conf), "STACKMATRIX_SLURM_PARTITION": "x"})
    assert (over.slurm_tasks, over.slurm_partition) == (2, "x")  # the flag, then the environment, win
    assert over.sources["slurm_tasks"] == "cli --slurm-tasks"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('nope = "x"', "nope"),
        ("matrix = 'm.toml'", "matrix"),  # a command's flag, not a setting
        ("slurm_tasks = 0", "slurm_tasks"),
        ("slurm_tasks = [1]", "slurm_tasks"),
        ("registry_auth = { user = 'u' }", "registry_auth"),
        ("slurm_partition = ", "<syntax>"),
    ],
)
def test_a_bad_configuration_file_is_exit_2_naming_it(tmp_path: Path, text: str, key: str) -> None:
    conf = tmp_path / "site.toml"
    conf.write_text(text + "\n")
    with pytest.raises(BadInput) as exc:
        resolve_settings({}, {"STACKMATRIX_CONFIG": str(conf)})
    assert exc.value.where == str(conf) and exc.value.key == key


@pytest.mark.parametrize("value", ["https:/user:s3cretpw@host/simple", "user:s3cretpw@host", "ftp://u:s3cretpw@h/x"])
def test_a_malformed_url_is_refused_without_echoing_its_password(value: str) -> None:
    from stackmatrix.options import resolve_settings

    for cli, env in (({"index_url": value}, {}), ({}, {"STACKMATRIX_INDEX_URL": value})):
        with pytest.raises(BadInput) as exc:
            resolve_settings(cli, env)
        assert "s3cretpw" not in str(exc.value) and "s3cretpw" not in str(exc.value.value)
