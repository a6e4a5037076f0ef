"""Model bundles: one safetensors file per stage plus ``manifest.json``.

The manifest records, per stage, the architecture, its full config, the label map, the input
size and how pixel spacing is handled, the sha256 of the weights file and training metrics; and,
for the bundle, its training provenance. Loading checks all of it and refuses a mismatch with a
message saying what differs. Weights are only ever read with safetensors: no pickle.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stages.atomic import write_atomic, write_json_atomic
from stages.configs import LABEL_MAPS, STAGES, StageConfigs
from stages.models import build_model

FORMAT = "lss-grading-model-bundle"
VERSION = 1
ARCHITECTURES = {"detector": "fasterrcnn_resnet50_fpn", "level": "vgg10", "grade": "vgg10"}


class BundleError(ValueError):
    """A bundle that cannot be used as it is; the message says why."""


def architecture_name(stage: str, configs: StageConfigs) -> str:
    if stage == "segmenter":
        return configs.segmenter.architecture
    if stage == "locator":
        return f"{configs.locator.network.architecture}_{configs.locator.network.out_channels}class"
    return ARCHITECTURES[stage]


def spacing_handling(stage: str, configs: StageConfigs) -> str:
    if stage == "detector":
        d = configs.detector
        return (f"slice resampled to {d.pixel_mm} mm pixels from PixelSpacing (coarser if that exceeds {d.max_side} px); "
                f"trained on {d.train_crop}-px crops; boxes mapped back to slice pixels")
    if stage == "locator":
        loc = configs.locator
        return (f"sagittal slice resampled to {loc.pixel_mm} mm pixels (coarser if that exceeds {loc.max_side} px); "
                f"the middle {loc.slices} slices of the localizer series, class probabilities averaged")
    patch = configs.segmenter_patch if stage == "segmenter" else configs.classifier_patch
    text = (f"square patch around the canal box, side (1 + 2 x {patch.margin}) x the box's longer side, "
            f"resampled to {patch.size} x {patch.size} px")
    if stage == "segmenter":
        text += "; DSCA = sac pixels (probability >= 0.5) x patch pixel area from PixelSpacing (row x column)"
    return text


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _input_size(stage: str, configs: StageConfigs) -> int:
    if stage == "detector":
        return configs.detector.max_side
    if stage == "locator":
        return configs.locator.max_side
    return (configs.segmenter_patch if stage == "segmenter" else configs.classifier_patch).size


def save_bundle(folder: Path | str, models: dict[str, torch.nn.Module], configs: StageConfigs,
                provenance: dict, metrics: dict[str, dict] | None = None) -> Path:
    """Write the weights, then the manifest last (atomically): a bundle without one is incomplete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for stage, model in models.items():
        path = folder / f"{stage}.safetensors"
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        # One metadata key: safetensors writes its metadata map in a random order (safetensors#584),
        # so with two keys the same weights gave files, and sha256s, that differed run to run.
        architecture = architecture_name(stage, configs)
        metadata = {"model": json.dumps({"architecture": architecture, "stage": stage}, sort_keys=True)}
        write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))
        entries[stage] = {
            "architecture": architecture,
            "file": path.name,
            "sha256": sha256_of(path),
            "labels": LABEL_MAPS[stage],
            "input_size": _input_size(stage, configs),
            "spacing_handling": spacing_handling(stage, configs),
            "preprocessing": asdict(configs.preprocessing),
            "metrics": (metrics or {}).get(stage, {}),
        }
    manifest = {"format": FORMAT, "version": VERSION, "stages": entries, "configs": asdict(configs),
                "provenance": provenance}
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


def _build(cls, data):
    """A dataclass from JSON, turning lists back into tuples and nested dicts into dataclasses."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def read_manifest(folder: Path | str) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no manifest.json)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BundleError(f"{path}: not a {FORMAT} version {VERSION} manifest")
    return manifest


def load_bundle(folder: Path | str, stages: typing.Iterable[str] | None = None,
                device: str | torch.device = "cpu") -> tuple[dict[str, torch.nn.Module], StageConfigs, dict]:
    """(models by stage, configs, manifest) after checking hashes, architectures and label maps."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        configs = _build(StageConfigs, manifest["configs"])
    except (TypeError, KeyError) as exc:
        raise BundleError(f"{folder}/manifest.json: configs do not describe these models ({exc})") from None
    wanted = list(stages) if stages is not None else list(manifest["stages"])
    models = {}
    for stage in wanted:
        if stage not in STAGES:
            raise BundleError(f"unknown stage {stage!r}")
        entry = manifest["stages"].get(stage)
        if entry is None:
            raise BundleError(f"{folder}: the bundle has no {stage} model (it has: {', '.join(manifest['stages'])})")
        path = folder / entry["file"]
        if Path(entry["file"]).name != entry["file"] or not path.is_file():
            raise BundleError(f"{path}: weights file missing")
        if path.suffix != ".safetensors":
            raise BundleError(f"{path}: not a .safetensors file; bundles never load pickled weights")
        if sha256_of(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 does not match the manifest (the file was changed or damaged)")
        expected = architecture_name(stage, configs)
        if entry["architecture"] != expected:
            raise BundleError(f"{path}: manifest says architecture {entry['architecture']!r}, configs build {expected!r}")
        if entry["labels"] != LABEL_MAPS[stage]:
            raise BundleError(f"{path}: label map {entry['labels']} is not the {stage} stage's {LABEL_MAPS[stage]}")
        model = build_model(stage, configs)
        try:
            weights = load_file(str(path))
        except Exception as exc:  # safetensors' own error types: a damaged or foreign file
            raise BundleError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        try:
            model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise BundleError(f"{path}: weights do not fit the {expected} architecture ({first})") from None
        models[stage] = model.to(device).eval()
    return models, configs, manifest


def combine_bundles(folder: Path | str, sources: dict[str, Path | str]) -> Path:
    """One bundle from stages trained in different runs, e.g. a shared detector and segmenter
    with one rater's classifiers. ``sources`` maps each stage to the bundle it comes from."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    configs: dict = {}
    entries, provenance = {}, {}
    for stage, source in sources.items():
        manifest = read_manifest(source)
        if stage not in manifest["stages"]:
            raise BundleError(f"{source}: has no {stage} model")
        entry = manifest["stages"][stage]
        shutil.copyfile(Path(source) / entry["file"], folder / entry["file"])
        entries[stage] = entry
        provenance[stage] = manifest["provenance"]
        fields = {"detector": ["detector"], "level": ["level", "classifier_patch"], "grade": ["grade", "classifier_patch"],
                  "segmenter": ["segmenter", "segmenter_patch", "segmenter_loss"], "locator": ["locator"]}[stage]
        for name in fields:
            if name in configs and configs[name] != manifest["configs"][name]:
                raise BundleError(f"{source}: {stage}'s {name} settings differ from another part's")
            configs[name] = manifest["configs"][name]
        for name in ("augment", "preprocessing", "synth"):  # training settings, or shared by every stage
            configs.setdefault(name, manifest["configs"].get(name, {}))
    base = asdict(StageConfigs())
    base.update(configs)
    manifest = {"format": FORMAT, "version": VERSION, "stages": entries, "configs": base,
                "provenance": {"combined_from": {s: str(Path(p).resolve()) for s, p in sources.items()},
                               "stages": provenance}}
    write_json_atomic(folder / "manifest.json", manifest)
    load_bundle(folder)  # refuse to leave a bundle that does not load
    return folder
