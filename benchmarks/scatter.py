"""Scatter against the photon Monte Carlo (`pipelines.physics.montecarlo`): the scatter-to-primary ratio
(SPR) of the CsI signal at the detector centre, no grid, behind water slabs, by the Monte Carlo and by
the synthesis's two scatter models with the config's defaults -- 'kernels' (the Monte Carlo's own
pencil-beam kernels, `physics.scatter_kernels`) and 'gaussian' -- each through `physics.synthesis`'s own
function, the air gap from the slab's mid-depth as `physics.realistic` sets it.

Geometry: source at 0, detector at SDD 1020 mm, a 40 x 40 cm slab centred on the isocentre (SOD 850 mm),
a square field at the detector (204.8 mm unless stated); a tungsten tube at kV + 3 mm Al; CsI 0.6 mm.

    python benchmarks/scatter.py [--histories N]

Ends with `RESULT spr_<case>=... kernels_<case>=... gaussian_<case>=... worst_kernels_error=... histories_per_s=...`.
"""
from __future__ import annotations

import argparse

from pipelines.physics import scatter_kernels

FIELD_CM = scatter_kernels.FIT_GEOMETRY_CM["field"]
# (water cm, kV, field cm at the detector)
CASES = ((10.0, 90, FIELD_CM), (20.0, 90, FIELD_CM), (30.0, 90, FIELD_CM), (20.0, 60, FIELD_CM),
         (20.0, 120, FIELD_CM), (20.0, 90, 10.24), (40.0, 90, FIELD_CM))


def water_slab_spr(thickness_cm: float, histories: int, kv: int = 90, seed: int = 0,
                   field_cm: float = FIELD_CM) -> dict:
    return scatter_kernels.full_field_spr(thickness_cm, histories, kv, seed=seed, field_cm=field_cm)


def model_spr(thickness_cm: float, kv: int = 90, model: str = "gaussian", field_cm: float = FIELD_CM) -> float:
    return scatter_kernels.model_spr(thickness_cm, kv, model=model, field_cm=field_cm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
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
    rate = sum(r["histories"] for r in rows) / sum(r["seconds"] for r in rows)
    worst = max(abs(r["kernels"] / r["spr"] - 1) for r in rows)
    keys = " ".join(f"spr_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['spr']:.3f} "
                    f"kernels_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['kernels']:.3f} "
                    f"gaussian_{r['thickness_cm']:g}cm_{r['kv']}kv_{r['field'] * 10:g}mm={r['gaussian']:.3f}"
                    for r in rows)
    print(f"RESULT {keys} worst_kernels_error={worst:.3f} histories_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
