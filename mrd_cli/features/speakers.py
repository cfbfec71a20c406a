"""Speaker names -> the one-hot speaker slots of the MELD layout.

The MELD files give each utterance a one-hot vector of ``slots`` (9) entries. Transcripts
name hundreds of speakers, so the mapping is: the ``slots - 1`` speakers with the most
utterances in the *training* split get a slot each (ties by name), in that order; every
other speaker, and every speaker first seen in dev or test, shares the last slot. A line
said by several people (``['Ross Geller', 'Joey Tribbiani']``) counts for each of them and
takes the slot of the most frequent of them that has one, else the shared slot. With fewer
speakers than slots the spare slots stay unused, so the vectors always have ``slots`` entries.
"""

from __future__ import annotations

from collections import Counter

from mrd_cli.errors import MRDError
from mrd_cli.features.layouts import Conversations

OTHERS = "<others>"
# A sane bound on the vectors' width (MELD's is 9; every utterance stores one such vector).
MAX_SLOTS = 1024


def speaker_slots(conv: Conversations, slots: int) -> list[str]:
    """Names of the slots in order; the last one is ``OTHERS``."""
    if not 2 <= slots <= MAX_SLOTS:
        raise MRDError(f"--speaker-slots must be in [2, {MAX_SLOTS}], got {slots}.")
    counts: Counter[str] = Counter()
    for did in conv.splits["train"]:
        for u in conv.dialogues[did]:
            counts.update(u.speakers)
    ranked = sorted(counts, key=lambda n: (-counts[n], n))[: slots - 1]
    # Fewer speakers than slots: the vectors keep their width; the spare slots stay unused.
    spare = [f"<unused {i}>" for i in range(len(ranked), slots - 1)]
    return ranked + spare + [OTHERS]


def speaker_slot_of(speakers: tuple[str, ...], names: list[str]) -> int:
    """The slot of one utterance (see the module docstring for several speakers)."""
    own = {n: i for i, n in enumerate(names[:-1]) if not n.startswith("<unused")}
    ranks = [own[s] for s in speakers if s in own]
    return min(ranks) if ranks else len(names) - 1
