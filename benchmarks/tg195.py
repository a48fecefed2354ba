"""The photon Monte Carlo (`pipelines.physics.montecarlo`) against AAPM TG-195's radiography case (case 2):
energy imparted in a 39 x 39 x 20 cm tissue box and in its nine 3 cm VOIs, per history, at 56.4 keV,
against the report's values (benchmarks/reference/tg195_case2.json); and its primary at the detector
against Beer-Lambert through the box.

    python benchmarks/tg195.py [--histories N]

The 120 kVp beam (TG-195's RQR-9) is regenerated with spekpy at its kVp and anode angle, the aluminium
solved for its stated HVL; its mean energy is printed beside the report's. Ends with
`RESULT mono_total_rel_error=... mono_voi_max_rel_error=... mono_primary_rel_error=... poly_... histories_per_s=...`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipelines.physics.montecarlo import (
    Detector,
    Material,
    Tables,
    box_phantom,
    cube_sum,
    simulate,
    standard_error,
)

REFERENCE = Path(__file__).parent / "reference" / "tg195_case2.json"


def case2(reference: dict):
    """(tables, phantom, detector, field half-size) of TG-195 case 2 from its reference file."""
    tissue = reference["materials"]["tissue"]
    materials = (Material.nist(reference["materials"]["air"]["nist"]),
                 Material("tg195_tissue", {int(z): w for z, w in tissue["mass_percent"].items()},
                          tissue["density_g_cm3"]))
    g = reference["geometry_cm"]
    tables = Tables(materials, 150.0)
    phantom = box_phantom(tuple(g["box"]["size"]), tuple(g["box"]["centre"]), 0.5, materials[1].density)
    detector = Detector(g["detector_z"], (78, 78), 0.5)
    return tables, phantom, detector, (19.5, 19.5)


def rqr9_spectrum(spec: dict) -> tuple[np.ndarray, np.ndarray, float, float]:
    """TG-195's 120 kVp beam from spekpy: its kVp and anode angle, aluminium solved for its HVL.
    Returns (energies keV, weights, mm Al, mean energy keV)."""
    import spekpy
    from scipy.optimize import brentq

    def beam(al_mm: float):
        s = spekpy.Spek(kvp=float(spec["kvp"]), th=float(spec["anode_angle_deg"]), dk=0.5)
        s.filter("Al", al_mm)
        return s

    al = brentq(lambda t: beam(t).get_hvl1() - spec["hvl_mm_al"], 1.0, 8.0, xtol=1e-4)
    s = beam(al)
    energies, weights = s.get_spectrum()
    return np.asarray(energies), np.asarray(weights), al, float(s.get_emean())


def run_case2(histories: int, beam: str = "56.4 keV", seed: int = 0) -> dict:
    """TG-195 case 2 for `beam` ('56.4 keV' or '120 kVp'): the Monte Carlo's figures beside the report's."""
    reference = json.loads(REFERENCE.read_text())
    tables, phantom, detector, half = case2(reference)
    extra = {}
    if beam.endswith("kVp"):
        energies, weights, al, mean = rqr9_spectrum(reference["spectra"][beam])
        extra = {"al_mm": al, "mean_energy": mean, "mean_energy_ref": reference["spectra"][beam]["mean_energy_kev"]}
    else:
        energies, weights = np.array([float(beam.split()[0])]), np.array([1.0])
    start = time.perf_counter()
    result = simulate(tables, phantom, detector, histories, half, (energies, weights), seed)
    seconds = time.perf_counter() - start
    ref = reference["results_ev_per_history"][beam]
    centre = np.array(reference["geometry_cm"]["box"]["centre"])
    size = reference["vois_cm"]["size"]
    vois = {k: 1000 * cube_sum(result.imparted, phantom, centre + np.array(c), size)
            for k, c in reference["vois_cm"]["centres_from_box_centre"].items()}
    counts = np.array([b[0] for b in result.batches])
    voi_se = {k: 1000 * standard_error([cube_sum(b[1], phantom, centre + np.array(c), size) for b in result.batches],
                                       counts) for k, c in reference["vois_cm"]["centres_from_box_centre"].items()}
    total_se = 1000 * standard_error([b[1].sum() for b in result.batches], counts)
    # primary energy fluence over the central 10 x 10 cm against Beer-Lambert along each pixel's ray:
    # 20 cm of tissue and 160 cm of air along the axis, longer by 1/cos off it
    p = weights / weights.sum()
    tissue_mu = tables.materials[1].mass_coefficients(energies).sum(0) * tables.materials[1].density
    air_mu = tables.materials[0].mass_coefficients(energies).sum(0) * tables.materials[0].density
    n = detector.shape[0]
    centres = (np.arange(n) - n / 2 + 0.5) * detector.pitch
    xx, yy = np.meshgrid(centres, centres)
    r = np.sqrt(xx ** 2 + yy ** 2 + detector.distance ** 2)
    cos = detector.distance / r
    solid = detector.pitch ** 2 * cos / r ** 2
    field = 4 * np.arcsin((half[0] / detector.distance) ** 2 / (1 + (half[0] / detector.distance) ** 2))
    path = np.exp(-(tissue_mu * 20.0 + air_mu * 160.0)[None, None, :] / cos[..., None]) @ (p * energies)
    centre = np.abs(xx) < 5.0
    centre &= np.abs(yy) < 5.0
    expected = float((solid / field * path)[centre].sum())
    primary = float(result.fluence_primary[centre].sum())
    return {"total": 1000 * result.imparted.sum(), "total_ref": ref["total_body"],
            "total_range": ref["total_body_range"], "vois": vois, "vois_ref": ref["vois"], "primary": primary,
            "total_se": total_se, "vois_se": voi_se,
            "primary_expected": expected, "seconds": seconds, "histories": histories, **extra}


def report(r: dict, beam: str) -> tuple[float, float, float]:
    """Print one beam's table; (total, worst VOI, primary) relative errors."""
    total_err = r["total"] / r["total_ref"] - 1
    print(f"\nTG-195 case 2, {beam}, {r['histories']:,} histories in {r['seconds']:.1f} s"
          + (f" (spekpy: {r['al_mm']:.3f} mm Al for the HVL; mean energy {r['mean_energy']:.2f} keV, "
             f"TG-195 {r['mean_energy_ref']:g})" if "al_mm" in r else ""))
    print(f"{'eV/history':<12}{'Monte Carlo':>14}{'(1 s.e.)':>10}{'TG-195':>12}{'difference':>12}")
    print(f"{'total body':<12}{r['total']:>14.1f}{r['total_se'] / r['total']:>10.2%}{r['total_ref']:>12.1f}"
          f"{total_err:>12.2%}   (codes: {r['total_range'][0]:g}..{r['total_range'][1]:g})")
    errors = []
    for k, ref in r["vois_ref"].items():
        err = r["vois"][k] / ref - 1
        errors.append(abs(err))
        print(f"{'VOI ' + k:<12}{r['vois'][k]:>14.3f}{r['vois_se'][k] / r['vois'][k]:>10.2%}{ref:>12.3f}{err:>12.2%}")
    primary_err = r["primary"] / r["primary_expected"] - 1
    print(f"primary energy fluence, central 10 x 10 cm: {r['primary']:.5e} keV/history, Beer-Lambert "
          f"{r['primary_expected']:.5e} ({primary_err:+.2%})")
    return total_err, max(errors), primary_err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=20_000_000)
    args = parser.parse_args()
    run_case2(10_000)  # compile
    figures = {}
    for beam, key in (("56.4 keV", "mono"), ("120 kVp", "poly")):
        r = run_case2(args.histories, beam)
        figures[key] = report(r, beam) + (r["histories"] / r["seconds"],)
    print("RESULT " + " ".join(
        f"{key}_total_rel_error={f[0]:.4f} {key}_voi_max_rel_error={f[1]:.4f} {key}_primary_rel_error={f[2]:.4f}"
        for key, f in figures.items()) + f" histories_per_s={figures['mono'][3]:.0f}")


if __name__ == "__main__":
    main()
