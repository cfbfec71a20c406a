"""Specification of the restricted unpickler for community feature files."""

from __future__ import annotations

import os
import pickle
import subprocess
import tempfile
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrd_cli.data.safe_pickle import safe_load
from mrd_cli.errors import MRDError


def _dump(path: Path, obj: Any, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def _feature_like() -> tuple:
    """A miniature of what the community files hold: dicts of lists of numpy arrays."""
    rng = np.random.default_rng(0)
    return (
        {"Ses01F_impro01": ["M", "F", "M"]},
        {"Ses01F_impro01": [0, 5, 2]},
        {"Ses01F_impro01": [rng.standard_normal(4).astype(np.float32) for _ in range(3)]},
        {7: rng.standard_normal((3, 2))},
        ["Ses01F_impro01"],
        OrderedDict(a=np.float32(1.5), b=np.int64(3)),
        defaultdict(list, {"x": [1]}),
        {b"bytes", frozenset({1}), 2.5, True},
    )


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_safe_load_reads_builtins_and_numpy_arrays_in_every_protocol(
    tmp_path: Path, protocol: int
) -> None:
    obj = _feature_like()
    loaded = safe_load(_dump(tmp_path / "f.pkl", obj, protocol), encoding="latin1")
    assert loaded[0] == obj[0] and loaded[1] == obj[1] and loaded[4] == obj[4]
    for a, b in zip(loaded[2]["Ses01F_impro01"], obj[2]["Ses01F_impro01"], strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    assert np.array_equal(loaded[3][7], obj[3][7])
    assert loaded[5] == obj[5] and isinstance(loaded[5], OrderedDict)
    assert loaded[6]["x"] == [1]
    assert loaded[7] == obj[7]


def test_numpy_1_global_names_are_admitted(tmp_path: Path) -> None:
    """Files pickled with numpy 1 name numpy.core.multiarray, not numpy._core.multiarray."""
    arr = np.arange(6, dtype=np.float64).reshape(2, 3)
    data = pickle.dumps({"d": [arr, np.float32(2.0)]}, protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    loaded = safe_load(path, encoding="latin1")
    assert np.array_equal(loaded["d"][0], arr) and loaded["d"][1] == np.float32(2.0)


def test_python_2_builtin_names_are_mapped(tmp_path: Path) -> None:
    # Protocol 0, as Python 2 wrote it: __builtin__.set([1, 2]).
    path = tmp_path / "py2.pkl"
    path.write_bytes(b"c__builtin__\nset\n((lp0\nI1\naI2\natp1\nRp2\n.")
    assert safe_load(path, encoding="latin1") == {1, 2}


class _Evil:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize(
    ("make", "refused"),
    [
        (lambda m: _Evil(os.system, f"touch {m}"), "system"),
        (lambda m: _Evil(eval, f"__import__('os').system('touch {m}')"), "builtins.eval"),
        (lambda m: _Evil(exec, f"open('{m}', 'w').close()"), "builtins.exec"),
        (lambda m: _Evil(subprocess.call, ["touch", str(m)]), "subprocess.call"),
        (lambda m: _Evil(getattr, "", "join"), "builtins.getattr"),
        (lambda m: _Evil(__import__, "os"), "builtins.__import__"),
    ],
)
def test_malicious_pickle_is_refused_before_anything_runs(
    tmp_path: Path, make: Any, refused: str
) -> None:
    marker = tmp_path / "pwned"
    # Hidden inside an otherwise well-formed feature tuple.
    path = _dump(tmp_path / "evil.pkl", ({"d": [np.zeros(3)]}, [make(marker)], ["d"]))
    with pytest.raises(MRDError) as info:
        safe_load(path, encoding="latin1")
    message = str(info.value)
    assert refused in message
    assert "not part of a community feature file" in message
    assert str(path) in message
    assert not marker.exists()


def test_unlisted_class_is_refused_by_its_name(tmp_path: Path) -> None:
    path = _dump(tmp_path / "cls.pkl", {"d": Path("x")})
    with pytest.raises(MRDError, match=r"pathlib\.\w*Path"):
        safe_load(path)


def test_codecs_encode_is_admitted_only_for_latin1_text(tmp_path: Path) -> None:
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(MRDError, match="not a readable pickle"):
        safe_load(path)
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVlatin1\ntR.")
    assert safe_load(path) == b"abc"


def test_truncated_pickle_is_an_mrd_error_naming_the_file(tmp_path: Path) -> None:
    full = pickle.dumps(_feature_like(), protocol=4)
    path = tmp_path / "IEMOCAP_features.pkl"
    for cut in (len(full) // 2, len(full) - 1, 1, 0):
        path.write_bytes(full[:cut])
        with pytest.raises(MRDError) as info:
            safe_load(path, encoding="latin1")
        assert str(path) in str(info.value)
        assert "again" in str(info.value)


def test_missing_file_and_directory_are_mrd_errors(tmp_path: Path) -> None:
    with pytest.raises(MRDError, match="does not exist.*--data-dir"):
        safe_load(tmp_path / "nope.pkl")
    with pytest.raises(MRDError, match="is a directory"):
        safe_load(tmp_path)


_VALID = pickle.dumps(_feature_like(), protocol=2)


# numpy lets a tampered pickle set odd flags on a dtype copy; it then only complains when the
# array is freed ("Exception ignored ... get_clear_loop"), which is harmless noise here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=50, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b"\x80\x04" + b),
        # A valid pickle with a few bytes overwritten reaches the numpy constructors.
        st.lists(
            st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4
        ).map(lambda edits: _mutate(_VALID, edits)),
    )
)
def test_random_bytes_raise_only_mrd_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.pkl"
        path.write_bytes(data)
        try:
            safe_load(path, encoding="latin1")
        except MRDError:
            pass


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos] = value
    return bytes(out)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_a_loaded_file_is_freed_as_soon_as_the_caller_drops_it(tmp_path, protocol):
    """Nothing of the load keeps the file's objects alive: no reference cycle through the
    unpickler's memo, which holds every object of the file (that cycle kept a whole
    IEMOCAP load, about 600 MB, resident until the cycle collector ran)."""
    import gc
    import weakref

    path = _dump(tmp_path / "f.pkl", _feature_like(), protocol)
    gc.collect()
    gc.disable()
    try:
        loaded = safe_load(path, "latin1")
        array = weakref.ref(loaded[2]["Ses01F_impro01"][0])
        matrix = weakref.ref(loaded[3][7])
        del loaded
        assert array() is None and matrix() is None
    finally:
        gc.enable()
