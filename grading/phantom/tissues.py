"""The synthetic anatomy's label vocabulary and each tissue's MR properties.

Every structure has its own label value, as SynthSeg recommends: the randomised renderer gives
each label its own intensity, so a model never learns that two neighbouring tissues must look
alike. The sequence presets compute signal from the tissue properties instead (proton density,
T1, T2 in ms at 1.5 T, fat fraction), so T2 TSE, T1, Dixon and fat-suppressed images of one
patient are consistent with each other. Values are textbook figures (Stanisz et al., MRM 2005;
de Bazelaire et al., Radiology 2004) rounded, with per-patient spread added by the presets.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0  # air outside the body
    SKIN = 1
    SUBCUTANEOUS_FAT = 2
    ABDOMINAL_WALL = 3
    VISCERAL_FAT = 4  # mesenteric and retroperitoneal fat
    BOWEL_WALL = 5
    BOWEL_FLUID = 6
    BOWEL_SOLID = 7
    BOWEL_GAS = 8
    KIDNEY_CORTEX = 9
    KIDNEY_MEDULLA = 10
    LIVER = 11
    AORTA = 12
    IVC = 13
    PSOAS = 14
    QUADRATUS_LUMBORUM = 15
    ERECTOR_SPINAE = 16
    MULTIFIDUS = 17
    CORTEX = 18  # cortical bone of every vertebra
    MARROW = 19  # cancellous bone of the vertebral bodies
    ENDPLATE = 20
    ANNULUS = 21
    NUCLEUS = 22
    PEDICLE = 23
    LAMINA = 24
    SPINOUS_PROCESS = 25
    TRANSVERSE_PROCESS = 26
    SUPERIOR_ARTICULAR = 27
    INFERIOR_ARTICULAR = 28
    FACET_JOINT = 29
    LIGAMENTUM_FLAVUM = 30
    EPIDURAL_FAT = 31
    CSF = 32
    ROOTLETS = 33  # cauda equina
    CORD = 34
    CONUS = 35
    NERVE_ROOT = 36  # exiting root in the foramen
    SACRUM = 37
    ILIUM = 38
    GLUTEAL = 39  # gluteal muscles and iliacus
    INTERMUSCULAR_FAT = 40
    FASCIA = 41  # thoracolumbar fascia
    INTERSPINOUS_LIGAMENT = 42
    METAL = 43  # pedicle screws (post-operative patients)
    SPLEEN = 44
    LUNG = 45  # the lungs' posterior recesses, beside T11-T12


#: The dural sac's content: DSCA is the area inside the dura, whatever fills it.
SAC_LABELS = (Label.CSF, Label.ROOTLETS, Label.CORD, Label.CONUS)
#: What a rater boxes as "the canal": the sac and the epidural fat around it.
CANAL_LABELS = (*SAC_LABELS, Label.EPIDURAL_FAT)
BONE_LABELS = (Label.CORTEX, Label.MARROW, Label.ENDPLATE, Label.PEDICLE, Label.LAMINA, Label.SPINOUS_PROCESS,
               Label.TRANSVERSE_PROCESS, Label.SUPERIOR_ARTICULAR, Label.INFERIOR_ARTICULAR, Label.SACRUM,
               Label.ILIUM)
N_LABELS = len(Label)


@dataclass(frozen=True)
class Tissue:
    """MR properties of one tissue at 1.5 T."""

    pd: float  # proton density relative to water
    t1: float  # ms
    t2: float  # ms
    fat: float = 0.0  # fat fraction of the signal (Dixon, fat suppression)
    flow: bool = False  # flowing blood: a signal void on spin echo
    texture: float = 0.05  # relative amplitude of in-tissue heterogeneity
    septa: float = 0.0  # strength of the fat septa between muscle fascicles


TISSUES: dict[Label, Tissue] = {
    Label.BACKGROUND: Tissue(0.0, 1000, 10, texture=0.0),
    Label.SKIN: Tissue(0.65, 800, 45, fat=0.15),
    Label.SUBCUTANEOUS_FAT: Tissue(0.95, 290, 150, fat=0.95, texture=0.04),
    Label.ABDOMINAL_WALL: Tissue(0.72, 1100, 42, fat=0.05, septa=0.5),
    Label.VISCERAL_FAT: Tissue(0.92, 300, 140, fat=0.9, texture=0.08),
    Label.BOWEL_WALL: Tissue(0.75, 900, 60, texture=0.1),
    Label.BOWEL_FLUID: Tissue(0.95, 3000, 900, texture=0.12),
    Label.BOWEL_SOLID: Tissue(0.7, 700, 70, fat=0.2, texture=0.35),
    Label.BOWEL_GAS: Tissue(0.02, 1000, 10, texture=0.0),
    Label.KIDNEY_CORTEX: Tissue(0.85, 1000, 85),
    Label.KIDNEY_MEDULLA: Tissue(0.9, 1400, 120),
    Label.LIVER: Tissue(0.75, 580, 45, fat=0.04),
    Label.AORTA: Tissue(0.9, 1500, 250, flow=True, texture=0.0),
    Label.IVC: Tissue(0.9, 1500, 250, flow=True, texture=0.0),
    Label.PSOAS: Tissue(0.72, 1100, 42, fat=0.03, septa=0.3),
    Label.QUADRATUS_LUMBORUM: Tissue(0.72, 1100, 42, fat=0.05, septa=0.4),
    Label.ERECTOR_SPINAE: Tissue(0.72, 1100, 42, fat=0.08, septa=0.8),
    Label.MULTIFIDUS: Tissue(0.72, 1100, 42, fat=0.12, septa=1.0),
    Label.CORTEX: Tissue(0.06, 1000, 5, texture=0.0),
    Label.MARROW: Tissue(0.85, 550, 95, fat=0.55, texture=0.12),
    Label.ENDPLATE: Tissue(0.08, 1000, 8, texture=0.0),
    Label.ANNULUS: Tissue(0.65, 1000, 58, texture=0.08),
    Label.NUCLEUS: Tissue(0.9, 1200, 120, texture=0.08),
    Label.PEDICLE: Tissue(0.55, 550, 60, fat=0.4, texture=0.1),
    Label.LAMINA: Tissue(0.45, 550, 50, fat=0.4, texture=0.1),
    Label.SPINOUS_PROCESS: Tissue(0.5, 550, 55, fat=0.45, texture=0.1),
    Label.TRANSVERSE_PROCESS: Tissue(0.45, 550, 50, fat=0.4, texture=0.1),
    Label.SUPERIOR_ARTICULAR: Tissue(0.45, 550, 50, fat=0.35, texture=0.1),
    Label.INFERIOR_ARTICULAR: Tissue(0.45, 550, 50, fat=0.35, texture=0.1),
    Label.FACET_JOINT: Tissue(0.9, 2500, 300),
    Label.LIGAMENTUM_FLAVUM: Tissue(0.45, 900, 35),
    Label.EPIDURAL_FAT: Tissue(0.95, 290, 150, fat=0.95, texture=0.04),
    Label.CSF: Tissue(1.0, 4000, 2000, texture=0.01),
    Label.ROOTLETS: Tissue(0.7, 900, 75, texture=0.03),
    Label.CORD: Tissue(0.75, 850, 80, texture=0.03),
    Label.CONUS: Tissue(0.75, 850, 80, texture=0.03),
    Label.NERVE_ROOT: Tissue(0.72, 900, 80),
    Label.SACRUM: Tissue(0.8, 500, 80, fat=0.55, texture=0.12),
    Label.ILIUM: Tissue(0.8, 450, 80, fat=0.6, texture=0.12),
    Label.GLUTEAL: Tissue(0.72, 1100, 42, fat=0.06, septa=0.3),
    Label.INTERMUSCULAR_FAT: Tissue(0.95, 290, 150, fat=0.95, texture=0.05),
    Label.FASCIA: Tissue(0.4, 900, 25, texture=0.0),
    Label.INTERSPINOUS_LIGAMENT: Tissue(0.5, 800, 40, fat=0.2),
    Label.METAL: Tissue(0.0, 1000, 1, texture=0.0),
    Label.SPLEEN: Tissue(0.85, 1050, 80),
    # Air with vessels through it: little signal in any sequence, speckled by the vessels.
    Label.LUNG: Tissue(0.1, 1200, 30, texture=0.4),
}
