"""One training loop for every stage: Adam, lr on a plateau rule or a cosine, best checkpoint.

A checkpoint (model, optimizer, scheduler, best state) is written after every epoch, so
``resume=True`` loses at most the epoch in flight. Randomness is derived from (seed, epoch) at
the start of each epoch (sampling order, augmentation, dropout), so a resumed run continues
exactly as an uninterrupted one would.
"""
from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from stages.atomic import write_atomic
from stages.datasets import balanced_weights
from stages.distributed import from_main, share_of, training_device, workers


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float = 1e-4
    lr_factor: float = 0.5
    plateau_patience: int = 2
    samples_per_epoch: int | None = None  # draws per epoch (default: the training set's size)
    balanced: bool = True  # weighted sampling: every level / grade equally often
    seed: int = 0
    max_val_items: int | None = None  # validate on at most this many items, spread evenly (None: all)
    #: First epoch (from 1) whose model is validated and can be kept; the last always is. On a short
    #: schedule the early epochs are never the best, and validating the detector on two CPU cores
    #: costs half an epoch.
    validate_from: int = 1
    #: "plateau": lr x ``lr_factor`` after ``plateau_patience`` epochs without a better validation
    #: score (the paper's). "cosine": lr from ``lr`` down to ``lr * min_lr_ratio`` along a half
    #: cosine over every step, after ``warmup_steps`` of linear warm-up; a short schedule never
    #: reaches a plateau, so without it the last epochs train at the first epochs' lr.
    schedule: str = "plateau"
    min_lr_ratio: float = 0.05
    warmup_steps: int = 0


@dataclass
class StageTraining:
    """What differs between stages: the loss of a batch and the validation metrics.

    ``evaluate`` returns ``score`` (higher is better; drives the lr schedule and the best epoch)
    and optionally ``tiebreak``, which decides between epochs of equal score.
    """

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, object], torch.Tensor]
    evaluate: Callable[[nn.Module, Dataset], dict]
    collate: Callable | None = None
    augment: object = None  # albumentations Compose with set_random_seed, or None
    # Train in the channels-last memory layout on the CPU: the same arithmetic, 1.2-1.5x faster
    # steps for the VGGs and the locator's U-Net (scripts/bench_memory_format.py).
    channels_last: bool = False


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_score: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def loader_workers(device: torch.device) -> int:
    """Loader processes that render and augment batches beside training: none on the CPU (on two
    cores a loader process takes a core from torch; scripts/bench_training.py), up to 8 when a GPU
    trains, which one process cannot keep fed."""
    if device.type == "cpu":
        return 0
    # Batches hold many small tensors (a detection target per image); passing each as a file
    # descriptor runs out of them, so the loader processes hand tensors over through files.
    torch.multiprocessing.set_sharing_strategy("file_system")
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _seed_loader_worker(augment) -> Callable[[int], None]:
    """Each loader process draws its own augmentations (torch seeds each worker differently;
    numpy and albumentations would otherwise repeat one stream in every worker)."""
    def init(worker_id: int) -> None:
        seed = torch.initial_seed() % 2**31
        np.random.seed(seed)
        if augment is not None:
            augment.set_random_seed(seed)
    return init


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % 2**31


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def to_device(batch, device: torch.device):
    """Tensors anywhere in a batch (tuples, lists, dicts of them) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def fit(stage: StageTraining, train: Dataset, val: Dataset, settings: TrainSettings, run_dir: Path | None = None,
        resume: bool = False, progress: bool | None = None) -> FitResult:
    """Train ``stage.model``; under torchrun, as one of several data-parallel workers
    (stages/distributed.py). The model comes back on the CPU with its best epoch's weights."""
    if len(val) == 0:
        raise ValueError(f"no validation data for the {stage.name} stage: the best epoch cannot be chosen "
                         "(are the validation patients' labels all 'other' for this rater?)")
    team, device = workers(), training_device()
    model = stage.model.to(device)
    if stage.channels_last and device.type == "cpu":
        model.to(memory_format=torch.channels_last)  # the layers' outputs follow their weights' layout
    trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if team.distributed else model
    writes = run_dir is not None and team.is_main
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    n_samples = settings.samples_per_epoch or len(train)
    scheduler = _scheduler(optimizer, settings, _steps_per_epoch(n_samples, settings.batch_size, team.world_size))
    per_step = settings.schedule != "plateau"
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    best_rank = (-math.inf, -math.inf)  # (score, tiebreak): equal scores go to the better tiebreak
    best_state = _copy_state(model)
    history: list[dict] = []
    checkpoint = run_dir / "checkpoint.pt" if run_dir is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        best_rank = tuple(state.get("best_rank", (best_score, -math.inf)))
        best_state = state["best_state"]
        history = _read_history(run_dir / "metrics.csv")[:start_epoch]
    n_workers = loader_workers(device)
    total_images, total_seconds = 0, 0.0
    for epoch in range(start_epoch, settings.epochs):
        seed = _epoch_seed(settings.seed, epoch)
        seed_everything(seed)
        if stage.augment is not None:
            stage.augment.set_random_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        strata = getattr(train, "strata", None)
        weights = balanced_weights(strata) if settings.balanced and strata else torch.ones(len(train), dtype=torch.double)
        draws = list(WeightedRandomSampler(weights, n_samples, replacement=True, generator=generator))
        # Every rank drew the same list; each takes an equal share, so the global batch is the profile's.
        draws = share_of(draws[:len(draws) - len(draws) % team.world_size], team)
        batch_size = max(1, settings.batch_size // team.world_size)
        loader = DataLoader(train, batch_size=batch_size, sampler=draws, collate_fn=stage.collate,
                            num_workers=n_workers, drop_last=len(draws) > batch_size,
                            worker_init_fn=_seed_loader_worker(stage.augment) if n_workers else None)
        model.train()
        start = time.perf_counter()
        losses = []
        bar = tqdm(loader, desc=f"{stage.name} epoch {epoch + 1}/{settings.epochs}", leave=False,
                   disable=None if progress is not False and team.is_main else True)
        for batch in bar:
            loss = stage.loss(trained, to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        seconds = time.perf_counter() - start
        total_seconds += seconds
        total_images += len(loader) * batch_size * team.world_size
        metrics = {}
        if epoch + 1 >= min(settings.validate_from, settings.epochs):
            model.eval()
            metrics = from_main(stage.evaluate(model, val) if team.is_main else None, team)
            score = float(metrics["score"])
            if not per_step:
                scheduler.step(score)
            rank = (score, float(metrics.get("tiebreak", 0.0)))
            if rank > best_rank:
                best_rank, best_score, best_epoch, best_state = rank, score, epoch, _copy_state(model)
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
               **{f"val_{k}": float(v) for k, v in metrics.items()}, "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(seconds, 2),
               "images_per_s": round(len(loader) * batch_size * team.world_size / max(seconds, 1e-9), 2)}
        history.append(row)
        if writes:
            _write_checkpoint(checkpoint, model, optimizer, scheduler, epoch, best_rank, best_epoch, best_state)
            _write_history(run_dir / "metrics.csv", history)
    model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format)
    return FitResult(best_state, best_score, best_epoch, history, total_seconds,
                     total_images / total_seconds if total_seconds else 0.0)


def _steps_per_epoch(n_samples: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps per epoch on each rank (as ``fit``'s loader batches its share of draws)."""
    share = (n_samples - n_samples % world_size) // world_size
    batch = max(1, batch_size // world_size)
    return share // batch if share > batch else 1


def _scheduler(optimizer: torch.optim.Optimizer, settings: TrainSettings, steps_per_epoch: int):
    """The lr schedule ``settings.schedule`` names (see TrainSettings)."""
    if settings.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=settings.lr_factor,
                                                          patience=settings.plateau_patience)
    if settings.schedule != "cosine":
        raise ValueError(f"unknown lr schedule {settings.schedule!r} (plateau or cosine)")
    warmup, total = settings.warmup_steps, max(1, settings.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = min(1.0, (step - warmup) / max(1, total - warmup))
        return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _write_checkpoint(path, model, optimizer, scheduler, epoch, best_rank, best_epoch, best_state) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "best_score": best_rank[0], "best_rank": list(best_rank), "best_epoch": best_epoch,
             "best_state": best_state}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def _write_history(path: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)

    write_atomic(path, write)


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        rows = [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]
    for row in rows:
        row["epoch"] = int(row["epoch"])  # written as an integer: a resumed metrics.csv reads the same
    return rows
