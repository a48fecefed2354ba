"""A focused linear anti-scatter grid: lead lamellae of thickness `strip` every `period` (1 / lines per
cm), interspace filled with a low-attenuation material, of height h = ratio x (period - strip), the
lamellae tilted so that each plane contains the focal line at `focus` (the source, for a grid used at its
focal distance). Lamellae lie in planes of constant detector column: a photon's drift across them is its
direction's tangent in the column direction, relative to the lamella it meets.

A photon crossing the grid at relative tangent tan_rel drifts D = h |tan_rel| across the lamellae along a
straight path of length L = h / cos(theta) (theta from the grid's normal). If it enters at x0 (uniform
over one period), the share of its path inside lead is the share of [x0, x0 + D] covered by lamellae,
so its transmission is exp(-L (mu_gap + (mu_lead - mu_gap) lead(x0) / D)); the mean over x0 is taken
exactly, piece by piece (lead(x0) is piecewise linear in x0). D = 0 (a primary ray of a focused grid)
gives the familiar (1 - strip / period) exp(-mu_gap h) + (strip / period) exp(-mu_lead h). Lead
penetration and the interspace's attenuation are both kept; photons scattered inside the grid are
counted as removed (total attenuation).

Attenuation coefficients come from xraylib through `physics.tables.grid_coefficients` (never typed in).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from pipelines.physics.units import MM_PER_CM

LAMELLA = "Pb"  # the lamellae's element


@dataclass(frozen=True)
class Grid:
    """A focused linear grid. Defaults: a general-purpose 10:1, 40 lines/cm grid with aluminium
    interspace (a vendor's data sheet: 10:1, 40 lines/cm, aluminium spacers, focused); the lamella
    thickness, which vendors seldom state, is 36 um of lead (primary transmission ~0.72 at 90 kV)."""

    ratio: float = 10.0
    lines_per_cm: float = 40.0
    strip_mm: float = 0.036
    interspace: str = "Al"  # an element symbol or a NIST compound name (xraylib)

    def __post_init__(self):
        if self.ratio <= 0 or self.lines_per_cm <= 0 or self.strip_mm <= 0:
            raise ValueError(f"a grid needs a positive ratio, line density and lamella thickness: {self}")
        if self.strip_mm >= self.period_mm:
            raise ValueError(f"lamellae of {self.strip_mm} mm do not fit {self.lines_per_cm} lines per cm")

    @property
    def period_mm(self) -> float:
        return MM_PER_CM / self.lines_per_cm

    @property
    def height_mm(self) -> float:
        return self.ratio * (self.period_mm - self.strip_mm)

    def primary_transmission(self, lead_mu: np.ndarray, gap_mu: np.ndarray) -> np.ndarray:
        """Transmission of rays from the focus (no drift across the lamellae), given the lead's and the
        interspace's attenuation per mm at each energy (`tables.grid_coefficients`)."""
        h, share = self.height_mm, self.strip_mm / self.period_mm
        return (1.0 - share) * np.exp(-gap_mu * h) + share * np.exp(-lead_mu * h)

    def transmission(self, tan_rel: np.ndarray, secant: np.ndarray, lead_mu: np.ndarray,
                     gap_mu: np.ndarray) -> np.ndarray:
        """Mean transmission of photons at relative tangent `tan_rel` across the lamellae and path secant
        1 / cos(theta), with the lead's and interspace's attenuation per mm, arrays of one shape."""
        arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (tan_rel, secant, lead_mu, gap_mu)))
        h = self.height_mm
        out = [lamella_transmission(h * abs(t), h * s, m, g, self.period_mm, self.strip_mm)
               for t, s, m, g in zip(*(a.ravel() for a in arrays))]
        return np.array(out).reshape(arrays[0].shape)


@numba.njit(cache=True)
def _lead_in(a: float, b: float, period: float, strip: float) -> float:
    """Length of [a, b] (0 <= a <= b < a + period, a < period) covered by lamellae [n period, n period + strip)."""
    covered = 0.0
    for start in (0.0, period):
        lo, hi = max(a, start), min(b, start + strip)
        if hi > lo:
            covered += hi - lo
    return covered


@numba.njit(cache=True)
def lamella_transmission(drift: float, path: float, mu_lead: float, mu_gap: float, period: float,
                         strip: float) -> float:
    """Mean transmission over entry positions of a straight path of length `path` that drifts `drift`
    (>= 0) across lamellae of thickness `strip` every `period` (all lengths in one unit, mu per that unit)."""
    if drift <= 0.0:
        share = strip / period
        return (1.0 - share) * np.exp(-mu_gap * path) + share * np.exp(-mu_lead * path)
    whole = np.floor(drift / period)
    rest = drift - whole * period
    base = whole * strip  # lead on the whole periods crossed
    # lead(x0) = base + lead on [x0, x0 + rest]: linear between these entry positions
    cuts = np.array([0.0, strip, strip - rest, period - rest, period + strip - rest, period])
    cuts = np.sort(np.minimum(np.maximum(cuts, 0.0), period))
    per_lead = path * (mu_lead - mu_gap) / drift  # attenuation per unit of lead along the drift
    total = 0.0
    for k in range(len(cuts) - 1):
        a, b = cuts[k], cuts[k + 1]
        if b - a <= 0.0:
            continue
        ea = per_lead * (base + _lead_in(a, a + rest, period, strip))
        eb = per_lead * (base + _lead_in(b, b + rest, period, strip))
        if abs(eb - ea) < 1e-12:
            total += (b - a) * np.exp(-ea)
        else:  # the mean of exp(-e) with e linear over [a, b]
            total += (b - a) * (np.exp(-ea) - np.exp(-eb)) / (eb - ea)
    return total / period * np.exp(-mu_gap * path)
