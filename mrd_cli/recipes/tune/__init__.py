"""Recipe: hyperparameter search on validation W-F1 with Optuna (`mrd tune`).

The package: ``space`` (the search space language and its checks), ``study`` (the study in
its storage: ``StudyJob``, opening, the sampler), ``trial`` (one trial), ``workers`` (the
processes sharing a study), ``summary`` (rows, best.yaml, importances, results.json) and
``recipe`` (``tune`` itself).

The study first makes sure the pretrained pair and the partition in the run directory are
current (``ensure_partitioned``, as ``mrd run`` does); then each trial distils that pair with
the trial's config, once per seed, into ``RUN/tune/<study>/trials/<n>/seed<s>/``. A trial's value is
the mean over seeds of the validation W-F1 of the target model(s) at their selected epochs
(``both``: the mean of the two models). Test labels are never read: the test split is not
even turned into tensors.

Search: TPE, seeded per trial from the config seed and the trial number (so that processes
sharing a study draw different configs, and a study is reproducible from its seed). Pruning:
``MedianPruner`` on the per-epoch validation W-F1 of the target, reported at step
``seed_index * stride + epoch - 1``, where ``stride`` is the largest number of distillation
epochs the space allows; a step therefore compares the same seed at the same epoch across
trials, and later seeds come after earlier ones.

Storage: an Optuna RDB storage (default ``sqlite:///RUN/tune/study.db``). ``trials`` is the
number of finished (complete or pruned) trials the study should hold in total, however many
processes work on it: a process starts a trial only while finished + running trials are
fewer, waits for the others' last trials otherwise, and a trial that finds ``trials`` trials
numbered before it ends at once without a config (a rare race between processes; it is
marked ``surplus`` and left out of every listing). A trial interrupted by Ctrl-C is marked
failed and queued again with the same config; a trial whose process died is failed by the
heartbeat after ``grace_period`` seconds and queued again the same way.
"""

from mrd_cli.recipes.tune.recipe import TARGETS, tune
from mrd_cli.recipes.tune.space import Param, default_space_path, load_space, parse_space
from mrd_cli.recipes.tune.study import StudyJob, default_storage, masked, require_optuna
from mrd_cli.recipes.tune.summary import TuneResult, best_yaml

__all__ = [
    "TARGETS",
    "Param",
    "StudyJob",
    "TuneResult",
    "best_yaml",
    "default_space_path",
    "default_storage",
    "load_space",
    "masked",
    "parse_space",
    "require_optuna",
    "tune",
]
