"""Training throughput per stage (quick profile) and what data-loading workers buy on this machine.

    uv run python scripts/bench_training.py --patients 6 --batches 12

For each stage: images/s of the data pipeline alone (decode-free: slices are in memory; patch
cropping, resampling and albumentations), and of whole training steps with DataLoader
``num_workers`` 0, 1 and 2, medians over timed batches after a warm-up batch, side by side in
one run. grade-train uses num_workers=0: with two cores, a worker process takes a core from
torch's threads, and worker RNG streams would make augmentation depend on the worker count.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

from grading.labels import TRAINING_COLUMNS, read_label_table
from grading.phantom.cohort import CohortConfig, generate_cohort
from grading.training_data import load_training_data
from stages.profiles import quick
from stages.stage_builders import stage_training
from stages.train_loop import seed_everything


def _seconds_per_batch(loader: DataLoader, batches: int, step=None) -> float:
    """Median seconds per batch over ``batches`` after the first (warm-up) one."""
    seconds, iterator = [], iter(loader)
    for k in range(batches + 1):
        start = time.perf_counter()
        batch = next(iterator)
        if step is not None:
            step(batch)
        if k:
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=6)
    p.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--render-all", action="store_true",
                   help="render every sample from its label map (the worst case for data loading)")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    profile = quick()
    if args.render_all:
        synth = profile.configs.synth
        every = {stage: replace(getattr(synth, stage), probability=1.0) for stage in ("detector", "level", "grade",
                                                                                      "segmenter")}
        profile = replace(profile, configs=replace(profile.configs, synth=replace(synth, **every)))
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp)
        generate_cohort(cohort, CohortConfig(patients=args.patients, seed=11, series=("ax_t2", "ax_t2_angled")),
                        progress=False)
        labels = read_label_table(cohort / "labels.csv", required=TRAINING_COLUMNS)
        records = load_training_data(labels, cohort / "dicom", "A1", cohort).records
    print(f"{len(records)} slices from {args.patients} phantom patients; {torch.get_num_threads()} torch threads")
    print("| stage | batch | data only, img/s | " + " | ".join(f"train, {w} workers, img/s" for w in workers)
          + " | data share of a step (0 workers) |")
    print("|---|---:|---:|" + "---:|" * len(workers) + "---:|")
    for stage in ("detector", "level", "grade", "segmenter"):
        seed_everything(0)
        training, train_data, _ = stage_training(stage, profile.configs, records, records[:4])
        batch_size = profile.settings[stage].batch_size
        model = training.model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(batch):
            loss = training.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def loader(num_workers: int) -> DataLoader:
            sampler = RandomSampler(train_data, replacement=True, num_samples=batch_size * (args.batches + 1),
                                    generator=torch.Generator().manual_seed(0))
            return DataLoader(train_data, batch_size=batch_size, sampler=sampler, collate_fn=training.collate,
                              num_workers=num_workers, persistent_workers=False)

        data_only = batch_size / _seconds_per_batch(loader(0), args.batches)
        train_rates = [batch_size / _seconds_per_batch(loader(w), args.batches, step) for w in workers]
        share = train_rates[0] / data_only if 0 in workers else float("nan")
        print(f"| {stage} | {batch_size} | {data_only:.0f} | " + " | ".join(f"{r:.1f}" for r in train_rates)
              + f" | {share:.0%} |")


if __name__ == "__main__":
    main()
