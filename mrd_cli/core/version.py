"""Which mrd made a file: the package version and, in a git checkout, the commit.

Recorded in every checkpoint (``code_version``) and at the top of ``RUN/config.yaml``, so that a
result can be traced to the code that produced it.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (a test checks)


@functools.cache
def git_commit() -> str:
    """The commit of the checkout this package runs from, with ``-dirty`` when tracked files
    differ from it; ``unknown`` outside a git checkout or without git (never an error)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def code_version() -> dict[str, str]:
    """``{"mrd_version": ..., "git_commit": ...}`` of the running code."""
    return {"mrd_version": __version__, "git_commit": git_commit()}
