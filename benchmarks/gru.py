"""The context encoder's GRU on the CPU: ``nn.GRU`` on a packed sequence against
``models.gru`` (one recurrence for both directions), back to back in one process.

Times the forward and backward pass of ``DialogueModel``'s two GRU paths (``_packed_gru``
and ``_bigru``) on batches of ``--batch`` dialogues whose lengths are drawn from the
full-size synthetic corpus of ``--preset``, with the model's default sizes (hidden 128),
alternating the two over ``--repeats`` rounds; prints the median per batch and the ratio.

    python benchmarks/gru.py --preset iemocap --threads 1
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import torch
import typer

from mrd_cli.core.session import Session
from mrd_cli.data.synthetic import write_synthetic
from mrd_cli.models.dialogue import UtteranceLayout


def main(
    preset: Annotated[
        str, typer.Option("--preset", help="Synthetic corpus size: small, iemocap or meld.")
    ] = "iemocap",
    batch: Annotated[int, typer.Option("--batch", help="Dialogues per batch.")] = 16,
    batches: Annotated[int, typer.Option("--batches", help="Batches per round.")] = 8,
    repeats: Annotated[int, typer.Option("--repeats", help="Rounds (order alternates).")] = 5,
    threads: Annotated[int, typer.Option("--threads", help="torch threads.")] = 1,
) -> None:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="mrd-gru-") as tmp:
        write_synthetic(preset, Path(tmp) / "data", 0)
        # The small corpus is written in the IEMOCAP layout.
        dataset = "iemocap" if preset == "small" else preset
        session = Session.open(dataset, None, Path(tmp) / "data", Path(tmp) / "run", "cpu", None)
        lengths_all = session.tensors("train").lengths
        model = session.build_model("text").train()
    hid = session.cfg.model.hidden
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for _ in range(batches):
        pick = torch.randperm(len(lengths_all), generator=gen)[:batch]
        lengths = lengths_all[pick]
        n = int(lengths.sum())
        where = UtteranceLayout.of(lengths, int(lengths.max()), torch.device("cpu"))
        inputs.append((torch.randn(n, hid, generator=gen), lengths, where))

    def packed() -> None:
        for fused, lengths, where in inputs:
            x = fused.requires_grad_()
            model._packed_gru(x, where, len(lengths), int(lengths.max())).sum().backward()

    def ours() -> None:
        for fused, lengths, _ in inputs:
            x = fused.requires_grad_()
            model._bigru(x, lengths).sum().backward()

    times: dict[str, list[float]] = {"nn_gru_packed": [], "models_gru": []}
    packed(), ours()  # warm-up
    for r in range(repeats):
        order = [("nn_gru_packed", packed), ("models_gru", ours)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / batches)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "preset": preset,
        "threads": threads,
        "batch": batch,
        "median_ms_per_batch": {k: round(v * 1e3, 2) for k, v in med.items()},
        "speedup": round(med["nn_gru_packed"] / med["models_gru"], 2),
        "load_avg": os.getloadavg(),
    }
    print(
        f"{preset}, {batch} dialogues a batch, forward + backward: nn.GRU packed "
        f"{out['median_ms_per_batch']['nn_gru_packed']} ms, models.gru "
        f"{out['median_ms_per_batch']['models_gru']} ms (x{out['speedup']}), "
        f"load {out['load_avg'][0]:.1f}",
        file=sys.stderr,
    )
    sys.stdout.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
