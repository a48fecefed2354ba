"""Scatter against the photon Monte Carlo (`pipelines.physics.montecarlo`): the scatter-to-primary ratio
(SPR) of the CsI signal at the detector centre, no grid, behind water slabs, by the Monte Carlo and by
the synthesis's two scatter models with the config's defaults -- 'kernels' (the Monte Carlo's own
pencil-beam kernels, `physics.scatter_kernels`) and 'gaussian' -- each through `physics.synthesis`'s own
function, the air gap from the slab's mid-depth as `physics.realistic` sets it.

Geometry: source at 0, detector at SDD 1020 mm, a 40 x 40 cm slab centred on the isocentre (SOD 850 mm),
a square field at the detector (204.8 mm unless stated); a tungsten tube at kV + 3 mm Al; CsI 0.6 mm.

The same Monte Carlo runs tally the CsI signal behind focused anti-scatter grids too (GRIDS: ratio and
line density, `physics.grid`, each photon by its energy and incidence angle); the second table gives
their SPRs against the synthesis's with the same grid.

From the same runs, every case's SPR across the field: each 20 mm band wholly inside the field, over
the central 40 mm of rows (`scatter_kernels.band_spr`), without a grid and behind the 10:1 grid, the
worst band of each case against the kernels' (a table, and the worst of all in the RESULT line).

Then how a diverging beam draws scatter in (`scatter_kernels.off_axis_gains`): pencils aimed 5, 10 and 15 cm
off the axis through 20 cm of water, the scatter each brings to the central 4 cm square over what the
on-axis pencil brings as far away, by the Monte Carlo and by the kernels' near and far origin factors.

Then the SPR across the field (`physics.scatter_profiles`): 20 mm bands over the central 40 mm of rows,
behind 20 cm of water and behind the heterogeneous `phantoms.spine_slab` (lung on one side, a cortical
bone column on the other) and `phantoms.chest_slab` (two lungs beside a spine), the Monte Carlo against
the physics API (`render.render_xray`).

    python benchmarks/scatter.py [--histories N] [--profile-histories N]

(the two 40 cm cases run 10 x --histories: through 40 cm a 20 mm band sees too few primaries otherwise)

Ends with `RESULT spr_<case>=... kernels_<case>=... gaussian_<case>=... worst_kernels_error=...
worst_profile_error_water=... worst_profile_error_spine=... worst_profile_error_chest=... worst_grid_error=...
worst_case_profile_error=... worst_grid_profile_error=... worst_off_axis_error=... histories_per_s=...`.
"""
from __future__ import annotations

import argparse
from typing import NamedTuple

import numpy as np

from pipelines.physics import phantoms, scatter_kernels, scatter_profiles
from pipelines.physics.grid import Grid

FIELD_CM = scatter_kernels.FIT_GEOMETRY_CM["field"]
SDD_CM, SOD_CM = scatter_kernels.FIT_GEOMETRY_CM["sdd"], scatter_kernels.FIT_GEOMETRY_CM["sod"]


class Case(NamedTuple):
    water_cm: float
    kv: int
    field_cm: float = FIELD_CM  # square, at the detector
    al_mm: float = scatter_kernels.FILTRATION_AL_MM
    cu_mm: float = 0.0
    sdd_cm: float = SDD_CM
    sod_cm: float = SOD_CM  # the slab's centre

    @property
    def gap_cm(self) -> float:
        return self.sdd_cm - self.sod_cm - self.water_cm / 2

    @property
    def filtration(self) -> str:
        return f"{self.al_mm:g} mm Al" + (f" + {self.cu_mm:g} mm Cu" if self.cu_mm else "")

    def key(self) -> str:
        extra = (f"_{self.al_mm:g}al" + (f"{self.cu_mm:g}cu" if self.cu_mm else "")
                 if (self.al_mm, self.cu_mm) != (scatter_kernels.FILTRATION_AL_MM, 0.0) else "")
        gap = f"_gap{self.gap_cm:g}cm" if (self.sdd_cm, self.sod_cm) != (SDD_CM, SOD_CM) else ""
        return f"{self.water_cm:g}cm_{self.kv}kv_{self.field_cm * 10:g}mm{extra}{gap}"


# the default geometry's thicknesses, kVs and fields (to 40 cm, on a larger detector; 40 cm of water centred
# 5 cm nearer the source, so that it ends 2 cm before the detector); then the drawn
# filtrations' ends (the kernels are tallied behind 3 mm Al) and air gaps of 0 and 40 cm (the detector
# against the slab, and far from it)
CASES = (Case(10.0, 90), Case(20.0, 90), Case(30.0, 90), Case(20.0, 60), Case(20.0, 120), Case(20.0, 90, 10.24),
         Case(40.0, 90, sod_cm=80.0), Case(5.0, 90), Case(20.0, 90, 5.12), Case(40.0, 120, sod_cm=80.0),
         Case(20.0, 90, 40.0), Case(20.0, 70, al_mm=2.5), Case(20.0, 110, al_mm=4.0, cu_mm=0.3),
         Case(20.0, 90, sod_cm=SDD_CM - 10.0), Case(20.0, 90, sdd_cm=130.0, sod_cm=80.0))

THICK_FACTOR = 10  # histories of the 40 cm cases over the others

# (ratio, lines per cm): the default draw's ends and middle, and the kernels' outer nodes
GRIDS = tuple(Grid(r, n) for r, n in ((10.0, 40.0), (8.0, 60.0), (12.0, 80.0), (6.0, 40.0), (16.0, 80.0)))


def _columns(c: Case) -> str:
    return f"{c.water_cm:g} cm | {c.kv} | {c.field_cm * 10:g} mm | {c.filtration} | {c.gap_cm:g} cm"


def water_slab_spr(thickness_cm: float, histories: int, kv: int = 90, seed: int = 0,
                   field_cm: float = FIELD_CM, grids: tuple[Grid, ...] = (), case: Case | None = None) -> dict:
    c = case or Case(thickness_cm, kv, field_cm)
    return scatter_kernels.full_field_spr(c.water_cm, histories, c.kv, c.al_mm, seed=seed, field_cm=c.field_cm,
                                          grids=grids, cu_mm=c.cu_mm, sdd_cm=c.sdd_cm, sod_cm=c.sod_cm)


def model_spr(thickness_cm: float, kv: int = 90, model: str = "gaussian", field_cm: float = FIELD_CM,
              grid: Grid | None = None, case: Case | None = None) -> float:
    c = case or Case(thickness_cm, kv, field_cm)
    return scatter_kernels.model_spr(c.water_cm, c.kv, c.al_mm, model=model, field_cm=c.field_cm, grid=grid,
                                     cu_mm=c.cu_mm, sdd_cm=c.sdd_cm, sod_cm=c.sod_cm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
    parser.add_argument("--profile-histories", type=int, default=40_000_000)
    args = parser.parse_args()
    water_slab_spr(10.0, 10_000)  # compile
    rows = []
    for c in CASES:  # 40 cm of water passes ~3e-4 of the primary: 10x the histories, or its bands are noise
        r = water_slab_spr(c.water_cm, args.histories * (THICK_FACTOR if c.water_cm >= 40 else 1), grids=GRIDS, case=c)
        r.update(case=c, kernels=model_spr(0, model="kernels", case=c), gaussian=model_spr(0, model="gaussian", case=c),
                 grid_kernels=[model_spr(0, model="kernels", grid=g, case=c) for g in GRIDS],
                 grid_gaussian=[model_spr(0, model="gaussian", grid=g, case=c) for g in GRIDS])
        rows.append(r)
    print("| water | kV | field | filtration | air gap | SPR, Monte Carlo | kernels (default) | / MC | gaussian | / MC |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {_columns(r['case'])} | {r['spr']:.3f} | {r['kernels']:.3f} | {r['kernels'] / r['spr']:.2f} | "
              f"{r['gaussian']:.3f} | {r['gaussian'] / r['spr']:.2f} |")
    print("(the Monte Carlo's standard errors: " + ", ".join(f"{r['spr_se']:.3f}" for r in rows) + ")")
    print("\n| water | kV | field | filtration | air gap | grid | SPR, Monte Carlo | kernels | / MC | gaussian | / MC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    grid_errors, grid_se, shown_se = [], [], []
    for r in rows:  # every case behind the first grid, and the 20 cm, 90 kV case behind every grid
        for g, grid in enumerate(GRIDS):
            mc, k, gauss = r["grid_spr"][g], r["grid_kernels"][g], r["grid_gaussian"][g]
            grid_errors.append(abs(k / mc - 1))
            grid_se.append(r["grid_spr_se"][g] / mc)
            if g == 0 or r["case"] == Case(20.0, 90):
                shown_se.append(r["grid_spr_se"][g])
                print(f"| {_columns(r['case'])} | {grid.ratio:g}:1, {grid.lines_per_cm:g}/cm | {mc:.3f} | {k:.3f} | "
                      f"{k / mc:.2f} | {gauss:.3f} | {gauss / mc:.2f} |")
    print("(the Monte Carlo's standard errors: " + ", ".join(f"{s:.3f}" for s in shown_se) + ")")
    within = sum(e <= 0.15 for e in grid_errors)
    print(f"behind grids: {within} of {len(grid_errors)} case and grid pairs within 15 % of the Monte Carlo, the "
          f"worst {max(grid_errors):.1%} (the Monte Carlo's relative standard errors up to {max(grid_se):.1%})")
    print("\n| water | kV | field | filtration | air gap | grid | bands | worst band | SPR, Monte Carlo | ± s.e. "
          "| kernels | / MC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    case_profile_errors, grid_profile_errors = [], []
    for r in rows:  # the SPR across the field, every 20 mm band inside it, from the same Monte Carlo runs
        c = r["case"]
        model = scatter_kernels.model_spr(c.water_cm, c.kv, c.al_mm, field_cm=c.field_cm, cu_mm=c.cu_mm,
                                          sdd_cm=c.sdd_cm, sod_cm=c.sod_cm, profile=True)
        behind = scatter_kernels.model_spr(c.water_cm, c.kv, c.al_mm, field_cm=c.field_cm, cu_mm=c.cu_mm,
                                           sdd_cm=c.sdd_cm, sod_cm=c.sod_cm, profile=True, grid=GRIDS[0])
        ratio, grid_ratio = model / r["profile"], behind / r["grid_profiles"][0]
        k, g = int(np.argmax(np.abs(ratio - 1))), int(np.argmax(np.abs(grid_ratio - 1)))
        bands = scatter_kernels.profile_bands_mm(c.field_cm)
        case_profile_errors.append(abs(ratio[k] - 1))
        grid_profile_errors.append(abs(grid_ratio[g] - 1))
        for name, b, mc, se, kern, rat in (
                ("none", k, r["profile"], r["profile_se"], model, ratio),
                (f"{GRIDS[0].ratio:g}:1, {GRIDS[0].lines_per_cm:g}/cm", g, r["grid_profiles"][0],
                 r["grid_profiles_se"][0], behind, grid_ratio)):
            print(f"| {_columns(c)} | {name} | {len(bands)} | {bands[b]:+.0f} mm | {mc[b]:.3f} | {se[b]:.3f} | "
                  f"{kern[b]:.3f} | {rat[b]:.2f} |")
    print(f"profiles across the field: every band of every case within {max(case_profile_errors):.1%} of the Monte "
          f"Carlo without a grid, within {max(grid_profile_errors):.1%} behind the 10:1 grid")
    print("\n| pencil aimed at | grid | gain, Monte Carlo | ± s.e. | kernels | / MC |")
    print("|---|---|---|---|---|---|")
    gains = scatter_kernels.off_axis_gains(args.histories)
    off_axis_errors = []
    for name, key, grid in (("none", "gain", None), (f"{GRIDS[0].ratio:g}:1, {GRIDS[0].lines_per_cm:g}/cm", "grid_gain",
                                                     GRIDS[0])):
        for aim, mc, se in zip(gains["aims_cm"], gains[key], gains[key + "_se"]):
            model = scatter_kernels.model_off_axis_gain(aim, grid=grid)
            off_axis_errors.append(abs(model / mc - 1))
            print(f"| ({aim[0]:g}, {aim[1]:g}) cm | {name} | {mc:.3f} | {se:.3f} | {model:.3f} | {model / mc:.2f} |")
    print(f"off-axis pencils: the kernels' gain within {max(off_axis_errors):.1%} of the Monte Carlo's")
    worst_profile = {}
    for name, (hu, affine) in (("water", phantoms.box_hu((400.0, 200.0, 400.0), 5.0)), ("spine", phantoms.spine_slab()),
                               ("chest", phantoms.chest_slab())):
        print(f"\n{name}: ", end="")
        p = profile(hu, affine, args.profile_histories)
        rows.append({"histories": p["mc"]["histories"], "seconds": p["mc"]["seconds"]})
        worst_profile[name] = float(np.max(np.abs(p["ratio"] - 1)))
    rate = sum(r["histories"] for r in rows) / sum(r["seconds"] for r in rows)
    rows = rows[:len(CASES)]
    worst = max(abs(r["kernels"] / r["spr"] - 1) for r in rows)
    keys = " ".join(f"spr_{r['case'].key()}={r['spr']:.3f} kernels_{r['case'].key()}={r['kernels']:.3f} "
                    f"gaussian_{r['case'].key()}={r['gaussian']:.3f}" for r in rows)
    print(f"RESULT {keys} worst_kernels_error={worst:.3f} worst_profile_error_water={worst_profile['water']:.3f} "
          f"worst_profile_error_spine={worst_profile['spine']:.3f} "
          f"worst_profile_error_chest={worst_profile['chest']:.3f} worst_grid_error={max(grid_errors):.3f} "
          f"worst_case_profile_error={max(case_profile_errors):.3f} "
          f"worst_grid_profile_error={max(grid_profile_errors):.3f} worst_off_axis_error={max(off_axis_errors):.3f} "
          f"histories_per_s={rate:.0f}")


def profile(hu, affine, histories: int, seed: int = 0) -> dict:
    """Print one phantom's SPR profile table (Monte Carlo against the API's kernels), return `compare`'s dict."""
    p = scatter_profiles.compare(hu, affine, histories, seed=seed)
    print(f"primary within {p['primary_error']:.1%} of the Monte Carlo's in every band")
    print(f"{'band centre':<14}{'MC primary':>11}{'API primary':>12}{'SPR, MC':>9}{'1 s.e.':>8}{'API':>8}{'/ MC':>7}")
    for k, x in enumerate(p["x_mm"]):
        print(f"{x:>+8.0f} mm    {p['mc']['transmission'][k]:>11.4f}{p['model']['primary'][k]:>12.4f}"
              f"{p['mc']['spr'][k]:>9.3f}{p['mc']['spr_se'][k]:>8.3f}{p['model']['spr'][k]:>8.3f}{p['ratio'][k]:>7.2f}")
    return p


if __name__ == "__main__":
    main()
