"""A compact photon Monte Carlo: the project's own scatter reference (a tool, not a build step).

Photons from a point source are tracked through air and a voxel phantom (a material index and a density
per voxel) to a detector plane, with
- photoelectric absorption (energy deposited where it happens; tissue fluorescence, below 4 keV, is
  deposited locally too),
- incoherent (Compton) scattering: Klein-Nishina, corrected by the incoherent scattering function
  S(q) of the mixture (rejection, the independent-atom approximation),
- coherent (Rayleigh) scattering: the Thomson distribution weighted by the squared atomic form factor
  F(q)^2 of the mixture,
every cross section, S(q) and F(q) read from xraylib (never typed in). Free paths are sampled exactly in
air and by delta (Woodcock) tracking in the phantom. Energy imparted is tallied per phantom voxel, and
photons reaching the detector plane per detector pixel, primary (never interacted) and scattered apart,
as energy fluence and as the energy a CsI layer of a given thickness absorbs -- and, for each focused
anti-scatter grid the detector lists (`physics.grid`), that energy again behind the grid, each photon
weighted by the grid's exact mean transmission at its own energy and incidence angle.

Units: keV, cm, g/cm^3. Conventions: the source at the origin, the beam along +z.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import xraylib

from pipelines.physics.grid import Grid, lamella_transmission
from pipelines.physics.tables import grid_coefficients

HC_KEV_ANGSTROM = xraylib.KEV2ANGST  # q = sin(theta/2) E / (h c): xraylib's momentum transfer, 1/angstrom
ELECTRON_REST_KEV = xraylib.MEC2
ENERGY_STEP_KEV = 0.1
Q_STEP = 0.01  # 1/angstrom
N_Q = 3000  # S(q) grid up to 30 / angstrom (q at 150 keV and 180 deg: 12.1)
N_Q2 = 4000  # Rayleigh's cumulative F^2 over q^2, up to Q2_MAX
Q2_MAX = 150.0  # (1/angstrom)^2


@dataclass(frozen=True)
class Material:
    """A material by element mass fractions (Z -> fraction) and a density (g/cm^3)."""

    name: str
    fractions: dict[int, float]
    density: float

    @classmethod
    def nist(cls, name: str, density: float | None = None) -> Material:
        """A material of xraylib's NIST compound table."""
        data = xraylib.GetCompoundDataNISTByName(name)
        return cls(name, dict(zip(data["Elements"], data["massFractions"])),
                   data["density"] if density is None else density)

    def _atoms_per_gram(self) -> dict[int, float]:  # mol of atoms per gram, by element
        total = sum(self.fractions.values())
        return {z: w / total / xraylib.AtomicWeight(z) for z, w in self.fractions.items()}

    def mass_coefficients(self, energies: np.ndarray) -> np.ndarray:
        """(3, E) cm^2/g: photoelectric, incoherent, coherent."""
        total = sum(self.fractions.values())
        out = np.zeros((3, len(energies)))
        for z, w in self.fractions.items():
            for i, e in enumerate(energies):
                out[:, i] += w / total * np.array([xraylib.CS_Photo(z, e), xraylib.CS_Compt(z, e),
                                                   xraylib.CS_Rayl(z, e)])
        return out

    def scattering_functions(self) -> tuple[np.ndarray, np.ndarray]:
        """S(q) / S(inf) on the q grid, and the normalised cumulative of F(q)^2 over q^2."""
        atoms = self._atoms_per_gram()
        q = np.arange(N_Q) * Q_STEP
        s = np.zeros(N_Q)
        for z, n in atoms.items():
            s += n * np.array([xraylib.SF_Compt(z, v) if v > 0 else 0.0 for v in q])
        s /= sum(n * z for z, n in atoms.items())
        q2 = np.linspace(0.0, Q2_MAX, N_Q2)
        f2 = np.zeros(N_Q2)
        for z, n in atoms.items():
            f2 += n * np.array([xraylib.FF_Rayl(z, np.sqrt(v)) for v in q2]) ** 2
        cumulative = np.concatenate([[0.0], np.cumsum((f2[1:] + f2[:-1]) / 2 * np.diff(q2))])
        return np.minimum(s, 1.0), cumulative


@dataclass
class Tables:
    """What the kernel reads: per material, the three cross sections per unit density on the energy grid,
    S(q), and the cumulative F^2(q^2)."""

    materials: tuple[Material, ...]
    max_energy: float
    energies: np.ndarray = field(init=False)
    mu: np.ndarray = field(init=False)  # (M, 3, E) cm^2/g
    s: np.ndarray = field(init=False)  # (M, N_Q)
    f2: np.ndarray = field(init=False)  # (M, N_Q2)

    def __post_init__(self):
        self.energies = np.arange(1.0, self.max_energy + 2 * ENERGY_STEP_KEV, ENERGY_STEP_KEV)
        self.mu = np.stack([m.mass_coefficients(self.energies) for m in self.materials])
        functions = [m.scattering_functions() for m in self.materials]
        self.s = np.stack([f[0] for f in functions])
        self.f2 = np.stack([f[1] for f in functions])


@dataclass(frozen=True)
class Phantom:
    """A voxel phantom in air: `index` (X, Y, Z) uint8 material numbers into `Tables.materials` (0 is the
    surrounding air), `density` (X, Y, Z) g/cm^3, its corner `origin` (cm) and voxel `spacing` (cm)."""

    index: np.ndarray
    density: np.ndarray
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class Detector:
    """A detector plane at z = `distance` (cm), `shape` pixels (rows along y, columns along x) of `pitch`
    cm centred on the beam axis; `csi_thickness` cm of CsI (density `csi_density`) for the absorbed-energy
    tally (0: energy fluence only). Each of `grids` (focused on the source, lamellae in planes of constant
    column) gets its own CsI tallies behind it."""

    distance: float
    shape: tuple[int, int]
    pitch: float
    csi_thickness: float = 0.06
    csi_density: float = 4.51
    grids: tuple[Grid, ...] = ()


@dataclass
class Result:
    """Tallies per history: `imparted` (X, Y, Z) keV per phantom voxel; at the detector, per pixel,
    `fluence_primary` / `fluence_scatter` (keV) and `csi_primary` / `csi_scatter` (keV absorbed); behind
    each of the detector's grids, `grid_primary` / `grid_scatter` (G, rows, columns) keV absorbed."""

    histories: int
    imparted: np.ndarray
    # per independent batch: (histories, imparted, csi_primary, csi_scatter, grid_primary, grid_scatter),
    # for standard errors
    batches: tuple
    fluence_primary: np.ndarray
    fluence_scatter: np.ndarray
    csi_primary: np.ndarray
    csi_scatter: np.ndarray
    grid_primary: np.ndarray
    grid_scatter: np.ndarray


@numba.njit(cache=True)
def _interp(table, e0, step, e):
    x = (e - e0) / step
    i = int(x)
    if i < 0:
        return table[0]
    if i >= len(table) - 1:
        return table[len(table) - 1]
    f = x - i
    return table[i] * (1.0 - f) + table[i + 1] * f


@numba.njit(cache=True)
def _rotate(u, v, w, cos_t, phi):
    """Direction (u, v, w) turned by polar cos_t and azimuth phi."""
    sin_t = np.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    cp, sp = np.cos(phi), np.sin(phi)
    if abs(w) > 0.99999:
        return sin_t * cp, sin_t * sp, np.sign(w) * cos_t
    d = np.sqrt(1.0 - w * w)
    nu = u * cos_t + sin_t * (u * w * cp - v * sp) / d
    nv = v * cos_t + sin_t * (v * w * cp + u * sp) / d
    nw = w * cos_t - sin_t * cp * d
    return nu, nv, nw


@numba.njit(cache=True)
def _compton(e, s_table):
    """(E', cos theta): Klein-Nishina by the Butcher-Messel method, accepted with S(q)/Z."""
    k = e / ELECTRON_REST_KEV
    eps0 = 1.0 / (1.0 + 2.0 * k)
    a1 = np.log(1.0 / eps0)
    a2 = (1.0 - eps0 * eps0) / 2.0
    while True:
        if np.random.random() * (a1 + a2) < a1:
            eps = np.exp(-a1 * np.random.random())
        else:
            eps = np.sqrt(eps0 * eps0 + (1.0 - eps0 * eps0) * np.random.random())
        t = (1.0 - eps) / (k * eps)
        sin2 = t * (2.0 - t)
        if np.random.random() < 1.0 - eps * sin2 / (1.0 + eps * eps):
            cos_t = 1.0 - t
            q = np.sqrt(max(0.0, (1.0 - cos_t) / 2.0)) * e / HC_KEV_ANGSTROM
            if np.random.random() < _interp(s_table, 0.0, Q_STEP, q):
                return eps * e, cos_t


@numba.njit(cache=True)
def _rayleigh(e, cumulative):
    """cos theta: q^2 from the cumulative F^2 up to q_max^2, accepted with (1 + cos^2)/2."""
    qmax2 = (e / HC_KEV_ANGSTROM) ** 2
    step = Q2_MAX / (len(cumulative) - 1)
    top = _interp(cumulative, 0.0, step, min(qmax2, Q2_MAX))
    while True:
        target = np.random.random() * top
        lo, hi = 0, len(cumulative) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cumulative[mid] < target:
                lo = mid
            else:
                hi = mid
        span = cumulative[hi] - cumulative[lo]
        q2 = (lo + ((target - cumulative[lo]) / span if span > 0 else 0.0)) * step
        cos_t = 1.0 - 2.0 * min(q2 / qmax2, 1.0)
        if np.random.random() < (1.0 + cos_t * cos_t) / 2.0:
            return cos_t


@numba.njit(cache=True)
def _box_interval(x, y, z, u, v, w, lo, hi):
    """(t_in, t_out) of the ray in the box [lo, hi] (t_in > t_out: missed)."""
    t0, t1 = -1e30, 1e30
    p = (x, y, z)
    d = (u, v, w)
    for a in range(3):
        if abs(d[a]) < 1e-12:
            if p[a] < lo[a] or p[a] > hi[a]:
                return 1.0, 0.0
        else:
            ta, tb = (lo[a] - p[a]) / d[a], (hi[a] - p[a]) / d[a]
            if ta > tb:
                ta, tb = tb, ta
            t0, t1 = max(t0, ta), min(t1, tb)
    return t0, t1


WORLD_HALF_WIDTH_CM = 200.0  # photons leaving |x|, |y| beyond this, or z < 0, are lost


@numba.njit(cache=True)
def _world_exit(x, y, z, u, v, w, det_z):
    """(distance to where the photon leaves the world, whether that is the detector plane)."""
    t, at_detector = 1e30, False
    if w > 0:
        t, at_detector = (det_z - z) / w, True
    elif w < 0:
        t = -z / w
    for p, d in ((x, u), (y, v)):
        if d > 0:
            tp = (WORLD_HALF_WIDTH_CM - p) / d
        elif d < 0:
            tp = (-WORLD_HALF_WIDTH_CM - p) / d
        else:
            tp = 1e30
        if tp < t:
            t, at_detector = tp, False
    return t, at_detector


@numba.njit(cache=True, nogil=True)
def _transport(n, seed, energies_in, weights_cdf, half_x, half_y, aim_x, aim_y, mu, e0, s_tab, f2_tab, air_rho, index,
               density, origin, spacing, majorant, det_z, det_shape, det_pitch, csi_mu, csi_t, grid_geometry, grid_mu,
               imparted, fp, fs, cp, cs, gp, gs):
    np.random.seed(seed)
    nx, ny, nz = index.shape
    lo = (origin[0], origin[1], origin[2])
    hi = (origin[0] + nx * spacing[0], origin[1] + ny * spacing[1], origin[2] + nz * spacing[2])
    for _ in range(n):
        # energy from the spectrum, direction isotropic within the field's pyramid at the detector
        r = np.random.random()
        k = np.searchsorted(weights_cdf, r)
        e = energies_in[min(k, len(energies_in) - 1)]
        if aim_x == 0.0 and aim_y == 0.0:
            while True:
                cz = 1.0 - np.random.random() * (1.0 - 1.0 / np.sqrt(1.0 + half_x ** 2 + half_y ** 2))
                phi = 2.0 * np.pi * np.random.random()
                sz = np.sqrt(1.0 - cz * cz)
                u, v, w = sz * np.cos(phi), sz * np.sin(phi), cz
                if abs(u / w) <= half_x and abs(v / w) <= half_y:
                    break
        else:  # a pencil off the axis: towards a point drawn uniformly in its (small) rectangle
            tx = aim_x + (2.0 * np.random.random() - 1.0) * half_x
            ty = aim_y + (2.0 * np.random.random() - 1.0) * half_y
            norm = np.sqrt(1.0 + tx * tx + ty * ty)
            u, v, w = tx / norm, ty / norm, 1.0 / norm
        x, y, z = 0.0, 0.0, 0.0
        primary = True
        alive = True
        while alive:
            i, j, kz, mat = 0, 0, 0, 0
            m_air = air_rho * (_interp(mu[0, 0, :], e0, ENERGY_STEP_KEV, e) + _interp(mu[0, 1, :], e0, ENERGY_STEP_KEV, e)
                               + _interp(mu[0, 2, :], e0, ENERGY_STEP_KEV, e))
            t_in, t_out = _box_interval(x, y, z, u, v, w, lo, hi)
            inside = t_in <= 1e-9 and t_out > 1e-9
            if not inside:
                limit = t_in if t_in > 1e-9 and t_in < t_out else 1e30
                t_exit, at_detector = _world_exit(x, y, z, u, v, w, det_z)
                step = -np.log(1.0 - np.random.random()) / m_air
                if step < min(limit, t_exit):  # an interaction in air (scored nowhere)
                    x, y, z = x + step * u, y + step * v, z + step * w
                elif limit < t_exit:
                    x, y, z = x + (limit + 1e-7) * u, y + (limit + 1e-7) * v, z + (limit + 1e-7) * w
                    continue
                else:
                    t_det = t_exit
                    if at_detector:
                        px, py = x + t_det * u, y + t_det * v
                        col = int(np.floor(px / det_pitch + det_shape[1] / 2.0))
                        row = int(np.floor(py / det_pitch + det_shape[0] / 2.0))
                        if 0 <= row < det_shape[0] and 0 <= col < det_shape[1]:
                            a = e * (1.0 - np.exp(-_interp(csi_mu, e0, ENERGY_STEP_KEV, e) * csi_t / w))
                            if primary:
                                fp[row, col] += e
                                cp[row, col] += a
                            else:
                                fs[row, col] += e
                                cs[row, col] += a
                            tan_rel = abs(u / w - px / det_z)  # across the lamellae, against the focused one here
                            for g in range(grid_geometry.shape[0]):  # height, period, strip (cm)
                                h = grid_geometry[g, 0]
                                passed = a * lamella_transmission(
                                    h * tan_rel, h / w, _interp(grid_mu[g, 0], e0, ENERGY_STEP_KEV, e),
                                    _interp(grid_mu[g, 1], e0, ENERGY_STEP_KEV, e), grid_geometry[g, 1],
                                    grid_geometry[g, 2])
                                if primary:
                                    gp[g, row, col] += passed
                                else:
                                    gs[g, row, col] += passed
                    alive = False
                    continue
            else:
                # delta tracking inside the phantom, against the majorant at this energy
                m_max = _interp(majorant, e0, ENERGY_STEP_KEV, e)
                step = -np.log(1.0 - np.random.random()) / m_max
                if step >= t_out:
                    x, y, z = x + (t_out + 1e-7) * u, y + (t_out + 1e-7) * v, z + (t_out + 1e-7) * w
                    continue
                x, y, z = x + step * u, y + step * v, z + step * w
                i = min(max(int((x - lo[0]) / spacing[0]), 0), nx - 1)
                j = min(max(int((y - lo[1]) / spacing[1]), 0), ny - 1)
                kz = min(max(int((z - lo[2]) / spacing[2]), 0), nz - 1)
                mat = index[i, j, kz]
                real = density[i, j, kz] * (_interp(mu[mat, 0, :], e0, ENERGY_STEP_KEV, e)
                                    + _interp(mu[mat, 1, :], e0, ENERGY_STEP_KEV, e)
                                    + _interp(mu[mat, 2, :], e0, ENERGY_STEP_KEV, e))
                if np.random.random() * m_max >= real:
                    continue  # a virtual collision
            # a real interaction of material `mat` at (x, y, z)
            p_photo = _interp(mu[mat, 0, :], e0, ENERGY_STEP_KEV, e)
            p_compt = _interp(mu[mat, 1, :], e0, ENERGY_STEP_KEV, e)
            p_rayl = _interp(mu[mat, 2, :], e0, ENERGY_STEP_KEV, e)
            r = np.random.random() * (p_photo + p_compt + p_rayl)
            dep = 0.0
            if r < p_photo:
                dep = e
                alive = False
            elif r < p_photo + p_compt:
                e_out, cos_t = _compton(e, s_tab[mat])
                dep = e - e_out
                e = e_out
                u, v, w = _rotate(u, v, w, cos_t, 2.0 * np.pi * np.random.random())
                primary = False
            else:
                cos_t = _rayleigh(e, f2_tab[mat])
                u, v, w = _rotate(u, v, w, cos_t, 2.0 * np.pi * np.random.random())
                primary = False
            if alive and e < 1.0:
                dep += e
                alive = False
            if inside and dep > 0.0:
                imparted[i, j, kz] += dep


def simulate(tables: Tables, phantom: Phantom, detector: Detector, histories: int, field_half_cm: tuple[float, float],
             spectrum: tuple[np.ndarray, np.ndarray], seed: int = 0, batches: int | None = None,
             aim_cm: tuple[float, float] = (0.0, 0.0)) -> Result:
    """`histories` photons from the origin, isotropic within the rectangle of half-sizes `field_half_cm`
    at the detector plane, energies drawn from `spectrum` (energies keV, weights), in `batches` seeded
    independently (by default one per core, run in parallel). With `aim_cm` off the axis, a pencil there:
    the photons head for points drawn uniformly in that rectangle centred at `aim_cm` on the detector
    plane (for a pencil's small rectangle, the same as isotropic)."""
    energies, weights = (np.asarray(a, dtype=np.float64) for a in spectrum)
    if energies.max() > tables.max_energy:
        raise ValueError(f"spectrum reaches {energies.max():g} keV; the tables stop at {tables.max_energy:g}")
    cdf = np.cumsum(weights) / np.sum(weights)
    batches = batches or max(8, numba.config.NUMBA_NUM_THREADS)
    counts = np.full(batches, histories // batches)
    counts[: histories % batches] += 1
    densities = phantom.density.astype(np.float64)
    majorant = np.zeros(len(tables.energies))
    for m in np.unique(phantom.index):
        top = float(densities[phantom.index == m].max())
        majorant = np.maximum(majorant, top * tables.mu[m].sum(0))
    csi = Material.nist("Cesium Iodide")
    csi_mu = csi.mass_coefficients(tables.energies).sum(0) * detector.csi_density
    half = (field_half_cm[0] / detector.distance, field_half_cm[1] / detector.distance)
    shape = np.array(detector.shape, dtype=np.int64)
    aim = (aim_cm[0] / detector.distance, aim_cm[1] / detector.distance)
    outs = _run(counts, seed, energies, cdf, half, aim, tables, phantom, densities, majorant, detector, shape, csi_mu)
    imparted, fp, fs, cp, cs, gp, gs = (sum(o[i] for o in outs) for i in range(7))
    per_batch = tuple((int(c), o[0] / c, o[3] / c, o[4] / c, o[5] / c, o[6] / c) for c, o in zip(counts, outs) if c > 0)
    return Result(histories, imparted / histories, per_batch, fp / histories, fs / histories, cp / histories,
                  cs / histories, gp / histories, gs / histories)


def standard_error(values: np.ndarray, counts: np.ndarray) -> float:
    """Standard error of the history-weighted mean of independent batch estimates."""
    values, w = np.asarray(values, dtype=float), np.asarray(counts, dtype=float)
    mean = np.sum(w * values) / w.sum()
    return float(np.sqrt(np.sum(w * (values - mean) ** 2) / w.sum() / (len(values) - 1)))


def grid_arrays(grids: tuple[Grid, ...], energies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's view of the grids: (G, 3) height, period, lamella thickness (cm) and (G, 2, E) lead and
    interspace attenuation (per cm) on the energy grid."""
    geometry = np.array([[g.height_mm, g.period_mm, g.strip_mm] for g in grids], dtype=np.float64).reshape(-1, 3) / 10.0
    mu = np.zeros((len(grids), 2, len(energies)))
    for k, g in enumerate(grids):
        mu[k] = np.stack(grid_coefficients(g, energies)) * 10.0
    return geometry, mu


def _run(counts, seed, energies, cdf, half, aim, tables, phantom, densities, majorant, detector, shape, csi_mu):
    from concurrent.futures import ThreadPoolExecutor

    grid_geometry, grid_mu = grid_arrays(detector.grids, tables.energies)

    def batch(b):
        imparted = np.zeros(phantom.index.shape)
        planes = [np.zeros(detector.shape) for _ in range(4)]
        planes += [np.zeros((len(detector.grids), *detector.shape)) for _ in range(2)]
        _transport(int(counts[b]), int(seed) * 1000003 + b, energies, cdf, half[0], half[1], aim[0], aim[1],
                   tables.mu,
                   float(tables.energies[0]), tables.s, tables.f2, float(tables.materials[0].density),
                   phantom.index.astype(np.uint8), densities,
                   np.asarray(phantom.origin, dtype=np.float64), np.asarray(phantom.spacing, dtype=np.float64),
                   majorant, float(detector.distance), shape, float(detector.pitch), csi_mu,
                   float(detector.csi_thickness), grid_geometry, grid_mu, imparted, *planes)
        return (imparted, *planes)

    with ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS) as pool:
        return list(pool.map(batch, range(len(counts))))


def box_phantom(size_cm: tuple[float, float, float], centre_cm: tuple[float, float, float], voxel_cm: float,
                density: float, material: int = 1) -> Phantom:
    """A homogeneous box of one material, voxelised at `voxel_cm` (the tally's grid)."""
    shape = tuple(int(round(s / voxel_cm)) for s in size_cm)
    origin = tuple(c - s / 2 for c, s in zip(centre_cm, size_cm))
    return Phantom(np.full(shape, material, np.uint8), np.full(shape, density), origin, (voxel_cm,) * 3)


def cube_sum(imparted: np.ndarray, phantom: Phantom, centre_cm, size_cm: float) -> float:
    """Energy imparted in the voxels whose centres lie in a cube (e.g. a TG-195 VOI), per history."""
    axes = [phantom.origin[a] + (np.arange(imparted.shape[a]) + 0.5) * phantom.spacing[a] for a in range(3)]
    picks = [np.abs(axes[a] - centre_cm[a]) <= size_cm / 2 + 1e-9 for a in range(3)]
    return float(imparted[np.ix_(*picks)].sum())


def phantom_from_hu(hu: np.ndarray, voxel_cm: float, centre_cm: tuple[float, float, float], anchor_hu,
                    densities) -> Phantom:
    """The Monte Carlo phantom of a HU volume already ordered (X, Y, Z) with the beam along Z, through
    the renderer's own mapping (`materials.volume_fractions` of the three anchors air, tissue, bone with
    their `densities`): material 1 (tissue) where the voxel is tissue mixed with air, at the tissue's
    partial density (the air's share, at most 0.12 % of the mass, dropped), material 2 (bone) where it
    is bone, at the bone's partial density, else air. A voxel mixing tissue and bone has no one material
    here: refused, naming how many there are."""
    from pipelines.physics.materials import volume_fractions

    fractions = volume_fractions(hu, np.asarray(anchor_hu, dtype=float))
    mixed = (fractions[..., 1] > 0) & (fractions[..., 2] > 0)
    if mixed.any():
        raise ValueError(f"{int(mixed.sum())} voxels mix tissue and bone (HU between the anchors "
                         f"{anchor_hu[1]:g} and {anchor_hu[2]:g}): the Monte Carlo takes one material per voxel")
    rho = np.asarray(densities, dtype=float)
    index = np.where(fractions[..., 2] > 0, 2, np.where(fractions[..., 1] > 0, 1, 0)).astype(np.uint8)
    density = np.choose(index, [np.full(hu.shape, rho[0]), fractions[..., 1] * rho[1], fractions[..., 2] * rho[2]])
    size = np.array(hu.shape) * voxel_cm
    origin = tuple(float(c - s / 2) for c, s in zip(centre_cm, size))
    return Phantom(index, density, origin, (voxel_cm,) * 3)

