"""The partition's groups and the curriculum's stages, by name.

Apart from ``core/partition.py`` so that the commands that only read a run directory
(``mrd report``, ``mrd plot``) name them without loading torch.
"""

from __future__ import annotations

GROUPS = ("mcti", "mitc", "general", "simple")
GROUP_CODE = {g: i for i, g in enumerate(GROUPS)}
# Curriculum-level groups: both difficult subgroups form one stage.
STAGE_GROUPS = {"difficult": ("mcti", "mitc"), "general": ("general",), "simple": ("simple",)}
