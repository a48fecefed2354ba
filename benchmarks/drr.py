"""DRR render path ('traversal': the exact voxel-constant integral) vs diffdrr used as its README
shows (Siddon renderer, one call per pose batch) and vs nanodrr's torch backend
(`pip install -e ".[bench]"`; skipped with a note when absent).

Same volumes (the diffdrr chest CT at 1 mm: a 128^3 patch around L1 and the whole CT), same
poses (AP and lateral, unperturbed and perturbed), same attenuation (nanodrr is given the same
linear attenuation volume, its own HU conversion off), same detector. nanodrr's camera is ours:
its extrinsic is our camera-to-world pose turned 180 degrees about the beam (our detector columns
run radiologically, its pixel axes run +x/+y); before anything is timed, a check renders the whole
CT with both and stops unless they agree to 1 % (and prints how far off the unturned pose is).
Errors are relative L2 against the exact integral of the voxel-constant volume, which is what
Siddon's method computes; diffdrr's Siddon is shown against it too (on the whole CT, whose box
holds the detector plane, diffdrr integrates a little past the detector on some rays). Prints
views/s, speed-up, error and peak memory per configuration (extra over the process at entry, and
the process's whole peak), the whole CT with its L1 vertebra channel from the same traversal, and
ends with one machine-readable RESULT line: the 256^2 / 128^3 figures (speed, speed-up and the
worst view's distance between ours and diffdrr's Siddon), `whole_1024_s_per_view`,
`speedup_vs_nanodrr` (ours over nanodrr's fastest tested sampling with error at least ours, whole CT
at 1024^2) and `min_speedup_vs_nanodrr` (the same ratio, worst row).

    python benchmarks/drr.py [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing
import time

import numpy as np
import psutil
import torch
from common import PeakMemory

from pipelines.ingest.example import example_ct_and_labels
from pipelines.ingest.labels import level_id
from pipelines.ops.attenuation import hu_to_mu
from pipelines.ops.camera import AP_REORIENT, base_camera, camera_for_motion
from pipelines.ops.crop import bbox_centre, crop_around, shifted_affine
from pipelines.ops.diffdrr_adapter import default_device
from pipelines.ops.drr import Renderer
from pipelines.ops.orient import volume_from_sitk, voxel_to_world
from pipelines.ops.resample import resample_onto, resample_to_spacing
from pipelines.ops.sampling import pose_to_matrix
from schemas.detector import Geometry

FIELD_MM = 204.8


def load_volumes() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (mu, affine, labels) for the L1 patch and the whole CT."""
    ct, labels_img = example_ct_and_labels()
    ct1 = volume_from_sitk(resample_to_spacing(ct, 1.0, "RAS", "linear", -1024))
    lab1 = volume_from_sitk(resample_onto(labels_img, ct1.affine, ct1.array.shape, "nearest", 0))
    centre = bbox_centre(lab1.array == level_id("L1"))
    patch, start, _ = crop_around(ct1.array, centre, 128, -1024)
    mu = lambda hu: hu_to_mu(hu, 0.0193)  # noqa: E731
    patch_labels, _, _ = crop_around(lab1.array, centre, 128, 0)
    return {
        "vertebra 128^3": (mu(patch), shifted_affine(ct1.affine, start), patch_labels.astype(np.uint8)),
        f"whole CT {'x'.join(map(str, ct1.array.shape))}": (mu(ct1.array), ct1.affine, lab1.array.astype(np.uint8)),
    }


def cameras(affine: np.ndarray, shape: tuple, sod: float) -> np.ndarray:
    centre = voxel_to_world(affine, (np.array(shape) - 1) / 2)[0]
    motion = pose_to_matrix(np.array([0.08, -0.05, 0.1, 6.0, -4.0, 5.0]), centre, "ZXY")
    cams = [base_camera(v, sod, centre) for v in ("AP", "LAT")]
    cams += [camera_for_motion(v, sod, centre, motion) for v in ("AP", "LAT")]
    return np.stack(cams)


def _measure(mu, affine, geometry, cams, batch, repeats, patch_size, labels, threads):
    """Runs in a fresh process: build the renderer, warm up, time `repeats` renders, peak memory.
    With `labels`: the whole and L1-only images from one traversal."""
    import numba

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    renderer = Renderer(mu, affine, geometry, labels=labels)
    if patch_size:
        renderer.drr.patch_size = patch_size  # diffdrr's own detector tiling keeps memory bounded
    render = (lambda c: renderer.render_labelled(c, level_id("L1"))[0]) if labels is not None else \
        (lambda c: renderer.render(c, batch=batch))
    render(cams[:1])  # warm-up (also the first allocation of every buffer)
    best = float("inf")
    with PeakMemory() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            images = render(cams)
            best = min(best, time.perf_counter() - t0)
    return images, len(cams) / best, (mem.mb, mem.main_mb())


NANODRR_SAMPLES = (256, 128, 96)


def nanodrr_extrinsics(cams: np.ndarray, geometry: Geometry) -> np.ndarray:
    """nanodrr's camera-to-world matrices for our cameras (see the module docstring)."""
    turn = np.diag([-1.0 if geometry.reverse_x_axis else 1.0, -1.0, 1.0, 1.0])
    return np.stack([c @ AP_REORIENT @ turn for c in cams])


def nanodrr_renderer(mu, affine, geometry, cams, n_samples, turn=True):
    """render(views) -> (V, H, W) line integrals by nanodrr's torch backend; `turn=False` omits the 180
    degree turn (only to show that the mapping matters)."""
    from nanodrr.data import Subject
    from nanodrr.drr import DRR as NanoDRR
    from torchio import ScalarImage

    subject = Subject.from_images(ScalarImage(tensor=torch.as_tensor(mu)[None], affine=affine), convert_to_mu=False)
    drr = NanoDRR.from_carm_intrinsics(geometry.sdd_mm, geometry.pixel_spacing_mm, geometry.pixel_spacing_mm,
                                       0.0, 0.0, geometry.height, geometry.width)
    extrinsics = nanodrr_extrinsics(cams, geometry) if turn else np.stack([c @ AP_REORIENT for c in cams])
    rt = torch.as_tensor(extrinsics, dtype=torch.float32)

    def render(views):
        with torch.no_grad():
            return torch.cat([drr(subject, rt[v:v + 1], n_samples=n_samples, backend="torch")[:, 0]
                              for v in views]).numpy()
    return render


def check_nanodrr_mapping(mu, affine) -> None:
    """Before timing: nanodrr's images of the whole CT agree with ours when mapped, and not otherwise."""
    geometry = Geometry(96, 96, FIELD_MM / 96, 1020.0, 850.0)
    cams = cameras(affine, mu.shape, geometry.sod_mm)
    ours = Renderer(mu, affine, geometry).render(cams)
    errors = {}
    for turn in (True, False):
        theirs = nanodrr_renderer(mu, affine, geometry, cams, 256, turn)(range(len(cams)))
        errors[turn] = max(float(np.linalg.norm(theirs[v] - ours[v]) / np.linalg.norm(ours[v])) for v in range(len(cams)))
    print(f"nanodrr mapping check (whole CT, 96^2, {len(cams)} views): worst rel. L2 to ours {errors[True]:.2%} as "
          f"mapped, {errors[False]:.0%} without the 180 degree turn")
    if errors[True] > 0.01:
        raise SystemExit("nanodrr's geometry does not match ours: its rows would not be comparable")


def _measure_nanodrr(mu, affine, geometry, cams, n_samples, repeats, threads):
    """Runs in a fresh process: nanodrr's torch backend on the same volume, detector and cameras."""
    torch.set_num_threads(threads)
    render = nanodrr_renderer(mu, affine, geometry, cams, n_samples)
    render([0])
    best = float("inf")
    with PeakMemory() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            images = render(range(len(cams)))
            best = min(best, time.perf_counter() - t0)
    return images, len(cams) / best, (mem.mb, mem.main_mb())


def in_fresh_process(measure, *args):
    """Each configuration in its own spawned process, so freed memory of one cannot hide another's peak."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(measure, (*args, torch.get_num_threads()))


def timed(mu, affine, geometry, cams, batch, repeats, patch_size=None, labels=None):
    return in_fresh_process(_measure, mu, affine, geometry, cams, batch, repeats, patch_size, labels)


def rel_l2(images: np.ndarray, reference: np.ndarray) -> float:
    """Worst view's relative L2 distance."""
    return max(float(np.linalg.norm(i - r) / np.linalg.norm(r)) for i, r in zip(images, reference))


def timed_nanodrr(mu, affine, geometry, cams, n_samples, repeats):
    return in_fresh_process(_measure_nanodrr, mu, affine, geometry, cams, n_samples, repeats)


def run(quick: bool) -> dict:
    torch.set_num_threads(psutil.cpu_count(logical=False) or 2)
    device = default_device()
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, torch {torch.__version__}")
    volumes = load_volumes()
    sizes = (256,) if quick else (256, 1024)
    rows, result, nano_rows = [], {}, []
    try:
        import nanodrr  # noqa: F401
        have_nanodrr = True
    except ImportError:
        have_nanodrr = False
    if have_nanodrr:
        mu, affine, _ = next(v for k, v in volumes.items() if k.startswith("whole"))
        check_nanodrr_mapping(mu, affine)
    min_ratio = float("inf")
    for name, (mu, affine, labels) in volumes.items():
        for size in sizes:
            geo = dict(height=size, width=size, pixel_spacing_mm=FIELD_MM / size, sdd_mm=1020.0, sod_mm=850.0)
            cams = cameras(affine, mu.shape, 850.0)
            whole = name.startswith("whole")
            ours = Geometry(**geo, renderer="traversal")
            repeats = 1 if size > 256 else 3
            exact, ours_vps, (ours_mb, ours_rss) = timed(mu, affine, ours, cams, batch=len(cams), repeats=repeats)
            _, both_vps, (both_mb, _) = timed(mu, affine, ours, cams, len(cams), repeats, labels=labels)
            base_note = ""
            if size > 256 and whole:
                base_vps, base_mb, err = float("nan"), float("nan"), float("nan")
                base_note = "diffdrr skipped: Siddon needs ~4 GB per 1024^2 view of this volume"
            else:
                n_base = len(cams) if size == 256 else 1  # 1024^2 Siddon: one view (minutes otherwise)
                base = Geometry(**geo, renderer="siddon")
                ref, base_vps, (base_mb, _) = timed(mu, affine, base, cams[:n_base], batch=n_base, repeats=1,
                                                    patch_size=256 if size > 256 else None)
                err = rel_l2(ref, exact[:n_base])
            rows.append((name, size, base_vps, err, ours_vps, ours_vps / base_vps, both_vps, base_mb, ours_mb, ours_rss,
                         base_note))
            # ours is the exact integral, so every nanodrr sampling has at least its error: the fair
            # comparison is nanodrr's fastest row
            fastest_fair = None
            for n in NANODRR_SAMPLES if have_nanodrr else ():
                nimg, n_vps, (n_mb, _) = timed_nanodrr(mu, affine, ours, cams, n, repeats)
                n_err = rel_l2(nimg, exact)
                nano_rows.append((name, size, n, n_vps, n_err, n_mb, ours_vps / n_vps))
                fastest_fair = max(fastest_fair or 0.0, n_vps)
            if fastest_fair:
                min_ratio = min(min_ratio, ours_vps / fastest_fair)
                if size == 1024 and whole:
                    result["speedup_vs_nanodrr"] = ours_vps / fastest_fair
            if size == 256 and not whole:
                result = {"views_per_s": ours_vps, "speedup_vs_diffdrr": ours_vps / base_vps,
                          "diffdrr_rel_error": err, **result}
            if size == 1024 and whole:
                result["peak_mem_mb_1024_whole_ct"] = ours_rss
                result["whole_1024_s_per_view"] = 1.0 / ours_vps
                result["whole_and_vertebra_1024_s_per_view"] = 1.0 / both_vps
    if have_nanodrr:
        result["min_speedup_vs_nanodrr"] = min_ratio
    header = (f"{'volume':24s} {'detector':>9s} {'diffdrr v/s':>11s} {'its L2':>8s} {'ours v/s':>9s} {'speed-up':>8s} "
              f"{'+vertebra':>9s} {'diffdrr MB':>10s} {'ours +MB':>8s} {'ours RSS':>8s}")
    print("errors: relative L2 (worst view) against the exact voxel-constant integral, i.e. ours")
    print(header)
    print("-" * len(header))
    for name, size, bv, err, ov, sp, both, bmb, omb, rss, note in rows:
        print(f"{name:24s} {size:>5d}^2  {bv:11.2f} {err:8.4%} {ov:9.2f} {sp:8.1f} {both:9.2f} {bmb:10.0f} {omb:8.0f} "
              f"{rss:8.0f}  {note}")
    if nano_rows:
        print(f"\n{'volume':24s} {'detector':>9s} {'nanodrr n':>9s} {'v/s':>7s} {'rel L2':>8s} {'+MB':>7s} {'ours/nanodrr':>12s}")
        for name, size, n, vps, nerr, mb, ratio in nano_rows:
            print(f"{name:24s} {size:>5d}^2  {n:9d} {vps:7.3f} {nerr:8.4%} {mb:7.0f} {ratio:12.2f}")
    else:
        print("nanodrr: not installed (pip install -e '.[bench]'); its rows are skipped")
    if device.type != "cuda":
        print("GPU: not present on this machine; CUDA is used automatically when available.")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256^2 only")
    result = run(ap.parse_args().quick)
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
