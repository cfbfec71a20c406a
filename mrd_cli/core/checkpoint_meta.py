"""A checkpoint's recorded fields (history, chosen epoch, curriculum stages) read without
torch: ``mrd plot`` draws the training curves from them and never loads the weights.

A checkpoint is torch's zip archive; its ``data.pkl`` is unpickled here with every tensor
replaced by a placeholder and nothing but torch's tensor and storage rebuilders and
``collections.OrderedDict`` allowed (the types ``torch.load(weights_only=True)`` accepts
besides plain containers), so a foreign pickle cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

from mrd_cli.errors import MRDError


class WeightsPlaceholder:
    """Stands for a tensor, a storage or another torch object of the archive (not read)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return WeightsPlaceholder
        raise pickle.UnpicklingError(f"{module}.{name} has no place in an mrd checkpoint")

    def persistent_load(self, pid: Any) -> Any:
        return WeightsPlaceholder()


def read_checkpoint_metadata(path: Path) -> dict[str, Any]:
    """The checkpoint's dictionary with placeholders for its tensors; a file that is no
    torch checkpoint (or not a dictionary) is refused with an ``MRDError``."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            if len(names) != 1:
                raise MRDError(f"{path} is not a PyTorch checkpoint (no data.pkl in it).")
            with archive.open(names[0]) as fh:
                data = _MetadataUnpickler(fh).load()
    except MRDError:
        raise
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise MRDError(
            f"Checkpoint {path} is corrupt or not a PyTorch file ({type(exc).__name__})."
        ) from None
    if not isinstance(data, dict):
        raise MRDError(f"{path} is not an mrd checkpoint (no dictionary inside).")
    return data
