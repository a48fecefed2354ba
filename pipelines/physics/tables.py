"""Physics data, from the libraries made for it (the only module that calls them):

- tube spectra: spekpy (tungsten anode, kVp, anode angle; photons per cm^2 per mAs at 1 m, 0.5 keV
  bins), filtered here by Beer-Lambert through aluminium and copper;
- mass attenuation (total, with coherent scattering), NIST/ICRU compositions and densities: xraylib
  (`CS_Total_CP` and its NIST compound list; elements by symbol for alloys, whose density is the
  ideal mixture of the elements' densities);
- air's mass energy-absorption coefficient (for air kerma and half-value layers): spekpy's own NIST
  table (xraylib's `CS_Energy` differs from NIST's by up to 30 % below 40 keV, so it is not used);
- the detector: an energy-integrating scintillator (default CsI) of a given thickness, absorbing
  eta(E) = 1 - exp(-mu(E) t) of the photons reaching it and depositing their energy (K-fluorescence
  escape from the scintillator is neglected).

`Tables` integrates all of it over synthesis energy bins, weighting by each fine bin's detected
signal, so a bin's coefficients are exact in the thin-absorber limit and a one-line spectrum is exact.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np
import xraylib
from scipy.optimize import brentq

from pipelines.io.spectra import cached_spectrum
from pipelines.physics.grid import LAMELLA, Grid
from pipelines.physics.units import MM_PER_CM
from schemas.config import Alloy, MaterialAnchor

FINE_BIN_KEV = 0.5  # spekpy's spectrum resolution used everywhere before binning
SPECTRUM_DISTANCE_CM = 100.0  # spekpy's fluence is given at 1 m from the focal spot
# the anode heel: spekpy's spectra at these offsets from the central ray (degrees towards the cathode),
# between which a pixel's spectrum is interpolated linearly; denser on the anode side, where the heel
# bends (the signal interpolated this way is within 0.7 % of spekpy's own over +/- 6 deg, the default
# C-arm's detector; every 5 deg it was 3 % off at the anode edge)
HEEL_ANGLES_DEG = (-10.0, -7.5, -5.0, -2.5, 0.0, 5.0, 10.0)
# ... and at these thicknesses (g/cm^2) of the 0 HU anchor's material, whose hardening stands for all
HEEL_THICKNESS_G_CM2 = np.concatenate([np.linspace(0.0, 10.0, 41), np.linspace(10.5, 100.0, 180)])
HEEL_STEP_DEG = 2.5  # the uniform angle grid the heel tables are kept on (the spectra's angles lie on it)
HEEL_ATTENUATION_STEPS = 1024


# every whole kV of a drawn range at every heel angle stays in memory (a spectrum is ~5 kB): a stream's
# items draw kV at random, and a smaller cache re-read them from disk item after item
SPECTRA_IN_MEMORY = 2048


@functools.cache
def _spekpy_version() -> str:
    return version("spekpy")


@functools.lru_cache(maxsize=SPECTRA_IN_MEMORY)
def _tube(kv: int, anode_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    def compute():
        import spekpy  # ~2 s to import, ~0.6 s a spectrum: only where a spectrum is not cached yet

        spectrum = spekpy.Spek(kvp=float(kv), th=float(anode_angle_deg), dk=FINE_BIN_KEV)
        energies, fluence = spectrum.get_spectrum(diff=False)  # photons / cm^2 / mAs per bin, at 1 m
        keep = fluence > 0
        return np.asarray(energies[keep], dtype=np.float64), np.asarray(fluence[keep], dtype=np.float64)

    key = f"spekpy{_spekpy_version()}-kv{int(kv)}-th{float(anode_angle_deg):g}-dk{FINE_BIN_KEV:g}"
    return cached_spectrum(key, compute)


@functools.lru_cache(maxsize=SPECTRA_IN_MEMORY)
def _tube_off_axis(kv: int, anode_angle_deg: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """spekpy's spectrum `angle_deg` off the central ray in the anode-cathode plane (+ towards the
    cathode), without oblique filtration, at 1 m along that ray (the inverse square taken out)."""
    def compute():
        import spekpy

        x_cm = SPECTRUM_DISTANCE_CM * float(np.tan(np.deg2rad(angle_deg)))
        spectrum = spekpy.Spek(kvp=float(kv), th=float(anode_angle_deg), dk=FINE_BIN_KEV, x=x_cm, y=0.0,
                               z=SPECTRUM_DISTANCE_CM, obli=False)
        energies, fluence = spectrum.get_spectrum(diff=False)
        inverse_square = 1.0 / np.cos(np.deg2rad(angle_deg)) ** 2  # spekpy's fluence is at the off-axis point
        return np.asarray(energies, dtype=np.float64), np.asarray(fluence, dtype=np.float64) * inverse_square

    if angle_deg == 0.0:
        return _tube(kv, anode_angle_deg)
    key = f"spekpy{_spekpy_version()}-kv{int(kv)}-th{float(anode_angle_deg):g}-dk{FINE_BIN_KEV:g}-heel{angle_deg:g}"
    return cached_spectrum(key, compute)


def heel_ratios(kv: int, anode_angle_deg: float, energies: np.ndarray) -> np.ndarray:
    """(len(HEEL_ANGLES_DEG), E): each heel angle's spectrum over the central one, per fine bin of
    `energies` (1 where the central spectrum is empty)."""
    tube_energies, ratios = _heel_ratios(int(kv), float(anode_angle_deg))
    if np.array_equal(energies, tube_energies):
        return ratios  # the tube's own bins: computed once per (kV, anode angle)
    return _ratios_at(kv, anode_angle_deg, energies)


@functools.lru_cache(maxsize=SPECTRA_IN_MEMORY // len(HEEL_ANGLES_DEG))
def _heel_ratios(kv: int, anode_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    energies = _tube(kv, anode_angle_deg)[0]
    ratios = _ratios_at(kv, anode_angle_deg, energies)
    ratios.setflags(write=False)
    return energies, ratios


def _ratios_at(kv: int, anode_angle_deg: float, energies: np.ndarray) -> np.ndarray:
    centre = dict(zip(*_tube(kv, anode_angle_deg)))
    rows = []
    for angle in HEEL_ANGLES_DEG:
        off = dict(zip(*_tube_off_axis(kv, anode_angle_deg, angle)))
        rows.append([off.get(e, 0.0) / centre[e] if centre.get(e, 0.0) > 0 else 1.0 for e in energies])
    return np.asarray(rows)


def warm_tube_spectra(kv: tuple[int, int], anode_angle_deg: float, progress=None) -> int:
    """Compute (or find in the machine's cache) every whole-kV spectrum of a range, so that processes
    started later (DataLoader workers) read them instead of each computing them; returns how many."""
    kvs = range(int(kv[0]), int(kv[1]) + 1)
    for n, k in enumerate(kvs):
        for angle in HEEL_ANGLES_DEG:
            _tube_off_axis(k, float(anode_angle_deg), angle)
        if progress is not None and (n + 1) % 10 == 0:
            progress(f"tube spectra: {n + 1}/{len(kvs)}")
    return len(kvs)


def tube_spectrum(kv: int, anode_angle_deg: float, al_mm: float = 0.0, cu_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(energies keV, photons / cm^2 / mAs at 1 m per 0.5 keV bin) of a tungsten tube behind `al_mm`
    aluminium and `cu_mm` copper."""
    energies, fluence = _tube(int(kv), float(anode_angle_deg))
    return energies, fluence * filter_transmission(energies, al_mm, cu_mm)


def filter_transmission(energies: np.ndarray, al_mm: float, cu_mm: float) -> np.ndarray:
    out = np.ones_like(energies)
    for symbol, mm in (("Al", al_mm), ("Cu", cu_mm)):
        if mm > 0:
            out *= np.exp(-element_mu_rho(symbol, energies) * element_density(symbol) * mm / MM_PER_CM)
    return out


def element_density(symbol: str) -> float:
    return float(xraylib.ElementDensity(xraylib.SymbolToAtomicNumber(symbol)))


def element_mu_rho(symbol: str, energies: np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient (total) of an element, cm^2/g (xraylib; each energy grid's values
    looked up once per process: every view of a kV has the same fine grid)."""
    return _element_mu_rho(symbol, _grid_key(energies)).copy()


def _grid_key(energies: np.ndarray) -> bytes:
    return np.ascontiguousarray(np.atleast_1d(energies), dtype=np.float64).tobytes()


@functools.lru_cache(maxsize=256)
def _element_mu_rho(symbol: str, grid: bytes) -> np.ndarray:
    z = xraylib.SymbolToAtomicNumber(symbol)
    return np.array([xraylib.CS_Total(z, float(e)) for e in np.frombuffer(grid)])


@functools.lru_cache(maxsize=256)
def _compound_mu_rho(name: str, grid: bytes) -> np.ndarray:
    nist(name)
    return np.array([xraylib.CS_Total_CP(name, float(e)) for e in np.frombuffer(grid)])


def grid_coefficients(grid: Grid, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lead, interspace) linear attenuation coefficients (total) per mm of an anti-scatter grid."""
    energies = np.asarray(energies, dtype=np.float64)
    lead = element_mu_rho(LAMELLA, energies) * element_density(LAMELLA)
    if len(grid.interspace) <= 2 and grid.interspace[:1].isupper():  # an element symbol
        gap = element_mu_rho(grid.interspace, energies) * element_density(grid.interspace)
    else:
        gap = compound_mu_rho(grid.interspace, energies) * float(nist(grid.interspace)["density"])
    return lead / MM_PER_CM, gap / MM_PER_CM


def nist(name: str) -> dict:
    try:
        return xraylib.GetCompoundDataNISTByName(name)
    except ValueError:
        raise ValueError(f"{name!r} is not in xraylib's NIST compound list") from None


def compound_mu_rho(name: str, energies: np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient (total, with coherent scattering) of a NIST compound, cm^2/g (each
    energy grid's values looked up once per process)."""
    return _compound_mu_rho(name, _grid_key(energies)).copy()


@functools.lru_cache(maxsize=1)
def _spek_reference():
    import spekpy

    return spekpy.Spek(kvp=80.0, dk=FINE_BIN_KEV)


def air_muen_rho(energies: np.ndarray) -> np.ndarray:
    """Air's mass energy-absorption coefficient (cm^2/g), spekpy's NIST table."""
    return np.asarray(_spek_reference().muen_air_data.get_muen_over_rho_air(np.asarray(energies, dtype=np.float64)))


def alloy_mu_rho(alloy: Alloy, energies: np.ndarray) -> np.ndarray:
    return sum(f * element_mu_rho(symbol, energies) for symbol, f in alloy.mass_fractions.items())


def alloy_density(alloy: Alloy) -> float:
    """Ideal mixture of the elements' densities (xraylib): 1 / rho = sum w_i / rho_i."""
    return 1.0 / sum(f / element_density(symbol) for symbol, f in alloy.mass_fractions.items())


WATER = "Water, Liquid"


def _z_over_a(fractions: dict[int, float]) -> float:
    """Electrons per unit mass (mol/g) of a mixture: sum of mass fraction x Z / A (xraylib's atomic weights)."""
    return sum(w * z / xraylib.AtomicWeight(z) for z, w in fractions.items())


def _nist_z_over_a(name: str) -> float:
    d = nist(name)
    return _z_over_a(dict(zip(d["Elements"], d["massFractions"])))


@functools.lru_cache(maxsize=8)
def electron_ratios(materials: tuple[MaterialAnchor, ...], alloys: tuple[Alloy, ...]) -> np.ndarray:
    """(C,) each channel's electrons per gram over water's (Z/A over water's, from xraylib's compositions
    and atomic weights): a mass thickness (g/cm^2) times its ratio is the water thickness (cm) holding
    as many electrons -- as much Compton scattering -- in the tables' channel order (tissue, alloys)."""
    water = _nist_z_over_a(WATER)
    tissue = [_nist_z_over_a(m.nist) / water for m in materials]
    metal = [_z_over_a({xraylib.SymbolToAtomicNumber(sym): w for sym, w in a.mass_fractions.items()}) / water
             for a in alloys]
    out = np.array(tissue + metal, dtype=np.float32)
    out.setflags(write=False)
    return out


def material_densities(materials: list[MaterialAnchor]) -> np.ndarray:
    return np.array([float(nist(m.nist)["density"]) for m in materials])


def detector_response(material: str, thickness_mm: float, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(absorbed fraction eta(E), energy deposited per absorbed photon, keV) of a scintillator layer."""
    rho = float(nist(material)["density"])
    mu = compound_mu_rho(material, energies) * rho
    eta = 1.0 - np.exp(-mu * thickness_mm / MM_PER_CM)
    return eta, np.asarray(energies, dtype=np.float64).copy()


@dataclass(frozen=True)
class Tables:
    """Everything synthesis needs, on its energy bins: fluence (photons / cm^2 / mAs at 1 m), the
    channels' mass attenuation (C, E) cm^2/g, the detector's absorbed fraction and energy kept (keV)."""

    energies_kev: np.ndarray
    fluence: np.ndarray
    mu_rho: np.ndarray
    eta: np.ndarray
    kept_kev: np.ndarray
    channels: tuple[str, ...]
    # the anode heel: per angle (HEEL_ANGLES_DEG[0] to [-1] every HEEL_STEP_DEG) and attenuation
    # -ln(S/S_open) under the central spectrum (`heel_attenuation`, uniform, through the 0 HU anchor's
    # material), the quanta and the signal under that angle's spectrum over the central one's; None: no heel
    heel_attenuation: np.ndarray | None = None
    heel_quanta: np.ndarray | None = None
    heel_signal: np.ndarray | None = None
    # -ln(S/S_open) through WATER_CURVE_G_CM2 of the 0 HU anchor's material: its water-equivalent thickness
    water_attenuation: np.ndarray | None = None

    @functools.cached_property
    def heel_quanta_f32(self) -> np.ndarray:
        """`heel_quanta` as the heel kernel reads it (float32), converted once per tables."""
        return self.heel_quanta.astype(np.float32)

    @functools.cached_property
    def heel_signal_f32(self) -> np.ndarray:
        return self.heel_signal.astype(np.float32)

    @property
    def signal_weights(self) -> np.ndarray:
        """Expected deposited energy per unit of unattenuated fluence, per bin (keV)."""
        return self.fluence * self.eta * self.kept_kev


def channel_mu_rho(materials: list[MaterialAnchor], alloys: list[Alloy], energies: np.ndarray) -> np.ndarray:
    rows = [compound_mu_rho(m.nist, energies) for m in materials] + [alloy_mu_rho(a, energies) for a in alloys]
    return np.stack(rows)


@dataclass(frozen=True)
class SpectrumKey:
    """What a view's synthesis tables depend on besides the materials: tube, filters, detector, bins."""

    kv: int
    anode_angle_deg: float
    filtration_al_mm: float
    filtration_cu_mm: float
    detector_material: str
    detector_thickness_mm: float
    energy_bins: int
    # a focused anti-scatter grid in front of the detector (physics.grid), 0 / "" for none: its primary
    # transmission per energy is part of the detector's response
    grid_ratio: float = 0.0
    grid_lines_per_cm: float = 0.0
    grid_lamella_mm: float = 0.0
    grid_interspace: str = ""

    @property
    def grid(self) -> Grid | None:
        return Grid(self.grid_ratio, self.grid_lines_per_cm, self.grid_lamella_mm, self.grid_interspace) \
            if self.grid_ratio > 0 else None


@functools.lru_cache(maxsize=32)
def tables_for(spectrum: SpectrumKey, materials: tuple[MaterialAnchor, ...], alloys: tuple[Alloy, ...]) -> Tables:
    """The synthesis tables of one spectrum and material set (cached: views of one kV share them)."""
    energies, fluence = tube_spectrum(spectrum.kv, spectrum.anode_angle_deg, spectrum.filtration_al_mm,
                                      spectrum.filtration_cu_mm)
    heel = heel_ratios(spectrum.kv, spectrum.anode_angle_deg, energies)
    return make_tables(energies, fluence, list(materials), list(alloys), spectrum.detector_material,
                       spectrum.detector_thickness_mm, spectrum.energy_bins, heel, spectrum.grid)


def _detected(energies: np.ndarray, detector_material: str, detector_mm: float, grid=None):
    """(eta, kept keV fraction) per fine energy: the detector's absorbed fraction, times a grid's primary
    transmission when there is one, and the share of each photon's energy it keeps."""
    eta, kept = detector_response(detector_material, detector_mm, energies)
    if grid is not None:
        eta = eta * grid.primary_transmission(*grid_coefficients(grid, energies))
    return eta, kept


def _water_curve(through: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """-ln(S / S_open) through HEEL_THICKNESS_G_CM2 of a material (`through`, `_through`) for a beam of
    fine detected-signal `weight`: the beam's own hardening curve."""
    return -np.log(through @ weight / weight.sum())


def _through(nist: str, energies: np.ndarray) -> np.ndarray:
    """(len(HEEL_THICKNESS_G_CM2), E) read-only: each fine energy's transmission through each thickness
    of a NIST material, exp(-t mu/rho). An item's tables (their water curve and heel grid) and its scatter
    kernels' reference beam all cross the same kV's energies, so the last few are kept."""
    return _through_kept(nist, _grid_key(energies))


@functools.lru_cache(maxsize=4)
def _through_kept(nist: str, grid: bytes) -> np.ndarray:
    through = np.exp(-np.outer(HEEL_THICKNESS_G_CM2, compound_mu_rho(nist, np.frombuffer(grid))))
    through.setflags(write=False)
    return through


@functools.lru_cache(maxsize=128)
def water_attenuation_for(spectrum: SpectrumKey, material: MaterialAnchor) -> np.ndarray:
    """`Tables.water_attenuation` of `tables_for(spectrum, ...)` whose 0 HU anchor is `material`, without
    the rest of the tables (the scatter kernels' reference beam: one per kV without a grid, one per kV
    and drawn grid with one; cached on its own, so the views' own spectra, each with drawn filtration,
    do not push it out of `tables_for`'s cache)."""
    energies, fluence = tube_spectrum(spectrum.kv, spectrum.anode_angle_deg, spectrum.filtration_al_mm,
                                      spectrum.filtration_cu_mm)
    eta, kept = _detected(energies, spectrum.detector_material, spectrum.detector_thickness_mm, spectrum.grid)
    curve = _water_curve(_through(material.nist, energies), fluence * eta * kept)
    curve.setflags(write=False)
    return curve


def make_tables(energies: np.ndarray, fluence: np.ndarray, materials: list[MaterialAnchor], alloys: list[Alloy],
                detector_material: str, detector_mm: float, n_bins: int, heel: np.ndarray | None = None,
                grid=None) -> Tables:
    """Integrate fine-binned physics over `n_bins` synthesis bins that each hold an equal share of the
    detected signal (fluence x absorbed fraction x energy): resolution goes where the signal is. Each
    bin's coefficients are its fine bins' signal-weighted means (exact for thin absorbers). A `grid`
    (physics.grid.Grid) passes each energy's primary by its own transmission, before the scintillator."""
    mu_fine = channel_mu_rho(materials, alloys, energies)
    eta, kept = _detected(energies, detector_material, detector_mm, grid)
    weight = fluence * eta * kept
    share = np.cumsum(weight) / weight.sum()
    index = np.minimum((share - 0.5 * weight / weight.sum()) * n_bins, n_bins - 1).astype(int)
    # a fine energy's bin never falls as the energy rises (its share's midpoint does not; held so against
    # rounding): each bin is one run of fine energies, summed by np.add.reduceat from its first; bins of
    # no signal are left out
    index = np.maximum.accumulate(index)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    quanta_fine = fluence * eta

    def per_bin(x):
        return np.add.reduceat(x, starts, axis=-1)
    bin_weight, bin_fluence, bin_quanta = per_bin(weight), per_bin(fluence), per_bin(quanta_fine)
    has_signal = bin_weight > 0
    through = _through(materials[1].nist, energies)  # (T, E): the 0 HU anchor's material (mu_fine[1])
    water_curve = _water_curve(through, weight)
    heel_grid = heel_q = heel_s = None
    if heel is not None:  # fine-binned, through HEEL_THICKNESS_G_CM2 of the 0 HU anchor's material
        quanta, signal = quanta_fine, weight
        central_q, central_s = through @ quanta, through @ signal
        attenuation = -np.log(central_s / central_s[0])
        heel_q = np.stack([(through @ (quanta * r)) / central_q for r in heel])
        heel_s = np.stack([(through @ (signal * r)) / central_s for r in heel])
        # resampled on uniform grids (angle every HEEL_STEP_DEG, linear between the spectra's angles, and
        # HEEL_ATTENUATION_STEPS attenuations), so that a pixel's cell is found by arithmetic
        heel_grid = np.linspace(0.0, attenuation[-1], HEEL_ATTENUATION_STEPS)
        angles = np.arange(HEEL_ANGLES_DEG[0], HEEL_ANGLES_DEG[-1] + HEEL_STEP_DEG / 2, HEEL_STEP_DEG)

        def uniform(table):
            by_attenuation = np.stack([np.interp(heel_grid, attenuation, row) for row in table])
            return interp_rows(angles, np.asarray(HEEL_ANGLES_DEG, dtype=np.float64), by_attenuation)
        heel_q, heel_s = uniform(heel_q), uniform(heel_s)
    return Tables(
        # signal-weighted means per bin (energy, every channel's mu/rho), the quanta-weighted kept energy
        energies_kev=(per_bin(energies * weight) / bin_weight)[has_signal],
        fluence=bin_fluence[has_signal],
        mu_rho=(per_bin(mu_fine * weight) / bin_weight)[:, has_signal],
        eta=(bin_quanta / bin_fluence)[has_signal],
        kept_kev=(per_bin(kept * quanta_fine) / bin_quanta)[has_signal],
        channels=tuple(m.name for m in materials) + tuple(a.name for a in alloys),
        heel_attenuation=heel_grid,
        water_attenuation=water_curve,
        heel_quanta=heel_q,
        heel_signal=heel_s,
    )


def interp_rows(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp(x, xp, column) of every column of `fp` (len(xp), N) at once, (len(x), N): numpy's own
    arithmetic (slope (fp[j+1] - fp[j]) / (xp[j+1] - xp[j]) times (x - xp[j]) plus fp[j], a node's own
    value at the node, held beyond the ends), so the same bits as the column-by-column calls."""
    x = np.asarray(x, dtype=np.float64)
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])[:, None]
    out = slope * (x - xp[j])[:, None] + fp[j]
    at_node = x == xp[j]
    out[at_node] = fp[j[at_node]]
    out[x <= xp[0]] = fp[0]
    out[x >= xp[-1]] = fp[-1]
    return out


def hvl_mm_al(energies: np.ndarray, fluence: np.ndarray) -> float:
    """First half-value layer in aluminium (mm) of a spectrum, by air kerma (spekpy's NIST mu_en of air)."""
    kerma = fluence * energies * air_muen_rho(energies)
    mu_al = element_mu_rho("Al", energies) * element_density("Al") / MM_PER_CM  # 1/mm
    half = 0.5 * kerma.sum()
    return float(brentq(lambda t: float(np.sum(kerma * np.exp(-mu_al * t))) - half, 0.0, 100.0, xtol=1e-9))
