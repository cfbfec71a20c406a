"""Device selection and seeding: the same code runs on CUDA and on the CPU."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from mrd_cli.errors import MRDError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; asking for absent CUDA is an error."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MRDError(
                f"--device {name} was asked for, but PyTorch sees no CUDA device here. "
                "Use --device cpu (or auto)."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MRDError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present."
            )
        return dev
    raise MRDError(f"Unknown device '{name}'. Use auto, cpu, cuda or cuda:N.")


def seed_everything(seed: int) -> None:
    """Seed every global RNG a run touches (dropout draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """torch's intra-op CPU threads: ``threads``, or torch's default (one per core) for 0."""
    n = threads if threads > 0 else (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
