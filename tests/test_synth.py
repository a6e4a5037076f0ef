"""Randomised contrast from label maps: every label its own intensity, pairs kept apart, corruptions bounded."""
from __future__ import annotations

import numpy as np
import torch

from stages.datasets import PatchCollate
from stages.synth import SynthConfig, render_random

PLAIN = SynthConfig(texture=(0.0, 0.0), distractors=(0, 0), blur_px=(0.0, 0.0), downsample=(1.0, 1.0), bias=0.0,
                    gamma_sd=0.0, noise=(0.0, 0.0), invert_probability=0.0)


def _stripes(batch: int = 6, size: int = 48, n_labels: int = 6) -> torch.Tensor:
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    for k in range(1, n_labels):
        labels[:, :, k * size // n_labels:(k + 1) * size // n_labels] = k
    return labels


def test_each_label_is_one_intensity_drawn_afresh_per_sample():
    torch.manual_seed(0)
    labels = _stripes()
    images = render_random(labels, PLAIN)
    assert images.shape == labels.shape and 0 <= float(images.min()) and float(images.max()) <= 1
    for b in range(len(images)):
        values = [images[b][labels[b] == k] for k in range(6)]
        assert all(float(v.std()) < 1e-5 for v in values)  # uniform within a label when uncorrupted
    # The same label differs between samples: contrast is drawn per sample, not learned from one.
    means = torch.stack([images[:, :, 30][:, 0] for _ in range(1)])
    assert float(means.std()) > 0.05


def test_background_stays_dark_and_inversion_spares_it():
    torch.manual_seed(1)
    labels = _stripes(batch=32)
    config = SynthConfig(texture=(0.0, 0.0), distractors=(0, 0), blur_px=(0.0, 0.0), downsample=(1.0, 1.0), bias=0.0,
                         gamma_sd=0.0, noise=(0.0, 0.0), invert_probability=1.0)
    images = render_random(labels, config)
    background = images[labels == 0]
    assert float(background.max()) < 0.1 + 1e-6  # air stays black, as on a real scan
    inverted = render_random(labels, PLAIN.__class__(**{**PLAIN.__dict__, "invert_probability": 1.0}))
    assert float(inverted[labels == 0].max()) < 0.1


def test_contrast_pairs_are_kept_apart():
    torch.manual_seed(2)
    labels = _stripes(batch=200)
    config = SynthConfig(**{**PLAIN.__dict__, "contrast_pairs": ((2, 3),), "min_contrast": 0.3})
    images = render_random(labels, config)
    a = images[:, 0, 20]  # column inside label 2 (columns 16-23)
    b = images[:, 0, 28]  # label 3
    assert float((a - b).abs().min()) >= 0.3 - 1e-4
    unconstrained = render_random(labels, PLAIN)
    assert float((unconstrained[:, 0, 20] - unconstrained[:, 0, 28]).abs().min()) < 0.3


def test_corruptions_change_the_image_but_keep_the_labels_readable():
    torch.manual_seed(3)
    labels = _stripes(batch=8, size=64)
    images = render_random(labels, SynthConfig())
    plain = render_random(labels, PLAIN)
    assert float((images - plain).abs().mean()) > 0.02
    # Despite blur, bias, gamma and noise, label means still separate the labels in most samples.
    for b in range(8):
        means = np.array([float(images[b][labels[b] == k].mean()) for k in range(6)])
        assert np.ptp(means) > 0.1


def test_patch_collate_renders_only_samples_with_label_maps():
    torch.manual_seed(4)
    labels = _stripes(batch=1, size=32)[0].numpy().astype(np.uint8)
    image = torch.full((1, 32, 32), 0.5)
    batch = [(image.clone(), torch.tensor(0), labels), (image.clone(), torch.tensor(1), None)]
    x, y = PatchCollate(SynthConfig(probability=1.0))(batch)
    assert x.shape == (2, 1, 32, 32) and y.tolist() == [0, 1]
    assert not torch.allclose(x[0], image)  # rendered from its label map
    assert torch.equal(x[1], image)  # no label map: the stored image, untouched
