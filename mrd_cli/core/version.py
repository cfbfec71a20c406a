"""Which mrd made a file: the package version and, in a git checkout, the commit.

Recorded in every checkpoint (``mrd_version``, ``git_commit``; its model card shows them)
and at the top of ``RUN/config.yaml``, so that a result can be traced to the code that
produced it; ``mrd --version`` prints both.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (a test checks)


def mrd_version() -> str:
    return __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout this code runs from, ``+dirty`` when tracked files differ
    from it; ``unknown`` outside a git checkout (an installed wheel) or without git (never
    an error)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return "unknown"
    try:
        head = subprocess.run(
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
    if not head:
        return "unknown"
    return head + ("+dirty" if dirty else "")
