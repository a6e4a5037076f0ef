"""Randomised contrast from label maps: every label its own intensity, pairs kept apart, corruptions bounded;
rootlets below a coarse series' resolution averaged into the sac."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.datasets import PatchCollate
from stages.synth import SynthConfig, render_random, unresolve, unresolve_share

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


def _sac_with_rootlets(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright 'CSF' disc (label 2) holding dark 'rootlet' dots (label 3), in grey tissue (label 1)."""
    labels = torch.ones(1, size, size, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels[0][(yy - 24) ** 2 + (xx - 24) ** 2 <= 14 ** 2] = 2
    for cy, cx in ((18, 20), (22, 30), (28, 22), (30, 30), (20, 26)):
        labels[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 2] = 3
    image = torch.where(labels == 2, 1.0, torch.where(labels == 3, 0.2, 0.4)).float()
    return image, labels


def test_unresolved_rootlets_leave_the_sac_bright_and_the_rest_untouched():
    image, labels = _sac_with_rootlets()
    out = unresolve(image, labels, (2, 3), sigma=3.0)
    sac = (labels == 2) | (labels == 3)
    assert torch.equal(out[~sac], image[~sac])  # tissue outside the sac is not blurred into it
    inside = out[sac]
    # The dots are gone (the sac is nearly flat) and the sac keeps its CSF-rich mean: bright, not grey.
    assert float(inside.std()) < 0.5 * float(image[sac].std())
    assert float(inside.mean()) == pytest.approx(float(image[sac].mean()), abs=0.03)
    assert float(inside.min()) > 0.6


def test_unresolve_share_draws_its_samples_and_can_be_off():
    image, labels = _sac_with_rootlets()
    images, maps = image.repeat(64, 1, 1), labels.repeat(64, 1, 1)
    off = SynthConfig(unresolved_probability=0.0, unresolved_labels=(2, 3))
    assert torch.equal(unresolve_share(images, maps, off), images)
    half = SynthConfig(unresolved_probability=0.5, unresolved_labels=(2, 3))
    out = unresolve_share(images, maps, half, torch.Generator().manual_seed(0))
    changed = (out - images).abs().flatten(1).amax(1) > 1e-4
    assert 16 < int(changed.sum()) < 48  # about half the batch
    assert torch.equal(images, image.repeat(64, 1, 1))  # the input batch is not modified in place


def test_patch_collate_unresolves_stored_images_that_have_label_maps():
    image, labels = _sac_with_rootlets()
    batch = [(image.clone(), torch.tensor(0), labels[0].numpy().astype(np.uint8)),  # (1, H, W) items
             (image.clone(), torch.tensor(1), None)]
    config = SynthConfig(probability=0.0, unresolved_probability=1.0, unresolved_labels=(2, 3))
    x, _ = PatchCollate(config)(batch)
    assert not torch.allclose(x[0], image)  # not re-rendered (probability 0), but its rootlets averaged away
    assert float(x[0][labels == 2].min()) > 0.6  # still a CSF-bright sac
    assert torch.equal(x[1], image)  # no label map: untouched
