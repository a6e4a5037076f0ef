"""Training step time of each stage's model in torch's default (NCHW) and channels-last memory
format, on this machine's CPU, side by side in one process.

    uv run python scripts/bench_memory_format.py --profile demo --repeats 7

Each repeat times ``--steps`` optimizer steps of every model (its training loss,
``stages.stage_builders.stage_loss``) in both formats, alternating, on random inputs of the
profile's training shapes (batch size, crop or patch); prints the median
milliseconds per step and the ratio. Same model, same inputs: only the memory layout differs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stages.models import build_model
from stages.profiles import PROFILES
from stages.stage_builders import stage_loss


def _batch(stage: str, profile):
    """One random training batch of ``stage`` at the profile's shapes (batch size, crop or patch)."""
    configs, batch = profile.configs, profile.settings[stage].batch_size
    g = torch.Generator().manual_seed(0)
    if stage == "detector":
        side = configs.detector.train_crop
        images = [torch.rand(3, side, side, generator=g) for _ in range(batch)]
        targets = [{"boxes": torch.tensor([[side * 0.4, side * 0.45, side * 0.55, side * 0.6]]),
                    "labels": torch.tensor([1])} for _ in range(batch)]
        return images, targets
    if stage in ("level", "grade"):
        size = configs.classifier_patch.size
        return torch.rand(batch, 1, size, size, generator=g), torch.randint(0, 2, (batch,), generator=g)
    if stage == "segmenter":
        size = configs.segmenter_patch.size
        return (torch.rand(batch, 1, size, size, generator=g),
                (torch.rand(batch, 1, size, size, generator=g) > 0.5).float())
    side = configs.locator.train_crop
    return (torch.rand(batch, 1, side, side, generator=g),
            torch.randint(0, configs.locator.network.out_channels, (batch, side, side), generator=g))


def _channels_last(batch):
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_channels_last(b) for b in batch)
    return batch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="demo", choices=sorted(PROFILES))
    p.add_argument("--stages", default="level,grade,segmenter,locator,detector")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    profile = PROFILES[args.profile](0)
    print(f"profile {args.profile}, {torch.get_num_threads()} threads; median ms per training step of {args.repeats}")
    print("| stage | batch | NCHW | channels-last | ratio |\n|---|---:|---:|---:|---:|")
    for stage in args.stages.split(","):
        torch.manual_seed(0)
        model = build_model(stage, profile.configs).train()
        batch, loss_of = _batch(stage, profile), stage_loss(stage, profile.configs)
        optimizer = torch.optim.Adam(model.parameters(), 1e-4)
        times = {"nchw": [], "channels_last": []}
        for repeat in range(args.repeats + 1):  # the first round warms both up and is not counted
            for name in times:
                fmt = torch.channels_last if name == "channels_last" else torch.contiguous_format
                model.to(memory_format=fmt)
                b = _channels_last(batch) if name == "channels_last" else batch
                start = time.perf_counter()
                for _ in range(args.steps):
                    optimizer.zero_grad()
                    loss_of(model, b).backward()
                    optimizer.step()
                if repeat:
                    times[name].append((time.perf_counter() - start) / args.steps * 1000)
        a, c = statistics.median(times["nchw"]), statistics.median(times["channels_last"])
        print(f"| {stage} | {profile.settings[stage].batch_size} | {a:.1f} | {c:.1f} | {a / c:.2f}x |")


if __name__ == "__main__":
    main()
