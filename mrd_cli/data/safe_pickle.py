"""Load community feature pickles without letting them run code.

``pickle.load`` calls whatever global a file names, so a doctored ``IEMOCAP_features.pkl``
could run ``os.system`` on load. ``safe_load`` resolves globals through an allow-list that
holds only the builtin containers and scalars and the numpy reconstruction helpers those
files contain; any other global is refused, with its name, before it can be called.

A pickle is also a compression format: a few bytes can ask numpy for an array of any shape.
Every array the file asks numpy to allocate is charged to a size budget
(``expansion_budget``: ``EXPANSION`` times the file's size, at least ``MIN_BUDGET``), and a
file that asks for more is refused before anything is allocated.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mrd_cli.errors import MRDError

__all__ = [
    "ALLOWED_GLOBALS",
    "EXPANSION",
    "MIN_BUDGET",
    "expansion_budget",
    "human_size",
    "safe_load",
]

# A community feature file holds its arrays nearly as they are in memory (float32 buffers or
# lists of floats); 64x leaves ample room for any layout and none for a pickle bomb.
EXPANSION = 64
MIN_BUDGET = 256 * 2**20


def expansion_budget(file_size: int) -> int:
    """Bytes of arrays a file of ``file_size`` bytes may expand to."""
    return max(EXPANSION * int(file_size), MIN_BUDGET)


def human_size(n: float) -> str:
    """A byte count for people (373 GiB, 7.7 MiB, 120 KiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def _numpy_attr(name: str, *modules: str) -> Any:
    """Find a numpy helper under its numpy 2 (``numpy._core``) or numpy 1 (``numpy.core``) home.

    Imported explicitly so that numpy 2 never warns about the deprecated ``numpy.core`` alias.
    """
    import importlib

    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides none of {', '.join(m + '.' + name for m in modules)}")


_reconstruct = _numpy_attr("_reconstruct", "numpy._core.multiarray", "numpy.core.multiarray")
_scalar = _numpy_attr("scalar", "numpy._core.multiarray", "numpy.core.multiarray")
_frombuffer = _numpy_attr("_frombuffer", "numpy._core.numeric", "numpy.core.numeric")

# Classes a pickle may instantiate (directly or through copyreg._reconstructor).
_SAFE_CLASSES: dict[str, type] = {
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
}


def _safe_codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes in protocol 0-2 pickles: text -> bytes only.

    The general function also reaches bytes-to-bytes codecs (zlib, base64...); nothing in a
    feature file needs them.
    """
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("latin-1", "iso8859-1"):
        raise pickle.UnpicklingError("_codecs.encode is admitted only for latin-1 text")
    return codecs.encode(obj, "latin-1", errors)


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (Python 2 era protocol 0/1 objects), for admitted classes only.

    The real function calls ``base.__new__(cls, state)`` and ``base.__init__``; both are
    harmless when ``cls`` and ``base`` are plain containers or ``object``.
    """
    allowed = set(_SAFE_CLASSES.values()) | {object}
    if cls not in allowed or base not in allowed:
        raise pickle.UnpicklingError("copyreg._reconstructor is admitted only for builtin types")
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


# (module, name) -> the object handed to the unpickler. numpy 1 pickles name numpy.core.*,
# numpy 2 pickles numpy._core.*; both resolve to the objects of the numpy installed here.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", n): c for n, c in _SAFE_CLASSES.items()},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    # Protocol 5 pickles of contiguous arrays (Python >= 3.8 with protocol=5).
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): _safe_codecs_encode,
    ("copyreg", "_reconstructor"): _safe_reconstructor,
}


class _Budget:
    """Bytes of arrays one file may still allocate; ``charge`` refuses an allocation beyond.

    Kept apart from the unpickler on purpose: the constructors ``find_class`` hands out are
    memoized by the pickle, and one that referred back to the unpickler would make a cycle
    through its memo, which holds every object of the file: the file's whole contents would
    then outlive the load until Python's cycle collector happened to run.
    """

    def __init__(self, path: Path, budget: int) -> None:
        self._path = path
        self._budget = budget
        self._spent = 0

    def charge(self, shape: Any, dtype: Any) -> None:
        """Refuse an array allocation that would take the file beyond its size budget."""
        try:
            dims = [int(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
            itemsize = np.dtype(dtype).itemsize
        except Exception:
            return  # numpy itself refuses what is not a shape or a dtype
        need = max(itemsize, 1)
        for d in dims:
            need *= max(d, 0)
        self._spent += need
        if self._spent > self._budget:
            raise MRDError(
                f"Refused to load {self._path}: it asks for {human_size(self._spent)} of arrays, far "
                f"more than a file of its size ({human_size(self._path.stat().st_size)}) can hold "
                f"(budget {human_size(self._budget)}). The file is corrupt or crafted; nothing was "
                "allocated. Use the feature files as distributed."
            )

    def reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> Any:
        self.charge(shape, dtype)
        return _reconstruct(subtype, shape, dtype)

    def scalar(self, dtype: Any, *args: Any) -> Any:
        self.charge((), dtype)
        return _scalar(dtype, *args)

    def sized(self, cls: type) -> Any:
        """``bytes`` / ``bytearray`` whose ``cls(n)`` (n zero bytes) is charged first."""

        def make(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], int):
                self.charge((args[0],), "u1")
            return cls(*args, **kwargs)

        return make


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable globals are those in ``ALLOWED_GLOBALS``."""

    def __init__(self, file: Any, path: Path, encoding: str, budget: int) -> None:
        super().__init__(file, encoding=encoding)
        self._path = path
        self._budget = _Budget(path, budget)

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 pickles say __builtin__ / copy_reg; map them the way pickle itself would
        # (overriding find_class skips pickle's own mapping).
        key = _compat_pickle.NAME_MAPPING.get((module, name))
        if key is None:
            key = (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
        obj = ALLOWED_GLOBALS.get(key)
        # The allocating constructors go through the size budget.
        if obj is _reconstruct:
            return self._budget.reconstruct
        if obj is _scalar:
            return self._budget.scalar
        if obj in (bytes, bytearray):
            return self._budget.sized(obj)
        if obj is None:
            raise MRDError(
                f"Refused to load {self._path}: it asks to call '{module}.{name}', which is not "
                "part of a community feature file (only builtin containers and numpy arrays "
                "are allowed). Nothing from the file was run. Use the feature files as "
                "distributed, or check where this one came from."
            )
        return obj


def safe_load(path: Path, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` admitting only builtin data types and numpy arrays.

    ``encoding`` is the pickle ``encoding`` for Python 2 strings ("latin1" for the IEMOCAP
    files). Every failure (missing file, refused global, truncated or corrupt data) is an
    ``MRDError`` that names the file and says what to do.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise MRDError(f"Feature file {path} {what}. Put the file there or pass --data-dir.")
    try:
        budget = expansion_budget(path.stat().st_size)
        with path.open("rb") as fh:
            unpickler = _RestrictedUnpickler(fh, path, encoding, budget)
            try:
                return unpickler.load()
            finally:
                unpickler.memo.clear()  # whatever it holds goes now, not at the next gc
    except MRDError:
        raise
    except MemoryError:
        raise MRDError(
            f"Not enough memory to load {path}; free memory or use a machine with more."
        ) from None
    except OSError as exc:
        raise MRDError(f"Could not read {path}: {exc}.") from None
    except EOFError:
        raise MRDError(
            f"{path} ends before the pickle does: the file is truncated. Download or copy it again."
        ) from None
    except Exception as exc:
        # A corrupt pickle can fail in any constructor it reaches (UnpicklingError,
        # ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError...); they all
        # mean the same thing to the user.
        raise MRDError(
            f"{path} is not a readable pickle ({type(exc).__name__}: {exc}). The file is "
            "corrupt or not a community feature file; download or copy it again."
        ) from exc
