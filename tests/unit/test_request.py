"""The request: one frozen record past the parser, a default for every flag a command does not take, and a run's
recorded arguments taken back checked like the flags they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackmatrix.errors import BadInput
from stackmatrix.options import OPTIONS
from stackmatrix.request import FLAGS, Request


def test_a_command_reads_the_default_of_a_flag_it_does_not_take() -> None:
    r = Request("list", {"keyword": "e4b"})
    assert (r.keyword, r.tier, r.resolve, r.only, r.override, r.fresh, r.plan) == (
        "e4b", "static", "declared", (), (), False, False
    )  # fmt: skip
    assert (r.gpu, r.best, r.last, r.stores) == ("l4x1", 3, 10, True)
    assert r.value_of("model") is None  # a required flag: only its own commands read it
    with pytest.raises(AttributeError):
        Request.__setattr__(r, "tier", "runtime")
    with pytest.raises(TypeError, match="no flag"):
        Request("list", {"not_a_flag": 1})


def test_but_and_answered_here_make_new_requests() -> None:
    r = Request("check", {"model": "m"}, given={"model"})
    assert r.but(tier="runtime").tier == "runtime" and r.tier == "static"
    answered = r.answered_here()
    assert (answered.stores, answered.quiet, answered.model, answered.given) == (False, True, "m", frozenset({"model"}))


def test_settings_resolve_from_what_the_command_line_gave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACKMATRIX_JOBS", "4")
    r = Request("run", texts={"jobs": "2", "reports_dir": str(tmp_path)})
    assert (r.settings().jobs, r.settings().sources["jobs"], r.settings().reports_dir) == (2, "cli --jobs", tmp_path)
    assert Request("run").settings().jobs == 4  # the environment, when the command line gave none
    assert r.with_setting("jobs", "7").settings().jobs == 7 and r.settings().jobs == 2
    with pytest.raises(TypeError):
        r.with_setting("tier", "runtime")


def test_a_run_records_what_a_resume_takes_back() -> None:
    r = Request("run", {"only": ("a*", "b*"), "tier": "runtime", "full_class": True, "plan": True})
    recorded = r.replayed()
    assert recorded == {
        "keyword": None, "only": ["a*", "b*"], "shard": None, "tier": "runtime", "override": [],
        "full_class": True, "resolve": "declared",
    }  # fmt: skip
    again = Request("run").replay(recorded, "run.json")
    assert (again.only, again.tier, again.full_class, again.plan) == (("a*", "b*"), "runtime", True, False)
    assert again.replayed() == recorded


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ([], "args"),
        ({"only": "a*"}, "args.only"),
        ({"only": [1]}, "args.only"),
        ({"tier": "warp"}, "args.tier"),
        ({"full_class": "yes"}, "args.full_class"),
        ({"keyword": 3}, "args.keyword"),
        ({"resolve": None}, "args.resolve"),
    ],
)
def test_recorded_arguments_are_checked_like_their_flags(args: object, key: str) -> None:
    with pytest.raises(BadInput) as exc:
        Request("run").replay(args, "runs/x/run.json")
    assert (exc.value.where, exc.value.key) == ("runs/x/run.json", key)


def test_flags_and_settings_are_apart_and_typed_once() -> None:
    """Each flag is one attribute; its variants (a command's own help or default) keep its name."""
    assert not set(FLAGS) & set(OPTIONS)
    assert all(getattr(Request, name) is opt and not opt.env for name, opt in FLAGS.items())
    assert Request.model.but(flag="model").name == "model"
    replayed = [n for n, o in FLAGS.items() if o.replayed]
    assert all(FLAGS[n].recorded for n in replayed)
