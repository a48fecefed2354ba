"""Scatter at SpineForge's default C-arm geometry by the photon Monte Carlo (`pipelines.physics.montecarlo`):
the scatter-to-primary ratio (SPR) of the CsI signal at the detector centre, no grid, behind water slabs.

Geometry: source at 0, detector at SDD 1020 mm, slab centred on the isocentre (SOD 850 mm), 40 x 40 cm
across, field 204.8 mm square at the detector; 90 kVp (spekpy, 12 deg anode) + 3 mm Al; CsI 0.6 mm.

    python benchmarks/scatter.py [--histories N]

Ends with `RESULT spr_10cm=... spr_20cm=... spr_30cm=... histories_per_s=...`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pipelines.physics.montecarlo import Detector, Material, Tables, box_phantom, simulate, standard_error
from pipelines.physics.tables import tube_spectrum

SDD_CM, SOD_CM, FIELD_CM = 102.0, 85.0, 20.48


def water_slab_spr(thickness_cm: float, histories: int, kv: int = 90, al_mm: float = 3.0, seed: int = 0) -> dict:
    energies, weights = tube_spectrum(kv, 12.0, al_mm=al_mm)
    tables = Tables((Material.nist("Air, Dry (near sea level)"), Material.nist("Water, Liquid")), float(kv) + 1)
    phantom = box_phantom((40.0, 40.0, thickness_cm), (0.0, 0.0, SOD_CM), 1.0, tables.materials[1].density)
    detector = Detector(SDD_CM, (52, 52), 0.4, csi_thickness=0.06)
    start = time.perf_counter()
    result = simulate(tables, phantom, detector, histories, (FIELD_CM / 2, FIELD_CM / 2), (energies, weights), seed)
    seconds = time.perf_counter() - start
    centre = slice(21, 31)  # the central 4 x 4 cm
    spr = result.csi_scatter[centre, centre].sum() / result.csi_primary[centre, centre].sum()
    counts = np.array([b[0] for b in result.batches])
    ratios = [b[3][centre, centre].sum() / max(b[2][centre, centre].sum(), 1e-300) for b in result.batches]
    return {"thickness_cm": thickness_cm, "spr": float(spr), "spr_se": standard_error(ratios, counts),
            "seconds": seconds, "histories": histories}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
    args = parser.parse_args()
    water_slab_spr(10.0, 10_000)  # compile
    rows = [water_slab_spr(t, args.histories) for t in (10.0, 20.0, 30.0)]
    print(f"{'water':>8}{'SPR (Monte Carlo)':>20}{'1 s.e.':>10}{'seconds':>10}")
    for r in rows:
        print(f"{r['thickness_cm']:>6g} cm{r['spr']:>20.3f}{r['spr_se']:>10.3f}{r['seconds']:>10.1f}")
    rate = sum(r["histories"] for r in rows) / sum(r["seconds"] for r in rows)
    print("RESULT " + " ".join(f"spr_{r['thickness_cm']:g}cm={r['spr']:.3f}" for r in rows) + f" histories_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
