"""`spineforge export x2ct DIR OUT`: the folder layout X2CT-GAN reads.

OUT/<sample>/ct_xray_data.h5 with `ct`, `xray1`, `xray2`, `ori_size`, `spacing`, and OUT/train.txt,
OUT/test.txt (and val.txt when the version has a validation split) listing the sample folders.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import pandas as pd

from pipelines.io.publish import read_card
from pipelines.io.shards import atomic_h5
from schemas.manifest import MANIFEST_PARQUET, SHARD_DIR

X2CT_KEYS = ("ct", "xray1", "xray2", "ori_size", "spacing")
X2CT_FILE = "ct_xray_data.h5"


def export_x2ct(version_dir: Path, out: Path) -> dict:
    version_dir, out = Path(version_dir), Path(out)
    read_card(version_dir)  # a published version, or a clear error
    manifest = pd.read_parquet(version_dir / MANIFEST_PARQUET)
    rows = manifest[manifest["product"] == "x2ct"].sort_values("sample_id")
    if rows.empty:
        raise ValueError(f"{version_dir} holds no x2ct samples")
    out.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    for shard, grp in rows.groupby("shard", sort=True):
        with h5py.File(version_dir / SHARD_DIR / shard, "r") as src:
            for row in grp.itertuples():
                folder = out / row.sample_id
                folder.mkdir(exist_ok=True)
                with atomic_h5(folder / X2CT_FILE) as dst:
                    for key in X2CT_KEYS:
                        dst.create_dataset(key, data=src[row.key][key][()])
                lists.setdefault(row.split, []).append(row.sample_id)
    written = {}
    for split in ("train", "test", "val"):
        if split in lists or split in ("train", "test"):
            path = out / f"{split}.txt"
            path.write_text("".join(f"{s}\n" for s in lists.get(split, [])))
            written[split] = len(lists.get(split, []))
    return {"out": str(out), "samples": int(len(rows)), "lists": written}
