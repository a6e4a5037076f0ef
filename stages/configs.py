"""Everything that defines the four stages' models, inputs and training data, as dataclasses:
stored whole in every bundle's manifest (and read back from it). Plain data, importable
without any training-only library."""
from __future__ import annotations

from dataclasses import dataclass, field

from stages.detector import DetectorConfig
from stages.preprocessing import Preprocessing
from stages.segmenters import SegmenterConfig
from stages.synth import SynthConfig
from stages.vgg import VGGConfig
from stages.vocabulary import COLUMN_CLASSES, GRADES, LEVELS


@dataclass(frozen=True)
class PatchConfig:
    size: int = 64  # patch side, pixels
    margin: float = 0.25  # around the box, fraction of its longer side, each side
    context: float = 0.2  # extra crop kept for augmentation, fraction of ``size`` each side


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.18)
    translate: float = 0.06  # fraction of the image side
    flip_p: float = 0.5
    elastic_p: float = 0.3  # smooth deformation of the anatomy (SynthSeg deforms its label maps too)
    noise_std: tuple[float, float] = (0.01, 0.05)  # zero-mean Gaussian, fraction of the intensity range
    gamma: tuple[float, float] = (0.7, 1.4)  # on stored images; rendered ones draw their own
    p: float = 0.8


STAGES = ("detector", "level", "grade", "segmenter", "locator")


@dataclass(frozen=True)
class LocatorConfig:
    """The sagittal level locator: a U-Net labelling each pixel of a mid-sagittal slice as
    vertebral body, disc, sacrum or background, at a fixed pixel size."""

    network: SegmenterConfig = field(default_factory=lambda: SegmenterConfig("unet", base_width=8, depth=4,
                                                                             out_channels=len(COLUMN_CLASSES)))
    pixel_mm: float = 1.5  # a lumbar body is ~18 px, a disc ~6
    max_side: int = 256
    train_crop: int = 160
    slices: int = 3  # the middle sagittal slices it reads at inference (scoliosis moves levels between them)


@dataclass(frozen=True)
class StageConfigs:
    """Everything that defines the four models and their inputs (stored in bundles)."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    level: VGGConfig = field(default_factory=lambda: VGGConfig(num_outputs=1))
    grade: VGGConfig = field(default_factory=lambda: VGGConfig(num_outputs=4))
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    classifier_patch: PatchConfig = field(default_factory=PatchConfig)
    segmenter_patch: PatchConfig = field(default_factory=lambda: PatchConfig(size=96))
    segmenter_loss: str = "bce_dice"
    locator: LocatorConfig = field(default_factory=LocatorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    synth: "StageSynth" = field(default_factory=lambda: StageSynth())


@dataclass(frozen=True)
class StageSynth:
    """Randomised contrast per stage (training only; applied to slices that have label maps).

    The detector and segmenter learn shape and context from any contrast. The classifiers
    read rootlets against CSF (the Schizas grade) and cord against CSF: their renders keep
    those pairs apart (label values of grade-phantom's vocabulary: CSF 32, rootlets 33,
    cord 34, conus 35) and they see fewer of them. The grade classifier also sees a share of
    sacs whose rootlets a coarse series would not resolve (CSF and rootlets averaged in place):
    without them it learns "A = rootlets I can see" and grades a healthy real sac on a Dixon or
    abdominal series C or D (docs/REAL_GRADES.md).
    """

    detector: SynthConfig = field(default_factory=lambda: SynthConfig(probability=0.5))
    segmenter: SynthConfig = field(default_factory=lambda: SynthConfig(probability=0.5))
    level: SynthConfig = field(default_factory=lambda: SynthConfig(
        probability=0.3, contrast_pairs=((32, 33), (32, 34), (32, 35)), distractors=(0, 0)))
    grade: SynthConfig = field(default_factory=lambda: SynthConfig(
        probability=0.3, contrast_pairs=((32, 33), (32, 34), (32, 35)), distractors=(0, 0),
        unresolved_probability=0.3, unresolved_labels=(32, 33)))
    locator: SynthConfig = field(default_factory=lambda: SynthConfig(probability=0.5))


LABEL_MAPS = {"detector": list(("background", "canal")), "level": list(LEVELS), "grade": list(GRADES),
              "segmenter": ["background", "dural_sac"], "locator": list(COLUMN_CLASSES)}
