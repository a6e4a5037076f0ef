"""Training profiles: 'paper' (Won et al. 2025 epochs and schedule) and 'quick' (a CPU demo)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from stages.configs import LocatorConfig, PatchConfig, StageConfigs
from stages.detector import DetectorConfig
from stages.segmenters import SegmenterConfig
from stages.train_loop import TrainSettings
from stages.vgg import VGGConfig


@dataclass(frozen=True)
class Profile:
    name: str
    configs: StageConfigs
    settings: dict[str, TrainSettings] = field(default_factory=dict)
    detector_slices_per_patient: int | None = None  # draws per training patient and epoch
    # Epochs of the final model, the one a bundle grades studies with, where it trains longer
    # than the cross-validation folds (whose models only feed the out-of-fold predictions).
    final_epochs: dict[str, int] = field(default_factory=dict)


def quick(seed: int = 0) -> Profile:
    """Small models and short schedules that train on two CPU cores in minutes.

    Departs from the paper where CPU time forces it: lr 1e-3 for the patch models (1e-4 needs
    many more epochs), narrower VGG blocks and patches of 64 px, and a detector at 1.4 mm per
    pixel trained on 160-px crops with a 128-channel pyramid and a 256-wide box head (twice
    torchvision's training speed on two cores; scripts/bench_training.py). Its backbone, trained
    from scratch, normalises with GroupNorm: BatchNorm's running statistics, gathered over batches
    of eight crops half of which are random-contrast renders, fit neither kind of slice in use.
    Demo detectors, seeds 0 / 1 / 2, validation share boxed right / median score of the right
    boxes: BatchNorm 0.929 / 0.91, 0.732 / 0.46, 0.911 / 0.97; GroupNorm 0.964 / 0.98, 0.946 /
    0.98, 0.982 / 0.98 (docs/STAGES_BENCHMARK.md, "Stop 31").

    The grade VGG rescales each patch by its own percentiles (``input_norm="patch"``): 15-epoch
    grade models, 12 held-out phantom patients, seeds 0-2, mean accuracy T2 TSE 0.69 -> 0.83,
    random contrast 0.30 -> 0.45, coarse 2 mm 0.60 -> 0.75 (docs/REAL_GRADES.md). The level VGG
    too, so both classifiers read the same input: 3 epochs, seeds 0 and 1, 0.962 -> 0.972, 0.827 ->
    0.866, 0.954 -> 0.951 (within the seeds' spread).
    """
    configs = StageConfigs(
        detector=DetectorConfig(pixel_mm=1.4, max_side=288, train_crop=160, fpn_channels=128, representation_size=256,
                                backbone_norm="group"),
        level=VGGConfig((16, 32, 48, 64), num_outputs=1, input_norm="patch"),
        grade=VGGConfig((16, 32, 48, 64), num_outputs=4, input_norm="patch"),
        segmenter=SegmenterConfig("unet", base_width=12, depth=3),
        classifier_patch=PatchConfig(size=64),
        segmenter_patch=PatchConfig(size=64),
        segmenter_loss="bce_dice",
    )
    return Profile("quick", configs, {
        "detector": TrainSettings(epochs=12, batch_size=8, lr=3e-4, plateau_patience=2, balanced=False, seed=seed,
                                  max_val_items=120),
        "level": TrainSettings(epochs=8, batch_size=32, lr=1e-3, seed=seed),
        "grade": TrainSettings(epochs=12, batch_size=32, lr=1e-3, seed=seed),
        "segmenter": TrainSettings(epochs=12, batch_size=32, lr=1e-3, balanced=False, seed=seed),
        "locator": TrainSettings(epochs=40, batch_size=8, lr=2e-3, balanced=False, seed=seed, max_val_items=40,
                                 samples_per_epoch=320),
    }, detector_slices_per_patient=8)


def paper(seed: int = 0) -> Profile:
    """The paper's schedule: Adam 1e-4, 200 epochs (level) and 100 (grade), lr x0.5 on plateau."""
    configs = StageConfigs(
        detector=DetectorConfig(pixel_mm=0.8, max_side=512, train_crop=320),
        level=VGGConfig((64, 128, 256, 512), num_outputs=1, input_norm="patch"),
        grade=VGGConfig((64, 128, 256, 512), num_outputs=4, input_norm="patch"),
        segmenter=SegmenterConfig("unet", base_width=32, depth=4),
        classifier_patch=PatchConfig(size=128),
        segmenter_patch=PatchConfig(size=128),
        segmenter_loss="weighted_bce",
    )
    return Profile("paper", configs, {
        "detector": TrainSettings(epochs=30, batch_size=4, lr=1e-4, plateau_patience=5, balanced=False, seed=seed),
        "level": TrainSettings(epochs=200, batch_size=32, lr=1e-4, plateau_patience=10, seed=seed),
        "grade": TrainSettings(epochs=100, batch_size=32, lr=1e-4, plateau_patience=10, seed=seed),
        "segmenter": TrainSettings(epochs=100, batch_size=16, lr=1e-4, plateau_patience=10, balanced=False, seed=seed),
        "locator": TrainSettings(epochs=60, batch_size=8, lr=1e-4, plateau_patience=6, balanced=False, seed=seed),
    })


PROFILES = {"quick": quick, "paper": paper}


def demo(seed: int = 0) -> Profile:
    """The quick profile cut to fit grade-demo's 15 minutes on two cores: fewer epochs everywhere,
    and the detector on 128-px crops (1.4x the images per second of 160 px) along a cosine
    schedule. Still short of what real scans need: see the transfer profile."""
    base = quick(seed)
    # Level 5 epochs, not 3: a 3-epoch level model is often still calling many rootlet slices cord.
    # Final models, 12 held-out phantom patients (true boxes), accuracy with 3 -> 5 epochs for
    # training seeds 1 and 3 on the seed-1 demo cohort and 2 and 3 on seed 0's: 0.61 / 0.74 / 0.92 /
    # 0.91 -> 0.95 / 0.79 / 0.92 / 0.98 (the seed-1 grade-demo's fold models had called 40-90% of
    # their validation slices cord, and its bundle every held-out slice). About 35 s of grade-demo.
    shorter = {"detector": 10, "level": 5, "grade": 8, "segmenter": 8, "locator": 16}
    base = replace(base, configs=replace(base.configs, detector=replace(base.configs.detector, train_crop=128)))
    settings = {stage: replace(s, epochs=shorter[stage]) for stage, s in base.settings.items()}
    # The detector learns from scratch in 10 epochs only: lr 1e-3 with warm-up, down a cosine to
    # 5e-5 (the plateau rule never fires on so short a schedule), validated at the last epoch only
    # (the best in every cosine run). On the demo cohort's validation slices, IoU >= 0.5: 8 epochs
    # at a constant 3e-4 0.82; cosine 0.86 after 8 epochs, 0.87 after 11, 0.92 after 12
    # (docs/PERFORMANCE.md, "Demo detector schedule"). That one validation chooses nothing (there
    # is no other epoch), it only reports a score: 60 slices do, 12 s -> 6 s on two cores.
    settings["detector"] = replace(settings["detector"], lr=1e-3, schedule="cosine", warmup_steps=30,
                                   validate_from=10, max_val_items=60)
    # The classifiers' epochs end on a cosine too (with 5 grade epochs, macro-F1 over the 5 demo
    # folds 0.42 -> 0.51, level accuracy unchanged); the segmenter and locator, whose losses still
    # fall fast at the end, do worse or no better on it and keep the constant lr.
    for stage in ("level", "grade"):
        settings[stage] = replace(settings[stage], schedule="cosine", warmup_steps=10)
    # The locator's first epochs score near zero (validation Dice < 0.5 up to epoch 8 in every
    # demo run; validating them costs ~1 s each). 16 epochs, not 18, to keep grade-demo inside 15
    # minutes on a slow AVX2 host: held-out phantom studies (seed 78, 20 patients, five-vertebra
    # spines' lumbar slices, scripts/bench_levels.py) named right 94.1% (97.6% >= 1 mm from a
    # disc-body boundary) against 93.8% (98.3%) after 18 epochs, same cohort and seed; ~16 s less.
    settings["locator"] = replace(settings["locator"], validate_from=9)
    # The grade model in the bundle, the one that grades studies, trains 15 epochs; the fold models
    # (out-of-fold predictions for the agreement study only) 8, what 15 minutes allow now that the
    # VGGs train channels-last. On 12 held-out T2 TSE phantom patients with true boxes, accuracy /
    # macro-F1: 5 epochs 0.53 / 0.29 and 0.68 / 0.37 (seeds 0, 1); 10 epochs 0.66 / 0.44; 15
    # epochs 0.73 / 0.49 and 0.69 / 0.41; 20 epochs 0.72 / 0.51. Fold models 5 -> 8 epochs: grade
    # agreement A1-C1 62.5% -> 74.1% (macro-F1 39.5 -> 46.2), A2-C2 70.6% -> 66.8% (43.2 -> 49.4).
    return Profile("demo", base.configs, settings, detector_slices_per_patient=base.detector_slices_per_patient,
                   final_epochs={"grade": 15})


def smoke(seed: int = 0) -> Profile:
    """One epoch of tiny models: checks the plumbing in seconds; the models are useless."""
    configs = StageConfigs(
        detector=DetectorConfig(pixel_mm=1.0, max_side=64, train_crop=48, fpn_channels=16, representation_size=32,
                                rpn_pre_nms_top_n_train=50, rpn_post_nms_top_n_train=20),
        level=VGGConfig((4, 4, 8, 8), num_outputs=1, input_norm="patch"),
        grade=VGGConfig((4, 4, 8, 8), num_outputs=4, input_norm="patch"),
        segmenter=SegmenterConfig("unet", base_width=4, depth=2),
        classifier_patch=PatchConfig(size=32),
        segmenter_patch=PatchConfig(size=32),
        locator=LocatorConfig(SegmenterConfig("unet", base_width=4, depth=2, out_channels=4), pixel_mm=4.0, max_side=96,
                              train_crop=48),
    )
    one = TrainSettings(epochs=1, batch_size=4, lr=1e-3, seed=seed)
    return Profile("smoke", configs, {"detector": one, "level": one, "grade": one, "segmenter": one, "locator": one},
                   detector_slices_per_patient=2)


def transfer(seed: int = 0) -> Profile:
    """The quick models trained long enough to transfer to real scans: three times the
    detector's draws, more epochs for every stage (about an hour on two CPU cores)."""
    base = quick(seed)
    longer = {"detector": 24, "level": 12, "grade": 18, "segmenter": 18, "locator": 60}
    return Profile("transfer", base.configs,
                   {stage: replace(settings, epochs=longer[stage]) for stage, settings in base.settings.items()},
                   detector_slices_per_patient=12)


PROFILES.update(demo=demo, smoke=smoke, transfer=transfer)
