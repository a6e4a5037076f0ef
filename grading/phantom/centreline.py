"""The canal's centreline in patient millimetres (DICOM LPS) and the frame that travels along it.

Arc length ``s`` runs caudally from the top of T10. At each ``s`` the local frame is
``U`` (towards the patient's left), ``V`` (posterior) and ``W = U x V`` (cranial, along the
curve). The spine-frame label volume is indexed by (s, v, u): a section of it at ``s`` is the
anatomy in the plane through ``C(s)`` perpendicular to the curve. Lordosis, the sacral curve and
scoliosis bend the curve; the patient's roll rotates everything about the table axis.

:meth:`Centreline.locate` inverts the map: for points anywhere in a slice it finds (s, u, v), so
an axial, angled or sagittal plane can be cut from the same anatomy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from grading.phantom.patient import Patient

STEP_MM = 0.25


@dataclass
class Centreline:
    s: np.ndarray  # (n,) arc length samples
    points: np.ndarray  # (n, 3) C(s), LPS mm
    u: np.ndarray  # (n, 3) unit vectors
    v: np.ndarray
    w: np.ndarray

    def at(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """C, U, V, W interpolated at arc lengths ``s`` (any shape); each (..., 3)."""
        return self._interpolate(s, (self.points, self.u, self.v, self.w))

    def _interpolate(self, s: np.ndarray | float, tables: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """``tables`` (each (n, d), sampled at ``self.s``) interpolated linearly at ``s``."""
        s = np.asarray(s, float)
        k = np.clip((s - self.s[0]) / STEP_MM, 0, len(self.s) - 1.001)
        i = np.floor(k).astype(int)
        f = (k - i)[..., None]
        return tuple(table[i] + (table[i + 1] - table[i]) * f for table in tables)

    def locate(self, points: np.ndarray, guess: float | None = None,
               iterations: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, u, v) of LPS ``points`` (..., 3): the section through each point and its place in it.

        Newton's method on f(s) = (P - C(s)) . W(s), valid within the curve's radius of curvature
        (~100 mm or more here), which covers everything the spine frame holds. It starts from the
        tangent line at ``guess`` (a plane crossing the spine there: exact for a straight spine),
        else from the closest of the centreline samples every 5 mm.
        """
        shape = points.shape[:-1]
        p = points.reshape(-1, 3).astype(float)
        if guess is not None:
            c0, _, _, w0 = self.at(guess)
            s = np.clip(guess - (p - c0) @ w0, self.s[0], self.s[-1])
        else:
            coarse = slice(None, None, int(5 / STEP_MM))
            cs, cp, cw = self.s[coarse], self.points[coarse], self.w[coarse]
            along = np.einsum("nkd,kd->nk", p[:, None, :] - cp[None], cw)
            dist = np.linalg.norm(p[:, None, :] - cp[None], axis=-1)
            s = cs[np.argmin(np.abs(along) + 0.25 * dist, axis=1)].astype(float)
        dw = np.gradient(self.w, STEP_MM, axis=0)
        for _ in range(iterations):
            c, w = self._interpolate(s, (self.points, self.w))
            k = np.clip((s - self.s[0]) / STEP_MM, 0, len(self.s) - 1).astype(int)
            d = p - c
            f = np.einsum("nd,nd->n", d, w)
            slope = 1.0 + np.einsum("nd,nd->n", d, dw[k])
            s = np.clip(s - f / np.where(np.abs(slope) < 0.2, 0.2, slope), self.s[0], self.s[-1])
        c, u, v, _ = self.at(s)
        d = p - c
        return (s.reshape(shape), np.einsum("nd,nd->n", d, u).reshape(shape),
                np.einsum("nd,nd->n", d, v).reshape(shape))


def _angle_profile(patient: Patient) -> tuple[PchipInterpolator, PchipInterpolator]:
    """Sagittal tilt theta(s) of the caudal tangent towards posterior, and the coronal angle phi(s)."""
    c = patient.curvature
    lumbar = [v for v in patient.vertebrae if v.region == "L"]
    lordosis, slope = np.deg2rad(c.lordosis_deg), np.deg2rad(c.sacral_slope_deg)
    knots_s = [0.0, lumbar[0].start]
    knots_t = [slope - lordosis - np.deg2rad(8), slope - lordosis]
    # Two thirds of the lordosis sits between L4 and S1.
    n = len(lumbar)
    for i, v in enumerate(lumbar[1:], start=1):
        share = (i / n) ** 1.6
        knots_s.append(v.start)
        knots_t.append(slope - lordosis * (1 - share))
    sac = patient.sacrum
    knots_s += [sac.start, (sac.start + sac.end) / 2, sac.end]
    kyphosis = np.deg2rad(c.sacral_kyphosis_deg)
    knots_t += [slope, slope - 0.35 * kyphosis, slope - kyphosis]
    theta = PchipInterpolator(knots_s, knots_t)
    apex, cobb = c.scoliosis_apex, np.deg2rad(c.scoliosis_deg)
    span = 90.0
    grid = np.linspace(0, sac.end, 40)
    phi_values = 0.5 * cobb * np.sin(np.clip((grid - apex) / span, -1, 1) * np.pi / 2)
    return theta, PchipInterpolator(grid, phi_values)


def build_centreline(patient: Patient, anchor: tuple[float, float, float] = (0.0, 0.0, 0.0),
                     anchor_s: float | None = None) -> Centreline:
    """The curve through ``anchor`` (LPS mm) at arc length ``anchor_s`` (default: the middle of
    the lumbar spine), rolled by the patient's roll about the table (z) axis."""
    theta, phi = _angle_profile(patient)
    s = np.arange(0.0, patient.length + STEP_MM, STEP_MM)
    th, ph = theta(s), phi(s)
    tangent = np.stack([np.sin(ph), np.sin(th) * np.cos(ph), -np.cos(th) * np.cos(ph)], axis=1)  # caudal
    points = np.concatenate([[[0.0, 0.0, 0.0]], np.cumsum((tangent[1:] + tangent[:-1]) / 2 * STEP_MM, axis=0)])
    w = -tangent
    posterior = np.array([0.0, 1.0, 0.0])
    v = posterior - (w @ posterior)[:, None] * w
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    u = np.cross(v, w)
    roll = np.deg2rad(patient.habitus.roll_deg)
    rot = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    points, u, v, w = (a @ rot.T for a in (points, u, v, w))
    if anchor_s is None:
        lumbar = [vb for vb in patient.vertebrae if vb.region == "L"]
        anchor_s = (lumbar[0].start + lumbar[-1].end) / 2
    k = int(round(anchor_s / STEP_MM))
    points = points - points[k] + np.asarray(anchor, float)
    return Centreline(s, points, u, v, w)
