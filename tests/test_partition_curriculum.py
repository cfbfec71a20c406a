"""The partition of Eq. 9-13 on a crafted example, and the curriculum schedules (Eq. 14)."""

import numpy as np
import pytest

from mrd_cli.core.curriculum import Curriculum
from mrd_cli.core.partition import GROUPS, fold_assignment, group_counts, partition_by_agreement
from mrd_cli.errors import MRDError

FRACTIONS = {"difficult": 0.3, "general": 0.3, "simple": 0.4}


def test_partition_groups_on_crafted_example():
    y = np.array([0, 1, 2, 0, 1])
    multi = np.array([0, 0, 2, 1, 1])  # right, wrong, right, wrong, right
    text = np.array([1, 1, 2, 2, 0])  # wrong, right, right, wrong, wrong
    codes = partition_by_agreement(y, multi, text)
    assert [GROUPS[c] for c in codes] == ["mcti", "mitc", "simple", "general", "mcti"]
    counts = group_counts(codes, y, ["a", "b", "c"])
    assert counts["mcti"] == {"a": 1, "b": 1, "c": 0}
    assert counts["general"]["a"] == 1


SIZES = {"mcti": 5, "mitc": 5, "general": 5, "simple": 5}


def _stage_sequence(cur: Curriculum, epochs: int) -> list[set[str]]:
    return [cur.active_groups(e) for e in range(epochs)]


def test_reverse_curriculum_visits_difficult_first_then_general_then_simple():
    cur = Curriculum.build("reverse", 10, FRACTIONS, cumulative=False, group_sizes=SIZES)
    seq = _stage_sequence(cur, 10)
    assert seq[:3] == [{"mcti", "mitc"}] * 3
    assert seq[3:6] == [{"general"}] * 3
    assert seq[6:] == [{"simple"}] * 4


def test_cumulative_reverse_curriculum_ends_on_all_data():
    cur = Curriculum.build("reverse", 10, FRACTIONS, cumulative=True, group_sizes=SIZES)
    seq = _stage_sequence(cur, 10)
    assert seq[0] == {"mcti", "mitc"}
    assert seq[4] == {"mcti", "mitc", "general"}
    assert seq[9] == set(GROUPS)


def test_forward_curriculum_is_the_reverse_order():
    cur = Curriculum.build("forward", 10, FRACTIONS, cumulative=False, group_sizes=SIZES)
    seq = _stage_sequence(cur, 10)
    assert seq[0] == {"simple"} and seq[-1] == {"mcti", "mitc"}
    assert seq[4] == {"general"}


def test_no_curriculum_uses_everything_every_epoch():
    cur = Curriculum.build("none", 5, FRACTIONS, cumulative=True, group_sizes=SIZES)
    assert all(s == set(GROUPS) for s in _stage_sequence(cur, 5))


def test_empty_group_is_skipped_and_reported():
    sizes = {"mcti": 0, "mitc": 0, "general": 3, "simple": 7}
    cur = Curriculum.build("reverse", 6, FRACTIONS, cumulative=False, group_sizes=sizes)
    assert cur.skipped == ["difficult"]
    seq = _stage_sequence(cur, 6)
    assert seq[0] == {"general"} and seq[-1] == {"simple"}
    assert sum(n for _, n in cur.stages) == 6


def test_folds_cover_every_dialogue_once_and_are_seeded():
    a = fold_assignment(23, 5, seed=3)
    assert sorted(np.bincount(a).tolist()) == [4, 4, 5, 5, 5]
    assert (a == fold_assignment(23, 5, seed=3)).all()
    assert not (a == fold_assignment(23, 5, seed=4)).all()


def test_forward_curriculum_gives_simple_stage_its_own_fraction():
    # Keyed by stage name: with forward order the first (simple) stage gets simple's share,
    # not the first number of a list.
    fractions = {"difficult": 0.1, "general": 0.1, "simple": 0.8}
    cur = Curriculum.build("forward", 10, fractions, cumulative=False, group_sizes=SIZES)
    assert cur.stages == [("simple", 8), ("general", 1), ("difficult", 1)]
    rev = Curriculum.build("reverse", 10, fractions, cumulative=False, group_sizes=SIZES)
    assert rev.stages == [("difficult", 1), ("general", 1), ("simple", 8)]


@pytest.mark.parametrize(
    "fractions",
    [
        {"difficult": 0.3, "general": 0.7},
        {"difficult": 0.3, "general": 0.3, "simple": 0.4, "easy": 0.1},
    ],
)
def test_stage_fractions_must_name_exactly_the_three_stages(fractions):
    with pytest.raises(MRDError, match="stage_fractions"):
        Curriculum.build("reverse", 10, fractions, cumulative=False, group_sizes=SIZES)
