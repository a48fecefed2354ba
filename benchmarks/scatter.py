"""Scatter at SpineForge's default C-arm geometry: the scatter-to-primary ratio (SPR) of the CsI signal at
the detector centre, no grid, behind water slabs, by the photon Monte Carlo (`pipelines.physics.montecarlo`)
and by the synthesis's scatter model with the config's defaults (`physics.synthesis.scatter_signal`, the
air gap from the slab's mid-depth, as `physics.realistic` sets it).

Geometry: source at 0, detector at SDD 1020 mm, slab centred on the isocentre (SOD 850 mm), 40 x 40 cm
across, field 204.8 mm square at the detector; 90 kVp (spekpy, 12 deg anode) + 3 mm Al; CsI 0.6 mm.

    python benchmarks/scatter.py [--histories N]

Ends with `RESULT spr_10cm=... model_spr_10cm=... (20, 30 cm) histories_per_s=...`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pipelines.physics.montecarlo import Detector, Material, Tables, box_phantom, simulate, standard_error
from pipelines.physics.synthesis import ScatterModel, scatter_sigma_mm, scatter_signal
from pipelines.physics.tables import compound_mu_rho, detector_response, tube_spectrum
from schemas.config import ScatterConfig

SDD_CM, SOD_CM, FIELD_CM = 102.0, 85.0, 20.48


def water_slab_spr(thickness_cm: float, histories: int, kv: int = 90, al_mm: float = 3.0, seed: int = 0,
                   batches: int = 32) -> dict:
    energies, weights = tube_spectrum(kv, 12.0, al_mm=al_mm)
    tables = Tables((Material.nist("Air, Dry (near sea level)"), Material.nist("Water, Liquid")), float(kv) + 1)
    phantom = box_phantom((40.0, 40.0, thickness_cm), (0.0, 0.0, SOD_CM), 1.0, tables.materials[1].density)
    detector = Detector(SDD_CM, (52, 52), 0.4, csi_thickness=0.06)
    start = time.perf_counter()
    result = simulate(tables, phantom, detector, histories, (FIELD_CM / 2, FIELD_CM / 2), (energies, weights), seed,
                      batches)
    seconds = time.perf_counter() - start
    centre = slice(21, 31)  # the central 4 x 4 cm
    spr = result.csi_scatter[centre, centre].sum() / result.csi_primary[centre, centre].sum()
    counts = np.array([b[0] for b in result.batches])
    primaries = np.array([b[2][centre, centre].sum() for b in result.batches])
    ratios = [b[3][centre, centre].sum() / p for b, p in zip(result.batches, primaries) if p > 0]
    spr_se = standard_error(ratios, counts[primaries > 0]) if len(ratios) > 1 else float("nan")
    return {"thickness_cm": thickness_cm, "spr": float(spr), "spr_se": spr_se,
            "seconds": seconds, "histories": histories}


def model_spr(thickness_cm: float, kv: int = 90, al_mm: float = 3.0) -> float:
    """The synthesis model's SPR at the field centre for the same slab, beam and detector, no grid."""
    energies, fluence = tube_spectrum(kv, 12.0, al_mm=al_mm)
    eta, kept = detector_response("Cesium Iodide", 0.6, energies)
    weights = fluence * eta * kept
    water = compound_mu_rho("Water, Liquid", energies)  # g/cm^2 per cm at 1 g/cm^3
    transmitted = float(weights @ np.exp(-water * thickness_cm) / weights.sum())
    cfg = ScatterConfig()
    gap_mm = (SDD_CM - SOD_CM - thickness_cm / 2) * 10
    model = ScatterModel(cfg.amplitude, cfg.exponent, scatter_sigma_mm(cfg.min_sigma_mm, cfg.spread_deg, gap_mm),
                         1.0, 1.0)
    pixel_mm, n = 0.8, 256  # the field of 204.8 mm
    primary = np.full((n, n), transmitted)
    scatter = scatter_signal(primary, np.ones((n, n)), model, pixel_mm)
    return float(scatter[n // 2, n // 2] / transmitted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
    args = parser.parse_args()
    water_slab_spr(10.0, 10_000)  # compile
    rows = [water_slab_spr(t, args.histories) for t in (10.0, 20.0, 30.0)]
    for r in rows:
        r["model"] = model_spr(r["thickness_cm"])
    print(f"{'water':>8}{'SPR Monte Carlo':>18}{'1 s.e.':>9}{'SPR model':>12}{'model / MC':>12}{'MC seconds':>12}")
    for r in rows:
        print(f"{r['thickness_cm']:>6g} cm{r['spr']:>18.3f}{r['spr_se']:>9.3f}{r['model']:>12.3f}"
              f"{r['model'] / r['spr']:>12.2f}{r['seconds']:>12.1f}")
    rate = sum(r["histories"] for r in rows) / sum(r["seconds"] for r in rows)
    print("RESULT " + " ".join(f"spr_{r['thickness_cm']:g}cm={r['spr']:.3f} model_spr_{r['thickness_cm']:g}cm="
                               f"{r['model']:.3f}" for r in rows) + f" histories_per_s={rate:.0f}")


if __name__ == "__main__":
    main()
