"""mrd: Mutual Refinement Distillation for multimodal emotion recognition in conversations.

The public API: open a ``Session`` (config, data, run directory, device) and run the
recipes on it; each returns a small result whose ``to_dict()`` is the matching command's
``--json`` output. See docs/architecture.md for the layers underneath.

    from mrd_cli import Session, pretrain, partition, distill, evaluate
    session = Session.open("synthetic", run_dir="runs/demo")
    pretrain(session); partition(session); distill(session)
    print(evaluate(session).to_dict()["models"]["distill/multi"]["weighted_f1"])
"""

from mrd_cli.config import Config, load_config
from mrd_cli.core.executor import LocalExecutor, RayExecutor, make_executor
from mrd_cli.core.session import Session
from mrd_cli.errors import MRDError
from mrd_cli.recipes.ablate import AblationResult, ablate
from mrd_cli.recipes.compare import ComparisonResult, compare
from mrd_cli.recipes.distill import DistillResult, distill
from mrd_cli.recipes.evaluate import EvaluationResult, evaluate
from mrd_cli.recipes.partition import PartitionResult, partition
from mrd_cli.recipes.plot import PlotResult, plot  # imports matplotlib only when it draws
from mrd_cli.recipes.pretrain import PretrainResult, pretrain
from mrd_cli.recipes.report import ReportResult, report
from mrd_cli.recipes.selftrain import SelftrainResult, selftrain
from mrd_cli.recipes.tune import TuneResult, tune  # imports optuna only when a study runs

__version__ = "0.1.0"

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
