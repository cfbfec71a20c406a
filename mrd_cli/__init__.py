"""mrd: Mutual Refinement Distillation for multimodal emotion recognition in conversations.

The public API: open a ``Session`` (config, data, run directory, device) and run the
recipes on it; each returns a small result whose ``to_dict()`` is the matching command's
``--json`` output. See docs/architecture.md for the layers underneath.

    from mrd_cli import Session, pretrain, partition, distill, evaluate
    session = Session.open("synthetic", run_dir="runs/demo")
    pretrain(session); partition(session); distill(session)
    print(evaluate(session).to_dict()["models"]["distill/multi"]["weighted_f1"])

The names are imported when first used (PEP 562), so that ``import mrd_cli`` (and
``mrd --help``) does not load torch and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mrd_cli.core.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "Config": "mrd_cli.config",
    "load_config": "mrd_cli.config",
    "LocalExecutor": "mrd_cli.core.executor",
    "RayExecutor": "mrd_cli.core.executor",
    "make_executor": "mrd_cli.core.executor",
    "Session": "mrd_cli.core.session",
    "MRDError": "mrd_cli.errors",
    "AblationResult": "mrd_cli.recipes.ablate",
    "ablate": "mrd_cli.recipes.ablate",
    "ComparisonResult": "mrd_cli.recipes.compare",
    "compare": "mrd_cli.recipes.compare",
    "DistillResult": "mrd_cli.recipes.distill",
    "distill": "mrd_cli.recipes.distill",
    "EvaluationResult": "mrd_cli.recipes.evaluate",
    "evaluate": "mrd_cli.recipes.evaluate",
    "PartitionResult": "mrd_cli.recipes.partition",
    "partition": "mrd_cli.recipes.partition",
    "PlotResult": "mrd_cli.recipes.plot",  # imports matplotlib only when it draws
    "plot": "mrd_cli.recipes.plot",
    "PretrainResult": "mrd_cli.recipes.pretrain",
    "pretrain": "mrd_cli.recipes.pretrain",
    "ReportResult": "mrd_cli.recipes.report",
    "report": "mrd_cli.recipes.report",
    "SelftrainResult": "mrd_cli.recipes.selftrain",
    "selftrain": "mrd_cli.recipes.selftrain",
    "TuneResult": "mrd_cli.recipes.tune",  # imports optuna only when a study runs
    "tune": "mrd_cli.recipes.tune",
}

__all__ = [
    "AblationResult",
    "ComparisonResult",
    "Config",
    "DistillResult",
    "EvaluationResult",
    "LocalExecutor",
    "MRDError",
    "PartitionResult",
    "PlotResult",
    "PretrainResult",
    "RayExecutor",
    "ReportResult",
    "SelftrainResult",
    "TuneResult",
    "Session",
    "__version__",
    "ablate",
    "compare",
    "distill",
    "evaluate",
    "load_config",
    "make_executor",
    "partition",
    "plot",
    "pretrain",
    "report",
    "selftrain",
    "tune",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mrd_cli' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from mrd_cli.config import Config, load_config
    from mrd_cli.core.executor import LocalExecutor, RayExecutor, make_executor
    from mrd_cli.core.session import Session
    from mrd_cli.errors import MRDError
    from mrd_cli.recipes.ablate import AblationResult, ablate
    from mrd_cli.recipes.compare import ComparisonResult, compare
    from mrd_cli.recipes.distill import DistillResult, distill
    from mrd_cli.recipes.evaluate import EvaluationResult, evaluate
    from mrd_cli.recipes.partition import PartitionResult, partition
    from mrd_cli.recipes.plot import PlotResult, plot
    from mrd_cli.recipes.pretrain import PretrainResult, pretrain
    from mrd_cli.recipes.report import ReportResult, report
    from mrd_cli.recipes.selftrain import SelftrainResult, selftrain
    from mrd_cli.recipes.tune import TuneResult, tune
