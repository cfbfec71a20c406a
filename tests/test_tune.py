"""`mrd tune`: the search space checks, the study (resume, several processes, the trial
count), the objective's independence from test labels, and the command end to end."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from mrd_cli.cli.app import app
from mrd_cli.config import Config, load_config
from mrd_cli.core.events import Event
from mrd_cli.core.rundir import RunDir
from mrd_cli.core.session import Session
from mrd_cli.core.training import EpochLog
from mrd_cli.errors import MRDError
from mrd_cli.recipes.tune import default_space_path, load_space, parse_space, tune

optuna = pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SPACE = {
    "distill.alpha": {"float": [0.0, 2.0]},
    "distill.lr": {"float": [1.0e-5, 1.0e-3], "log": True},
    "distill.t2_scaling": {"choice": [True, False]},
}
# Tiny pretraining and one distillation epoch: a trial takes a fraction of a second.
TINY = {
    "model": {"hidden": 16},
    "pretrain": {"epochs": 2},
    "partition": {"method": "in_sample"},
    "distill": {"epochs": 1},
}


def _session(root: Path, corpus) -> Session:
    cfg = Config()
    cfg.model.hidden = 16
    cfg.pretrain.epochs = 2
    cfg.partition.method = "in_sample"
    cfg.distill.epochs = 1
    return Session(cfg, corpus, RunDir(root), torch.device("cpu"))


def _space(cfg: Config, data=None):
    return parse_space(data or SPACE, cfg)


def _tune(session, **kw):
    kw.setdefault("space", _space(session.cfg))
    kw.setdefault("poll_seconds", 0.1)
    return tune(session, **kw)


def _study(root: Path, name: str = "toy-text"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'tune' / 'study.db'}")


# --------------------------------------------------------------------------------------
# The search space


def test_default_space_is_valid_and_leaves_out_pretraining_keys():
    for dataset in ("synthetic", "iemocap", "meld"):
        cfg, _ = load_config(dataset)
        space = load_space(None, cfg)
        assert {
            "distill.alpha",
            "distill.beta",
            "distill.gamma",
            "distill.delta",
            "distill.temperature",
            "distill.t2_scaling",
            "distill.lr",
            "distill.epochs",
            "distill.stage_fractions.difficult",
            "distill.cumulative",
        } <= set(space)
        assert all(k.startswith("distill.") for k in space)  # model.dropout: see the file
    assert "model.dropout" in default_space_path().read_text()  # ... which says why


@pytest.mark.parametrize(
    "data, message",
    [
        ({"distill.alpah": {"float": [0, 1]}}, "Did you mean 'distill.alpha'?"),
        ({"distil.alpha": {"float": [0, 1]}}, "Did you mean 'distill'?"),
        (
            {"distill.stage_fractions.dificult": {"float": [0.1, 0.5]}},
            "Did you mean 'distill.stage_fractions.difficult'?",
        ),
        ({"distill.alpha": {"float": [1.0, 1.0]}}, "empty or inverted"),
        ({"distill.alpha": {"float": [2.0, 0.5]}}, "empty or inverted"),
        ({"distill.epochs": {"int": [30, 5]}}, "empty or inverted"),
        ({"distill.epochs": {"float": [5, 30]}}, "use {int: [low, high]}"),
        ({"distill.t2_scaling": {"float": [0, 1]}}, "must be bool"),
        ({"distill.curriculum": {"choice": ["reverse", "sideways"]}}, "'sideways' is not"),
        ({"distill.alpha": {"choice": []}}, "non-empty list"),
        ({"distill.alpha": {"uniform": [0, 1]}}, "unknown or missing distribution"),
        ({"distill.alpha": {"float": [0, 1], "int": [0, 1]}}, "exactly one of"),
        ({"distill.alpha": [0, 1]}, "must map to a distribution"),
        ({"distill.alpha": {"float": [0, "x"]}}, "two finite numbers"),
        ({"distill.lr": {"float": [0.0, 1e-3], "log": True}}, "log range needs low > 0"),
        ({"distill.alpha": {"float": [-1.0, 1.0]}}, "must be >= 0"),
        ({"distill": {"float": [0, 1]}}, "is a section"),
        ({"seed": {"int": [0, 9]}}, "cannot be tuned"),
        ({"dataset.val_fraction": {"float": [0.1, 0.2]}}, "cannot be tuned"),
        (
            {
                "distill.stage_fractions.difficult": {"float": [0.0, 0.5]},
                "distill.stage_fractions.general": {"float": [0.0, 0.5]},
                "distill.stage_fractions.simple": {"float": [0.0, 0.5]},
            },
            "lower ends of the ranges together",
        ),
    ],
)
def test_bad_search_spaces_are_refused_with_a_clear_message(data, message):
    with pytest.raises(MRDError) as exc:
        parse_space(data, Config())
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_bad_space_file_exits_2_with_one_line(tmp_path):
    space = tmp_path / "space.yaml"
    for text, message in (
        ("distill.alpah: {float: [0, 1]}\n", "Did you mean 'distill.alpha'?"),
        ("distill.alpha: {float: [1, 0]}\n", "empty or inverted"),
        ("distill.epochs: {float: [1, 3]}\n", "must be int"),
        ("", "is empty"),
        (None, "Search space file not found"),
    ):
        if text is None:
            space.unlink()
        else:
            space.write_text(text)
        res = runner.invoke(
            app,
            ["tune", "--run-dir", str(tmp_path / "run"), "--space", str(space), "--device", "cpu"],
        )
        assert res.exit_code == 2, res.output
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error:")]
        assert len(errors) == 1 and message in " ".join(lines), res.stderr
        assert "Traceback" not in res.output
        assert not (tmp_path / "run" / "pretrain").exists()  # refused before any training


def test_tune_without_optuna_exits_2_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    res = runner.invoke(app, ["tune", "--run-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert res.stderr.strip().count("\n") == 0
    assert "pip install -e '.[tune]'" in res.stderr


def test_optuna_is_imported_only_inside_functions():
    # Fast and static: no module-level `import optuna` outside TYPE_CHECKING.
    import ast

    for path in (ROOT / "mrd_cli").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "optuna" for n in names), path


@pytest.mark.slow
def test_importing_the_package_does_not_import_optuna():
    code = (
        "import sys; sys.modules['optuna'] = None; "
        "import mrd_cli, mrd_cli.cli.app; print(mrd_cli.tune.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tune"


# --------------------------------------------------------------------------------------
# The study through the library (toy corpus)


def test_three_trials_write_a_best_config_that_load_config_accepts(tmp_path, toy_corpus):
    session = _session(tmp_path, toy_corpus)
    result = _tune(session, trials=3)
    assert result.counts["complete"] == 3 and result.ran_here == [0, 1, 2]
    best = result.trials[0]
    assert best["number"] == result.best["number"]
    assert best["value"] == max(r["value"] for r in result.trials)
    data = yaml.safe_load(result.best_config.read_text())
    assert set(data) == {"distill"} and set(data["distill"]) == {"alpha", "lr", "t2_scaling"}
    cfg, _ = load_config("synthetic", result.best_config)
    assert cfg.distill.alpha == result.best["params"]["distill.alpha"]
    for n in range(3):
        assert (tmp_path / "tune" / "toy-text" / "trials" / str(n) / "seed0" / "text.pt").is_file()
    assert result.importances is not None or result.importance_note
    # Run again: the study has its trials, nothing is recomputed.
    again = _tune(session, trials=3)
    assert again.ran_here == [] and again.best == result.best
    # Ask for more: the study grows to 4.
    more = _tune(session, trials=4)
    assert more.ran_here == [3] and more.counts["finished"] == 4


def test_poisoned_test_labels_change_no_trial_and_no_best_config(tmp_path, toy_corpus):
    from tests.conftest import make_toy_corpus

    poisoned = make_toy_corpus()
    num_classes = poisoned.num_classes
    for dialogue in poisoned.split("test"):
        dialogue.labels[:] = (dialogue.labels + 1 + np.arange(len(dialogue))) % num_classes
    results = []
    for name, corpus in (("clean", toy_corpus), ("poisoned", poisoned)):
        session = _session(tmp_path / name, corpus)
        result = _tune(session, trials=3, seeds=2, target="both")
        assert "test" not in session.__dict__.get("_tensors", {})  # never even built
        results.append(result)
    clean, bad = results
    strip = [
        [(r["number"], r["state"], r["value"], r["seed_values"], r["params"]) for r in res.trials]
        for res in results
    ]
    assert strip[0] == strip[1]
    assert clean.best == bad.best
    assert clean.best_config.read_text() == bad.best_config.read_text()


def test_steps_are_numbered_across_seeds_with_the_largest_epoch_count_as_stride(
    tmp_path, toy_corpus
):
    session = _session(tmp_path, toy_corpus)
    data = {**SPACE, "distill.epochs": {"int": [1, 3]}}
    _tune(session, trials=3, seeds=2, space=_space(session.cfg, data), prune=False)
    for t in _study(tmp_path).trials:
        epochs = t.params["distill.epochs"]
        expected = [s * 3 + e for s in range(2) for e in range(epochs)]
        assert sorted(t.intermediate_values) == expected
        assert t.user_attrs["epochs_run"] == t.user_attrs["epochs_planned"] == 2 * epochs


def test_a_space_with_pretraining_keys_pretrains_a_pair_per_trial(tmp_path, toy_corpus):
    session = _session(tmp_path, toy_corpus)
    data = {"model.dropout": {"float": [0.1, 0.5]}, "distill.alpha": {"float": [0.0, 1.0]}}
    result = _tune(session, trials=2, space=_space(session.cfg, data))
    assert result.counts["complete"] == 2
    assert not (tmp_path / "pretrain").exists()  # no shared pair: each trial has its own
    for row in result.trials:
        base = tmp_path / "tune" / "toy-text" / "trials" / str(row["number"]) / "base"
        ckpt = torch.load(base / "pretrain" / "text.pt", weights_only=True)
        assert ckpt["config"]["model"]["dropout"] == row["params"]["model.dropout"]
        assert (base / "partition.json").is_file()


def _fake_distill(session, on_event=None, out_dir=None, **_):
    """Stands in for distillation: validation W-F1 grows with alpha and with the epoch."""
    epochs = session.cfg.distill.epochs
    for epoch in range(1, epochs + 1):
        wf1 = 40 * session.cfg.distill.alpha + epoch + session.cfg.seed
        log = EpochLog(epoch, epochs, {}, {"multi": wf1 / 2, "text": wf1}, {})
        on_event(Event("epoch", task="distill", log=log))


@pytest.mark.parametrize("prune", [True, False])
def test_the_median_pruner_stops_trials_below_the_median_and_counts_their_epochs(
    tmp_path, toy_corpus, monkeypatch, prune
):
    import mrd_cli.recipes.tune.trial as tune_module  # where a trial calls distill

    monkeypatch.setattr(tune_module, "distill", _fake_distill)
    session = _session(tmp_path, toy_corpus)
    session.cfg.distill.epochs = 4
    result = _tune(session, trials=8, seeds=2, prune=prune, prune_startup=3, prune_warmup=0)
    study = _study(tmp_path)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert bool(pruned) == prune
    for t in study.trials:
        assert t.user_attrs["epochs_run"] == len(t.intermediate_values)
        if t.state.name == "COMPLETE":  # mean over seeds 0, 1 of the best (last) epoch
            assert t.value == pytest.approx(40 * t.params["distill.alpha"] + 4 + 0.5)
            assert t.user_attrs["epochs_run"] == t.user_attrs["epochs_planned"] == 8
        else:
            assert t.user_attrs["epochs_run"] < 8
    assert (result.epochs_run < result.epochs_planned) == prune
    # a pruned trial was below the median of the complete ones at its last step
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    for t in pruned:
        step = max(t.intermediate_values)
        earlier = [c for c in complete if c.number < t.number]
        median = float(np.median([c.intermediate_values[step] for c in earlier]))
        assert max(t.intermediate_values.values()) < median


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, toy_corpus, monkeypatch):
    import mrd_cli.recipes.tune.trial as tune_module  # where a trial calls distill
    from mrd_cli.errors import MRDRunError

    def fragile(session, on_event=None, **kw):
        if session.cfg.distill.alpha > 1.0:
            raise MRDRunError("Loss term 'kd_m' became non-finite at epoch 1.")
        _fake_distill(session, on_event=on_event, **kw)

    monkeypatch.setattr(tune_module, "distill", fragile)
    session = _session(tmp_path, toy_corpus)
    result = _tune(session, trials=4)
    assert result.counts["complete"] == 4 and result.counts["fail"] >= 1
    failed = [r for r in result.trials if r["state"] == "fail"]
    assert all("non-finite" in r["error"] and r["params"]["distill.alpha"] > 1 for r in failed)

    monkeypatch.setattr(
        tune_module, "distill", lambda *a, **k: (_ for _ in ()).throw(MRDRunError("broken"))
    )
    with pytest.raises(MRDRunError, match="5 trials in a row failed; the last: broken"):
        _tune(session, trials=8)


def test_an_interrupted_study_resumes_where_it_stopped(tmp_path, toy_corpus):
    session = _session(tmp_path, toy_corpus)
    seen: list[str] = []

    def interrupt_in_trial_1(event):
        seen.append(event.task)
        if event.task.startswith("trial 1,"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tune(session, trials=3, on_event=interrupt_in_trial_1)
    study = _study(tmp_path)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "WAITING"}  # 1 is queued again as 2
    interrupted = study.trials[1].params
    # No trial stays RUNNING, and the rerun continues: trial 0 is kept, 1's config is retried.
    result = _tune(session, trials=3)
    assert result.ran_here == [2, 3]
    study = _study(tmp_path)
    assert study.trials[2].params == interrupted
    assert study.trials[2].user_attrs["retry_of"] == 1
    assert result.counts == {
        "complete": 3,
        "pruned": 0,
        "fail": 1,
        "running": 0,
        "waiting": 0,
        "finished": 3,
    }


def test_a_study_made_with_other_settings_is_refused(tmp_path, toy_corpus):
    session = _session(tmp_path, toy_corpus)
    _tune(session, trials=1)
    with pytest.raises(MRDError, match="another seeds"):
        _tune(session, trials=1, seeds=2)
    # another study name is a new study
    assert _tune(session, trials=1, seeds=2, study_name="other").ran_here == [0]


def test_a_study_continues_after_changes_no_trial_depends_on(tmp_path, toy_corpus):
    session = _session(tmp_path, toy_corpus)
    _tune(session, trials=1)
    unrelated = copy.deepcopy(session.cfg)
    unrelated.ablate.seeds = 3  # ablation, self-training and an unused backbone's options
    unrelated.selftrain.rounds = 7
    unrelated.model.foal.clip_temperature = not unrelated.model.foal.clip_temperature
    assert _tune(session.derive(unrelated, session.run), trials=2).ran_here == [1]
    changed = copy.deepcopy(session.cfg)
    changed.distill.lr = 1e-2  # not in the space: part of every trial's result
    with pytest.raises(MRDError, match="another base config"):
        _tune(session.derive(changed, session.run), trials=3)


# --------------------------------------------------------------------------------------
# The command end to end


def _write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _cmd(run: Path, config: Path, space: Path, trials: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mrd_cli",
        "tune",
        "--config",
        str(config),
        "--space",
        str(space),
        "--run-dir",
        str(run),
        "--trials",
        str(trials),
        "--device",
        "cpu",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_cli_search_writes_best_yaml_that_mrd_distill_accepts(tmp_path):
    config = _write_yaml(tmp_path / "tiny.yaml", TINY)
    space = _write_yaml(tmp_path / "space.yaml", SPACE)
    run = tmp_path / "run"
    args = ["tune", "--config", str(config), "--space", str(space), "--run-dir", str(run)]
    res = runner.invoke(app, [*args, "--trials", "3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "val W-F1" in res.stdout and "Parameter importances" in res.stdout
    best = run / "tune" / "synthetic-text" / "best.yaml"
    res = runner.invoke(
        app, ["distill", "--config", str(best), "--run-dir", str(run), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args, "--trials", "3", "--json", "--device", "cpu"])
    out = __import__("json").loads(res.stdout)
    assert out["counts"]["finished"] == 3 and out["best_config"] == str(best)


@pytest.mark.slow
def test_two_processes_on_one_sqlite_study_give_exactly_n_trials(tmp_path):
    config = _write_yaml(tmp_path / "tiny.yaml", TINY)
    space = _write_yaml(tmp_path / "space.yaml", SPACE)
    run = tmp_path / "run"
    procs = [
        subprocess.Popen(
            _cmd(run, config, space, 6),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    study = _study(run, "synthetic-text")
    kept = [t for t in study.trials if not t.user_attrs.get("surplus")]
    finished = [t for t in kept if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6 and len(kept) == 6
    assert len({t.number for t in finished}) == 6
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 6


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, a scheduler
def test_a_subprocess_interrupted_then_rerun_finishes_the_study(tmp_path, signum):
    # Trials long enough (20 epochs) that the signal lands inside the second one.
    config = _write_yaml(tmp_path / "tiny.yaml", {**TINY, "distill": {"epochs": 20}})
    space = _write_yaml(tmp_path / "space.yaml", SPACE)
    run = tmp_path / "run"
    second = run / "tune" / "synthetic-text" / "trials" / "1"
    proc = subprocess.Popen(
        _cmd(run, config, space, 4),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background of a script inherits SIGINT ignored (POSIX),
        # and Python keeps it so: give the command the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    # Trials run one after another: the second trial's directory means the first finished.
    while time.time() < deadline and not second.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if signum == signal.SIGINT else 143), err[-2000:]
    assert "Rerun the same command" in err
    study = _study(run, "synthetic-text")
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    first = study.trials[0].datetime_complete
    done = subprocess.run(
        _cmd(run, config, space, 4), cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    study = _study(run, "synthetic-text")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    assert study.trials[0].datetime_complete == first  # trial 0 was not run again


@pytest.mark.slow
def test_the_benchmark_reports_both_studies_and_the_epochs_saved(tmp_path):
    config = _write_yaml(tmp_path / "tiny.yaml", {**TINY, "distill": {"epochs": 2}})
    space = _write_yaml(tmp_path / "space.yaml", SPACE)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tune.py"), "synthetic", "--trials", "3"]
        + ["--config", str(config), "--space", str(space), "--run-dir", str(tmp_path / "run")]
        + ["--threads", "1", "--prune-startup", "1", "--json"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = __import__("json").loads(out.stdout)
    assert [s["prune"] for s in report["studies"]] == [True, False]
    assert all(s["trials"] == 3 and s["wall_s"] > 0 for s in report["studies"])
    assert report["studies"][1]["epochs_run"] == report["studies"][1]["epochs_planned"] == 6
    assert 0 <= report["epochs_saved_vs_unpruned"] < 1
    assert len(report["load_average_before"]) == 3


@pytest.mark.parametrize("kw", [{"trials": 0}, {"trials": 100_001}, {"seeds": 0}, {"seeds": 1001}])
def test_trials_and_seeds_outside_their_bounds_are_refused_before_any_work(
    tmp_path, toy_corpus, kw
):
    session = _session(tmp_path, toy_corpus)
    with pytest.raises(MRDError, match=r"--trials must be in \[1, 100000\] and --seeds in"):
        _tune(session, **kw)
    assert not (tmp_path / "tune").exists() and not (tmp_path / "pretrain").exists()
