"""Scatter against the photon Monte Carlo (`pipelines.physics.montecarlo`): the scatter-to-primary ratio
(SPR) of the CsI signal at the detector centre, no grid, behind water slabs, by the Monte Carlo and by
the synthesis's two scatter models with the config's defaults -- 'kernels' (the Monte Carlo's own
pencil-beam kernels, `physics.scatter_kernels`) and 'gaussian' -- each through `physics.synthesis`'s own
function, the air gap from the slab's mid-depth as `physics.realistic` sets it.

Geometry: source at 0, detector at SDD 1020 mm, a 40 x 40 cm slab centred on the isocentre (SOD 850 mm),
a square field at the detector (204.8 mm unless stated); a tungsten tube at kV + 3 mm Al; CsI 0.6 mm.

Then the SPR across the field (`physics.scatter_profiles`): 20 mm bands over the central 40 mm of rows,
behind 20 cm of water and behind the heterogeneous `phantoms.spine_slab` (lung on one side, a cortical
bone column on the other) and `phantoms.chest_slab` (two lungs beside a spine), the Monte Carlo against
the physics API (`render.render_xray`).

    python benchmarks/scatter.py [--histories N] [--profile-histories N]

Ends with `RESULT spr_<case>=... kernels_<case>=... gaussian_<case>=... worst_kernels_error=...
worst_profile_error_water=... worst_profile_error_spine=... worst_profile_error_chest=... histories_per_s=...`.
"""
from __future__ import annotations

import argparse

import numpy as np

from pipelines.physics import phantoms, scatter_kernels, scatter_profiles

FIELD_CM = scatter_kernels.FIT_GEOMETRY_CM["field"]
# (water cm, kV, field cm at the detector)
CASES = ((10.0, 90, FIELD_CM), (20.0, 90, FIELD_CM), (30.0, 90, FIELD_CM), (20.0, 60, FIELD_CM),
         (20.0, 120, FIELD_CM), (20.0, 90, 10.24), (40.0, 90, FIELD_CM), (5.0, 90, FIELD_CM), (20.0, 90, 5.12),
         (40.0, 120, FIELD_CM))


def water_slab_spr(thickness_cm: float, histories: int, kv: int = 90, seed: int = 0,
                   field_cm: float = FIELD_CM) -> dict:
    return scatter_kernels.full_field_spr(thickness_cm, histories, kv, seed=seed, field_cm=field_cm)


def model_spr(thickness_cm: float, kv: int = 90, model: str = "gaussian", field_cm: float = FIELD_CM) -> float:
    return scatter_kernels.model_spr(thickness_cm, kv, model=model, field_cm=field_cm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
    parser.add_argument("--profile-histories", type=int, default=40_000_000)
    args = parser.parse_args()
    water_slab_spr(10.0, 10_000)  # compile
    rows = []
    for t, kv, field in CASES:
        r = water_slab_spr(t, args.histories, kv, field_cm=field)
        r.update(kv=kv, field=field, kernels=model_spr(t, kv, model="kernels", field_cm=field),
                 gaussian=model_spr(t, kv, model="gaussian", field_cm=field))
        rows.append(r)
    print(f"{'case':<24}{'Monte Carlo':>12}{'1 s.e.':>8}{'kernels':>10}{'/ MC':>7}{'gaussian':>10}{'/ MC':>7}")
    for r in rows:
        name = f"{r['thickness_cm']:g} cm, {r['kv']} kV, {r['field'] * 10:g} mm"
        print(f"{name:<24}{r['spr']:>12.3f}{r['spr_se']:>8.3f}{r['kernels']:>10.3f}{r['kernels'] / r['spr']:>7.2f}"
              f"{r['gaussian']:>10.3f}{r['gaussian'] / r['spr']:>7.2f}")
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
    keys = " ".join(f"spr_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['spr']:.3f} "
                    f"kernels_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['kernels']:.3f} "
                    f"gaussian_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['gaussian']:.3f}"
                    for r in rows)
    print(f"RESULT {keys} worst_kernels_error={worst:.3f} worst_profile_error_water={worst_profile['water']:.3f} "
          f"worst_profile_error_spine={worst_profile['spine']:.3f} "
          f"worst_profile_error_chest={worst_profile['chest']:.3f} histories_per_s={rate:.0f}")


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
