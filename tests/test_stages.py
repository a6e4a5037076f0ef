"""The stages on tiny synthetic slices: models, patches, folds, training, bundles, inference."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_models import FixedBoxes

from stages.bundle import BundleError, load_bundle, save_bundle, sha256_of
from stages.configs import STAGES, PatchConfig
from stages.cross_validation import CVRequest, run_cross_validation
from stages.folds import plan_folds
from stages.inference import classify, predict_slices
from stages.losses import LOSSES, segmentation_loss, weighted_bce
from stages.models import build_model
from stages.patches import extract_patches, patch_geometry
from stages.preprocessing import Preprocessing, normalise_intensity
from stages.profiles import smoke
from stages.records import SliceRecord
from stages.segmenters import ARCHITECTURES, Segmenter, SegmenterConfig
from stages.stage_builders import stage_training
from stages.train_loop import TrainSettings, _scheduler, _steps_per_epoch, fit, seed_everything
from stages.vgg import VGGClassifier, VGGConfig


def make_records(n_patients=6, per_patient=5, size=64, seed=0) -> list[SliceRecord]:
    """Slices with a bright disc (the sac) in a darker box (the canal)."""
    rng = np.random.default_rng(seed)
    records = []
    yy, xx = np.mgrid[:size, :size]
    for p in range(n_patients):
        for s in range(per_patient):
            cx, cy, r = rng.uniform(20, 44), rng.uniform(20, 44), rng.uniform(5, 9)
            image = rng.normal(0.3, 0.05, (size, size)).astype(np.float32)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            image[mask] = 1.0
            level = "cord" if s == 0 else "rootlet"
            grade = "" if level == "cord" else "ABCD"[(p + s) % 4]
            records.append(SliceRecord(case_id=f"P{p}-{s}", patient=f"P{p}", image=image, spacing=(0.5, 0.5),
                                       box=(cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2), level=level, grade=grade,
                                       mask=mask, dsca_mm2=float(mask.sum() * 0.25)))
    return records


def with_column_classes(records: list[SliceRecord]) -> list[SliceRecord]:
    """The same slices as sagittal ones for the locator: horizontal bands of body (1), disc (2)
    and a sacrum (3) at the bottom, drawn into the image too."""
    for r in records:
        rows = np.arange(r.image.shape[0])[:, None] * np.ones(r.image.shape[1], int)
        r.classes = np.where(rows % 16 < 11, 1, 2).astype(np.uint8)
        r.classes[-8:] = 3
        r.image = (0.2 + 0.3 * r.classes).astype(np.float32)
    return records


def test_vgg_is_the_papers_shape():
    model = VGGClassifier(VGGConfig((8, 8, 16, 16), num_outputs=4))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (len(convs), len(pools), len(linears)) == (10, 4, 1)
    assert model(torch.rand(3, 1, 48, 48)).shape == (3, 4)


def test_patch_input_norm_reads_contrast_not_brightness():
    """With input_norm="patch" a patch dimmed and offset (a canal far from the coil, a field of
    view with brighter things elsewhere) reaches the convolutions unchanged; with "slice" as is."""
    torch.manual_seed(0)
    patch = torch.rand(2, 1, 32, 32)
    patch[1] *= 3  # each patch is scaled on its own
    dimmed = 0.4 * patch + 0.05
    seen = {}
    for norm in ("slice", "patch"):
        model = VGGClassifier(VGGConfig((4, 4, 8, 8), num_outputs=4, input_norm=norm)).eval()
        model.features.register_forward_pre_hook(lambda _, args, norm=norm: seen.setdefault(norm, []).append(args[0]))
        with torch.no_grad():
            model(patch), model(dimmed)
    assert torch.allclose(*seen["patch"], atol=1e-5)
    low, high = torch.quantile(seen["patch"][0].flatten(1), torch.tensor([0.01, 0.99]), dim=1)
    assert torch.allclose(low, torch.zeros(2), atol=1e-3) and torch.allclose(high, torch.ones(2), atol=1e-3)
    assert torch.equal(seen["slice"][1], dimmed)
    with pytest.raises(ValueError, match="input_norm"):
        VGGClassifier(VGGConfig(input_norm="volume"))


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_segmenters_shapes_and_auxiliary_output(architecture):
    model = Segmenter(SegmenterConfig(architecture, base_width=6, depth=2))
    x = torch.rand(2, 1, 36, 36)
    model.train()
    out = model(x)
    if architecture == "inception_unet":
        assert isinstance(out, tuple) and all(o.shape == (2, 1, 36, 36) for o in out)
    else:
        assert out.shape == (2, 1, 36, 36)
    model.eval()
    assert model(x).shape == (2, 1, 36, 36)  # one output at inference, whatever the architecture


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_group_norm_segmenters_keep_no_batch_statistics(architecture):
    """With GroupNorm every normalisation reads one image: training and use give the same logits,
    and an image's logits do not depend on what else is in its batch."""
    torch.manual_seed(0)
    model = Segmenter(SegmenterConfig(architecture, base_width=6, depth=2, norm="group"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(3, 1, 36, 36)
    with torch.no_grad():
        training = model.train()(x)
        training = training[0] if isinstance(training, tuple) else training
        use, alone = model.eval()(x), model(x[:1])
    assert torch.allclose(training, use, atol=1e-5) and torch.allclose(use[:1], alone, atol=1e-5)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        Segmenter(SegmenterConfig(architecture, base_width=6, depth=2, norm="layer"))


def test_unknown_segmenter_named():
    with pytest.raises(ValueError, match="unknown segmenter 'vnet'"):
        Segmenter(SegmenterConfig("vnet"))


def test_losses_prefer_the_right_answer():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    good, bad = (target * 20 - 10), -(target * 20 - 10)
    for name in LOSSES:
        assert segmentation_loss(name, good, target) < segmentation_loss(name, bad, target), name
    all_negative = torch.full_like(target, -3.0)
    # weighted BCE: a missed positive costs 20 times a false positive
    assert weighted_bce(all_negative, target) > 5 * weighted_bce(-all_negative, 1 - target)


def test_patch_geometry_maps_back_and_keeps_area():
    image = np.zeros((80, 100), np.float32)
    image[30:50, 40:70] = 1.0
    g = patch_geometry((40, 30, 70, 50), size=48, margin=0.25)
    patch = extract_patches(image, [g])[0]
    assert patch.sum() * g.step_x * g.step_y == pytest.approx(600, rel=0.03)
    x, y = g.to_image(np.array([0, 48]), np.array([0, 48]))
    assert (x[1] - x[0]) == pytest.approx(30 * 1.5) and (x[0] + x[1]) / 2 == pytest.approx(55)
    assert g.pixel_area_mm2((0.5, 0.8)) == pytest.approx(g.step_x * g.step_y * 0.4)
    px0, py0, px1, py1 = g.box_in_patch((40, 30, 70, 50))
    assert px0 == pytest.approx(48 * 0.25 / 1.5) and px1 - px0 == pytest.approx(48 / 1.5)


def test_patches_are_square_in_millimetres_on_anisotropic_pixels():
    """0.5 mm rows, 0.8 mm columns: the patch covers the same mm both ways and keeps the area."""
    spacing = (0.5, 0.8)
    image = np.zeros((80, 100), np.float32)
    image[30:50, 40:70] = 1.0  # 10 mm tall, 24 mm wide
    g = patch_geometry((40, 30, 70, 50), size=48, margin=0.25, spacing=spacing)
    assert g.size * g.step_x * spacing[1] == pytest.approx(g.size * g.step_y * spacing[0]) == pytest.approx(36.0)
    patch = extract_patches(image, [g])[0]
    assert patch.sum() * g.pixel_area_mm2(spacing) == pytest.approx(600 * 0.4, rel=0.03)
    rows, cols = np.nonzero(patch > 0.5)
    assert (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1) == pytest.approx(2.4, rel=0.1)


def _plan(records, n_folds, seed=0):
    return plan_folds([r.patient for r in records], [r.grade or r.level for r in records], n_folds, seed)


def test_folds_group_patients_and_split_7_2_1():
    records = make_records(n_patients=20, per_patient=3)
    plan = _plan(records, 10, seed=1)
    assert set(plan.fold_of_patient.values()) == set(range(10))
    for k in range(10):
        train, val, test = plan.split(k)
        assert not (train & val or train & test or val & test)
        assert len(train | val | test) == 20
        folds = lambda ps: {plan.fold_of_patient[p] for p in ps}  # noqa: E731
        assert (len(folds(train)), len(folds(val)), len(folds(test))) == (7, 2, 1)
    with pytest.raises(ValueError, match="cannot fill"):
        _plan(make_records(n_patients=4), 10)
    with pytest.raises(ValueError, match="empty patient"):
        plan_folds(["P1", "", "P2"], ["A", "A", "B"], 3)


def test_final_model_trains_on_all_but_the_validation_folds():
    """The final model: 8 of 10 folds train it, 2 choose its epoch; its manifest says so."""
    plan = _plan(make_records(n_patients=20, per_patient=3), 10, seed=1)
    train, val = plan.final_split()
    assert not train & val and train | val == set(plan.fold_of_patient)
    assert {plan.fold_of_patient[p] for p in val} == {0, 1} and len({plan.fold_of_patient[p] for p in train}) == 8


def test_empty_validation_set_is_an_error_not_the_first_epoch():
    profile = smoke()
    records = make_records()
    unit, train, _ = stage_training("level", profile.configs, records[:20], records[20:])
    _, _, empty = stage_training("level", profile.configs, records[:20], [])
    with pytest.raises(ValueError, match="no validation data for the level stage"):
        fit(unit, train, empty, profile.settings["level"], progress=False)


def test_epochs_before_validate_from_are_neither_validated_nor_kept(monkeypatch):
    """The model kept comes from a validated epoch, and the last epoch is validated even when
    validate_from lies beyond the schedule."""
    profile = smoke()
    records = make_records()
    unit, train, val = stage_training("level", profile.configs, records[:20], records[20:])
    validated = []
    evaluate = unit.evaluate

    def counting(model, data):
        validated.append(True)
        return {**evaluate(model, data), "score": -len(validated)}  # the first validated epoch scores best
    monkeypatch.setattr(unit, "evaluate", counting)
    three = replace(profile.settings["level"], epochs=3)
    result = fit(unit, train, val, replace(three, validate_from=2), progress=False)
    assert len(validated) == 2 and result.best_epoch == 1
    assert "val_score" not in result.history[0] and "val_score" in result.history[1]
    validated.clear()
    result = fit(unit, train, val, replace(three, validate_from=9), progress=False)
    assert len(validated) == 1 and result.best_epoch == 2


def test_classifier_checkpoints_are_chosen_by_macro_f1():
    """Validation sets that are mostly grade A, or mostly rootlet: a model calling every slice the
    majority class has high accuracy and poor macro-F1, and both stages score it by macro-F1."""
    from stages.stage_builders import SELECTED_BY

    class Majority(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor([logits])

        def forward(self, x):
            return self.logits.expand(len(x), -1)

    records = make_records(n_patients=4, per_patient=5)
    for r, grade in zip(records, "AAAAAAAAAAAAAAAAAABC"):
        r.level, r.grade = "rootlet", grade
    unit, _, val = stage_training("grade", smoke().configs, records, records)
    metrics = unit.evaluate(Majority([5.0, 0, 0, 0]), val)
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["score"] == metrics["f1_macro"] == pytest.approx(1 / 3 * (2 * 0.9 / 1.9))
    for r, level in zip(records, ["cord"] * 2 + ["rootlet"] * 18):
        r.level = level
    unit, _, val = stage_training("level", smoke().configs, records, records)
    metrics = unit.evaluate(Majority([-5.0]), val)  # P(cord) ~ 0: every slice rootlet
    assert metrics["accuracy"] == pytest.approx(0.9)
    assert metrics["score"] == pytest.approx(0.5 * (2 * 0.9 / 1.9))
    assert all("macro-F1" in SELECTED_BY[stage].split("(")[0] for stage in ("level", "grade"))


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_trains_saves_loads_and_predicts(stage, tmp_path):
    profile = smoke()
    records = with_column_classes(make_records()) if stage == "locator" else make_records()
    unit, train, val = stage_training(stage, profile.configs, records[:20], records[20:])
    before = {k: v.clone() for k, v in unit.model.state_dict().items()}
    result = fit(unit, train, val, profile.settings[stage], tmp_path / "run", progress=False)
    changed = [k for k, v in unit.model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed and np.isfinite(result.history[0]["train_loss"])
    assert (tmp_path / "run" / "metrics.csv").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    save_bundle(tmp_path / "bundle", {stage: unit.model}, profile.configs, {"test": True})
    models, configs, manifest = load_bundle(tmp_path / "bundle")
    for k, v in unit.model.state_dict().items():
        assert torch.equal(models[stage].state_dict()[k], v)
    assert manifest["stages"][stage]["sha256"] and manifest["stages"][stage]["spacing_handling"]
    if stage == "locator":  # the bundle names levels as the trained model would
        from stages.locator import column_probabilities

        images, spacings = [r.image for r in records[:3]], [r.spacing for r in records[:3]]
        loaded, trained = (column_probabilities(m, profile.configs.locator, images, spacings)
                           for m in (models[stage], unit.model))
        assert all(a.shape == (4, *r.image.shape) and np.array_equal(a, b) for a, b, r in zip(loaded, trained, records))
        return
    boxes = [r.box for r in records[:3]]
    preds = predict_slices(models, configs, [r.image for r in records[:3]], [r.spacing for r in records[:3]],
                           boxes=boxes, min_box_score=0.0)
    reference = predict_slices({stage: unit.model}, profile.configs, [r.image for r in records[:3]],
                               [r.spacing for r in records[:3]], boxes=boxes, min_box_score=0.0)
    for loaded, trained in zip(preds, reference):  # the bundle predicts what the trained model does
        assert (loaded.level, loaded.grade, loaded.dsca_mm2) == (trained.level, trained.grade, trained.dsca_mm2)


def _constant_model(stage: str, configs, bias):
    """A stage's network whose every output is its head's bias (all other weights zero)."""
    model = build_model(stage, configs).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        head = model.fc if stage in ("level", "grade") else model.head
        head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return model


def test_predictions_follow_known_model_outputs():
    """Known logits give known answers: the level and its probability, the argmax grade, and a
    sac filling the patch gives DSCA = the patch's area in mm² (rows x columns spacing)."""
    configs = smoke().configs
    models = {"level": _constant_model("level", configs, [1.5]), "grade": _constant_model("grade", configs, [0, 0, 2, 0]),
              "segmenter": _constant_model("segmenter", configs, [8.0])}
    image = np.zeros((200, 160), np.float32)
    spacing = (0.5, 0.8)
    box = (70.0, 90.0, 90.0, 110.0)  # 16 x 10 mm
    cord, = predict_slices(models, configs, [image], [spacing], boxes=[box])
    assert cord.level == "cord" and cord.level_probability == pytest.approx(1 / (1 + np.exp(-1.5)), abs=1e-6)
    assert cord.grade == "" and cord.dsca_mm2 is None  # SPEC: grade and area on rootlet slices only
    models["level"] = _constant_model("level", configs, [-1.5])
    rootlet, = predict_slices(models, configs, [image], [spacing], boxes=[box])
    assert rootlet.level == "rootlet" and rootlet.grade == "C"
    assert rootlet.grade_probabilities == pytest.approx(list(np.exp([0, 0, 2, 0]) / np.exp([0, 0, 2, 0]).sum()), abs=1e-6)
    side_mm = 16.0 * (1 + 2 * configs.segmenter_patch.margin)  # a square in mm around the box
    assert rootlet.dsca_mm2 == pytest.approx(side_mm**2, rel=0.02)
    assert rootlet.dsca_mm2 == pytest.approx(rootlet.sac_mask.sum() * spacing[0] * spacing[1])


class _LeftSided(torch.nn.Module):
    """Logits from the patch's left half only (four grade logits, or the level model's one): a
    network that reads a slice and its mirror image differently."""

    def __init__(self, outputs: int):
        super().__init__()
        self.weights = torch.tensor([4.0, -4.0, 1.0, 0.0][:outputs] if outputs > 1 else [3.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))[:, None] * self.weights


@pytest.mark.parametrize("stage", ["level", "grade"])
def test_a_slice_and_its_mirror_image_are_classified_alike(stage):
    """Both classifiers read the patch and its left-right mirror together, so mirroring the slice
    (and its box) changes nothing, although one pass of the network on either alone differs."""
    configs, model = smoke().configs, _LeftSided(4 if stage == "grade" else 1)
    image = np.zeros((120, 100), np.float32)
    image[:, :45] = 1.0  # bright on the left of the canal box
    box, mirrored_box = (30.0, 40.0, 55.0, 62.0), (45.0, 40.0, 70.0, 62.0)
    plain, = predict_slices({stage: model}, configs, [image], [(0.7, 0.7)], boxes=[box])
    mirrored, = predict_slices({stage: model}, configs, [image[:, ::-1].copy()], [(0.7, 0.7)],
                               boxes=[mirrored_box])
    read = (lambda p: p.grade_probabilities) if stage == "grade" else (lambda p: [p.level_probability])
    assert read(plain) == pytest.approx(read(mirrored), abs=1e-5)
    cfg = configs.classifier_patch
    patch = extract_patches(image, [patch_geometry(box, cfg.size, cfg.margin, (0.7, 0.7))])
    one_pass = [classify(model, p)[0] for p in (patch, np.ascontiguousarray(patch[..., ::-1]))]
    assert np.abs(one_pass[0] - one_pass[1]).max() > 0.1
    mean = (one_pass[0] + one_pass[1]) / 2
    assert read(plain) == pytest.approx(list(mean) if stage == "grade" else [mean.max()], abs=1e-5)


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    """Every step moves the lr: up over the warm-up, then down along a half cosine to
    lr * min_lr_ratio at the last step, whatever the validation scores."""
    settings = TrainSettings(epochs=3, batch_size=4, lr=1e-3, schedule="cosine", warmup_steps=2, min_lr_ratio=0.1)
    assert _steps_per_epoch(18, 4, 1) == 4 and _steps_per_epoch(18, 4, 2) == 4 and _steps_per_epoch(3, 4, 1) == 1
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=settings.lr)
    scheduler = _scheduler(optimizer, settings, steps_per_epoch=4)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == lrs[2] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        _scheduler(optimizer, replace(settings, schedule="step"), 4)


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, schedule):
    profile = smoke()
    records = make_records()
    settings = replace(profile.settings["level"], epochs=3, schedule=schedule)

    def run(folder, resume, killed_in_epoch=None):
        torch.manual_seed(0)
        unit, train, val = stage_training("level", profile.configs, records[:20], records[20:])
        if killed_in_epoch is not None:  # the process dies at the first step of that epoch
            steps, loss = [0], unit.loss
            per_epoch = _steps_per_epoch(len(train), settings.batch_size, world_size=1)

            def dying(model, batch):
                steps[0] += 1
                if steps[0] > (killed_in_epoch - 1) * per_epoch:
                    raise KeyboardInterrupt
                return loss(model, batch)
            unit.loss = dying
        return fit(unit, train, val, settings, folder, resume=resume, progress=False)

    whole = run(tmp_path / "whole", False)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", False, killed_in_epoch=3)
    resumed = run(tmp_path / "cut", True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["lr"] == pytest.approx(whole.history[-1]["lr"])
    assert resumed.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-5)
    for k, v in whole.best_state.items():
        assert torch.allclose(v.float(), resumed.best_state[k].float(), atol=1e-6), k


def _one_bundle(tmp_path):
    profile = smoke()
    save_bundle(tmp_path, {"grade": build_model("grade", profile.configs)}, profile.configs, {})
    return json.loads((tmp_path / "manifest.json").read_text())


def test_bundle_refuses_changed_weights(tmp_path):
    _one_bundle(tmp_path)
    data = bytearray((tmp_path / "grade.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "grade.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 does not match"):
        load_bundle(tmp_path)


def test_the_same_weights_always_write_the_same_file(tmp_path):
    """A bundle's sha256 names its weights: saved eight times, one model gives one digest (safetensors
    writes a file's metadata map in a random order, safetensors#584, so two keys made it vary)."""
    profile = smoke()
    model = build_model("grade", profile.configs)
    digests = set()
    for k in range(8):
        save_bundle(tmp_path / str(k), {"grade": model}, profile.configs, {})
        digests.add(sha256_of(tmp_path / str(k) / "grade.safetensors"))
    assert len(digests) == 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["stages"]["grade"].update(architecture="resnet18"), "architecture 'resnet18'"),
        (lambda m: m["stages"]["grade"].update(labels=["A", "B", "C"]), "label map"),
        (lambda m: m["configs"]["grade"].update(widths=[8, 8, 8, 8]), "weights do not fit"),
        (lambda m: m.update(format="something-else"), "not a lss-grading-model-bundle"),
        (lambda m: m["stages"]["grade"].update(file="../grade.safetensors"), "weights file missing"),
    ],
)
def test_bundle_refuses_manifest_mismatches(tmp_path, edit, message):
    manifest = _one_bundle(tmp_path)
    edit(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        load_bundle(tmp_path)


class _Payload:
    """Pickling this records a call that would run on unpickling."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["LSS_PICKLE_MARKER"]),))


@pytest.mark.parametrize("name", ["grade.pt", "grade.safetensors"])
def test_bundle_never_unpickles_weights(tmp_path, monkeypatch, name):
    """A pickle in place of the weights, with a manifest that matches its hash, is refused unread."""
    manifest = _one_bundle(tmp_path)
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("LSS_PICKLE_MARKER", str(marker))
    torch.save({"weight": _Payload()}, tmp_path / name)
    manifest["stages"]["grade"].update(file=name, sha256=sha256_of(tmp_path / name))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="safetensors"):
        load_bundle(tmp_path)
    assert not marker.exists()


def test_cross_validation_writes_fold_bundles_and_oof_predictions(tmp_path):
    records = make_records(n_patients=6, per_patient=4)
    # The final grade model (the bundle's) trains longer than the fold models; level does not.
    request = CVRequest(stages=("level", "grade"), profile=replace(smoke(), final_epochs={"grade": 2}), n_folds=3,
                        final=True)
    summary = run_cross_validation(records, request, tmp_path, progress=False)
    assert sorted(summary["folds"]) == [0, 1, 2]
    assert {summary["folds"][k]["stages"]["grade"]["epochs"] for k in range(3)} == {1}
    assert summary["final"]["stages"]["grade"]["epochs"] == 2 and summary["final"]["stages"]["level"]["epochs"] == 1
    import pandas as pd

    predictions = pd.concat(pd.read_csv(tmp_path / f"fold_{k:02d}" / "predictions.csv") for k in range(3))
    assert sorted(predictions.case_id) == sorted(r.case_id for r in records)  # every case predicted once
    assert set(predictions.level) <= {"rootlet", "cord"}
    fold_of = json.loads((tmp_path / "splits_final.json").read_text())["fold_of_patient"]
    assert all(fold_of[c.split("-")[0]] == f for c, f in zip(predictions.case_id, predictions.fold))
    models, _, manifest = load_bundle(tmp_path / "final" / "bundle")
    assert set(models) == {"level", "grade"} and manifest["provenance"]["fold"] is None
    assert manifest["provenance"]["final_split"].startswith("trained on 2 of 3 folds")
    assert "macro-F1" in manifest["stages"]["grade"]["metrics"]["selected_by"]


def test_combined_bundle_takes_each_stage_from_its_run(tmp_path):
    profile = smoke()
    wide = replace(profile.configs, grade=VGGConfig((4, 8, 8, 8), num_outputs=4))
    save_bundle(tmp_path / "a", {"detector": build_model("detector", profile.configs),
                                 "segmenter": build_model("segmenter", profile.configs)}, profile.configs, {"run": "a"})
    grade_model = build_model("grade", wide)
    save_bundle(tmp_path / "b", {"level": build_model("level", wide), "grade": grade_model}, wide, {"run": "b"})
    from stages.bundle import combine_bundles

    combine_bundles(tmp_path / "c", {"detector": tmp_path / "a", "segmenter": tmp_path / "a",
                                     "level": tmp_path / "b", "grade": tmp_path / "b"})
    models, configs, manifest = load_bundle(tmp_path / "c")
    assert set(models) == {"detector", "segmenter", "level", "grade"} and configs.grade.widths == (4, 8, 8, 8)
    assert torch.equal(models["grade"].fc.weight, grade_model.fc.weight)
    assert manifest["provenance"]["stages"]["grade"]["run"] == "b"
    clash = replace(profile.configs, classifier_patch=PatchConfig(size=48))
    save_bundle(tmp_path / "d", {"grade": build_model("grade", clash)}, clash, {})
    with pytest.raises(BundleError, match="classifier_patch settings differ"):
        combine_bundles(tmp_path / "e", {"level": tmp_path / "b", "grade": tmp_path / "d"})


def test_inference_and_bundles_import_no_training_only_library():
    """grade-study loads bundles and runs inference: albumentations and scikit-learn stay out."""
    import subprocess
    import sys

    code = ("import sys, stages.inference, stages.bundle, grading.pipeline; "
            "print(','.join(m for m in ('albumentations', 'sklearn') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""


def _four_boxes() -> FixedBoxes:
    """Boxes the air behind the back on the midline (score 0.95), the skin of the back on the
    midline (0.92), the skin at the side (0.9) and the middle of the body (0.7)."""
    return FixedBoxes([(45.0, 85.0, 55.0, 95.0), (45.0, 72.0, 55.0, 82.0), (8.0, 40.0, 18.0, 50.0),
                       (45.0, 40.0, 55.0, 50.0)], [0.95, 0.92, 0.9, 0.7])


def test_the_canal_box_is_taken_inside_the_body_near_its_midline():
    from stages.detector import detect
    from stages.profiles import quick

    config = quick().configs.detector
    image = np.zeros((100, 100), np.float32)
    image[20:80, 10:90] = 1.0  # the body, air around it; the second box's centre is 3 px (4 mm) under the skin
    image[45:55, 45:55] = 0.0  # something dark inside it (the canal on a T1 or Dixon fat image)
    spacing = (config.pixel_mm, config.pixel_mm)  # the detector's own pixel size: boxes come back as given
    plausible, = detect(_four_boxes(), [image], [spacing], config)
    anywhere, = detect(_four_boxes(), [image], [spacing], config, midline_band=None)
    assert plausible.box == pytest.approx((45, 40, 55, 50)) and plausible.score == pytest.approx(0.7)
    assert anywhere.box == pytest.approx((45, 85, 55, 95))


def _back_or_canal() -> FixedBoxes:
    """Boxes the fat of the back on the midline, 20 mm in front of its skin and further from every
    other edge (0.95), and a canal 70 mm in front of the skin (0.7)."""
    return FixedBoxes([(95.0, 161.0, 105.0, 171.0), (95.0, 125.0, 105.0, 135.0)], [0.95, 0.7])


def test_a_box_in_the_back_under_the_skin_is_not_the_canal():
    """Deep enough under the skin by straight distance (the lumbar back is wide), but too close to
    the skin of the back for the canal: seen on a thin volunteer's Dixon water image, graded D."""
    from stages.detector import BACK_DEPTH_MM, SKIN_DEPTH_MM, detect
    from stages.profiles import quick

    config = quick().configs.detector
    image = np.zeros((200, 200), np.float32)
    image[20:180, 10:190] = 1.0  # anterior up: the skin of the back is row 180
    spacing = (config.pixel_mm, config.pixel_mm)
    assert SKIN_DEPTH_MM <= (180 - 166) * config.pixel_mm < BACK_DEPTH_MM
    found, = detect(_back_or_canal(), [image], [spacing], config)
    assert found.box == pytest.approx((95, 125, 105, 135)) and found.score == pytest.approx(0.7)


def test_operating_threshold_keeps_05_for_a_sure_detector_and_lowers_it_for_an_unsure_one():
    from stages.detector import THRESHOLD_GRID, operating_threshold

    ious = [0.8] * 18 + [0.2] * 2  # 18 slices where the top box is right, 2 where it is wrong
    assert operating_threshold([0.95] * 18 + [0.6, 0.2], ious) == 0.5  # sure of its right boxes: as before
    # Right boxes at 0.35, wrong ones at 0.1: every threshold from 0.15 to 0.35 keeps all right and no wrong
    # ones; the highest of them.
    assert operating_threshold([0.35] * 18 + [0.1, 0.1], ious) == 0.35
    # Lowering that would keep a wrong box for every two right ones or fewer does not pay (a wrong box costs 2).
    assert operating_threshold([0.3] * 10 + [0.9] * 2 + [0.3] * 6, [0.8] * 12 + [0.1] * 6) == 0.5
    assert operating_threshold([0.3] * 13 + [0.3] * 6, [0.8] * 13 + [0.1] * 6) == 0.3
    assert operating_threshold([], []) == 0.5 == max(THRESHOLD_GRID)


def test_unsure_detector_warning_names_the_suggested_threshold():
    from grading.cli.train import unsure_detector_warning

    unsure = {"val_right_box_median_score": 0.47, "val_suggested_box_threshold": 0.4}
    warning = unsure_detector_warning("final", unsure)
    assert "final detector" in warning and "0.47" in warning and "--box-threshold 0.4" in warning
    sure = {"val_right_box_median_score": 0.93, "val_suggested_box_threshold": 0.5}
    assert unsure_detector_warning("final", sure) == ""
    assert unsure_detector_warning("final", {"val_suggested_box_threshold": 0.5}) == ""  # no right box: nothing to say
    assert unsure_detector_warning("final", {}) == ""  # a run without a detector


def test_a_stage_trains_the_same_whichever_stages_trained_before_it(tmp_path):
    """The shared run (detector, segmenter, locator) and a locator-only run must agree: each
    stage's model is initialised from its own seed, not from what earlier stages left."""
    from stages.cross_validation import train_stages

    records = make_records(n_patients=4, per_patient=4)
    train, val = records[:12], records[12:]
    alone, _ = train_stages(train, val, CVRequest(stages=("level",), profile=smoke()), tmp_path / "a", progress=False)
    after, _ = train_stages(train, val, CVRequest(stages=("grade", "level"), profile=smoke()), tmp_path / "b",
                            progress=False)
    for k, v in alone["level"].state_dict().items():
        assert torch.equal(v, after["level"].state_dict()[k]), k


def test_group_norm_backbone_normalises_alike_in_training_and_use_and_its_bundle_says_so(tmp_path):
    """A from-scratch backbone with GroupNorm keeps no running statistics: its features on a slice
    are the same in training and in use (BatchNorm's are not), and its bundle records the norm, so
    the same weights read as a BatchNorm detector are refused."""
    profile = smoke()
    configs = replace(profile.configs, detector=replace(profile.configs.detector, backbone_norm="group"))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    features = {}
    for norm, cfg in (("group", configs), ("batch", profile.configs)):
        body = build_model("detector", cfg).backbone.body
        torch.manual_seed(0)
        with torch.no_grad():
            training, use = body.train()(x)["3"], body.eval()(x)["3"]
        features[norm] = torch.allclose(training, use, atol=1e-5)
    assert features == {"group": True, "batch": False}
    save_bundle(tmp_path, {"detector": build_model("detector", configs)}, configs, {})
    assert load_bundle(tmp_path)[1].detector.backbone_norm == "group"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["configs"]["detector"]["backbone_norm"] = "batch"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="weights do not fit"):
        load_bundle(tmp_path)
    with pytest.raises(ValueError, match="backbone_norm 'layer'"):
        build_model("detector", replace(configs, detector=replace(configs.detector, backbone_norm="layer")))


def test_detector_crops_far_from_the_box_carry_no_box():
    """A crop that misses the canal on both axes is background, not a box with negative size
    (the two negative overlaps once multiplied to a positive 'inside' share)."""
    from stages.datasets import DetectionData
    from stages.detector import DetectorConfig

    config = DetectorConfig(pixel_mm=1.0, train_crop=32)
    record = SliceRecord("c", "p", np.zeros((128, 128), np.float32), (1.0, 1.0), (90.0, 90.0, 110.0, 110.0),
                         "rootlet", "A")
    data = DetectionData([record], config, crop=True)
    data._window = lambda shape, box: (0, 0)  # the top-left corner: box beyond it on both axes
    image, _, target = data[0]
    assert image.shape == (32, 32)
    assert target["boxes"].shape == (0, 4)
    data._window = lambda shape, box: (85, 85)  # the canal inside the crop
    _, _, target = data[0]
    assert target["boxes"].tolist() == [[5.0, 5.0, 25.0, 25.0]]


def test_channels_last_trains_the_same_model_and_returns_it_contiguous():
    """The layout changes how the CPU walks memory, not the arithmetic: after an epoch the
    weights agree with a default-layout run to float rounding, and come back contiguous (for
    safetensors and for inference)."""
    records = make_records(n_patients=4, per_patient=4)
    configs, settings = smoke().configs, replace(smoke().settings["grade"], epochs=2)
    trained = []
    for layout in (False, True):
        seed_everything(0)
        unit, train_data, val_data = stage_training("grade", configs, records[:12], records[12:])
        fit(replace(unit, channels_last=layout), train_data, val_data, settings, progress=False)
        trained.append(unit.model.state_dict())
    default, channels_last = trained
    for name, value in default.items():
        assert channels_last[name].is_contiguous(), name
        torch.testing.assert_close(channels_last[name], value, rtol=1e-3, atol=1e-4, msg=name)
    assert stage_training("grade", configs, records, records)[0].channels_last  # the VGGs train this way


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_normalise_intensity_maps_the_percentiles_to_zero_and_one(dtype):
    rng = np.random.default_rng(3)
    pixels = (rng.random((300, 300)) * 1000 + 100).astype(dtype)
    before = pixels.copy()
    prep = Preprocessing()
    out = normalise_intensity(pixels, prep)
    low, high = np.percentile(pixels[::4, ::4].astype(np.float64), [prep.low_percentile, prep.high_percentile])
    expected = np.clip((pixels.astype(np.float64) - low) / (high - low), 0.0, prep.clip)
    assert out.dtype == np.float32 and out.shape == pixels.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out.min() == 0.0 and 0.99 < np.percentile(out, prep.high_percentile) < 1.01
    np.testing.assert_array_equal(pixels, before)  # the caller's slice is left as it was
