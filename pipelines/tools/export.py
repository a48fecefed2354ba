"""`spineforge export x2ct DIR OUT`: the folder layout X2CT-GAN reads.

OUT/<sample>/ct_xray_data.h5 with `ct`, `xray1`, `xray2`, `ori_size`, `spacing`, and OUT/train.txt,
OUT/test.txt (and val.txt when the version has a validation split) listing the sample folders.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.errors import ExportError
from pipelines.io.shards import PublishedVersion, atomic_h5
from schemas.layout import X2CT_LIST_SUFFIX, X2CT_SAMPLE_FILE
from schemas.manifest import X2CT
from schemas.shard_layout import product_datasets

ALWAYS_LISTED = ("train", "test")  # X2CT-GAN reads these two lists; val only when there is one


def export_x2ct(version_dir: Path, out: Path) -> dict:
    version = PublishedVersion(Path(version_dir))
    out = Path(out)
    rows = version.samples(X2CT)
    if rows.empty:
        raise ExportError(f"{version_dir} holds no x2ct samples (is the x2ct product enabled in its config?)")
    keys = [spec.key for spec in product_datasets(X2CT, version.config)]
    out.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    for row, group in version.iter_groups(rows):
        folder = out / row.sample_id
        folder.mkdir(exist_ok=True)
        with atomic_h5(folder / X2CT_SAMPLE_FILE) as dst:
            for key in keys:
                dst.create_dataset(key, data=group[key][()])
        lists.setdefault(row.split, []).append(row.sample_id)
    written = {}
    for split in (*ALWAYS_LISTED, *sorted(set(lists) - set(ALWAYS_LISTED))):
        names = sorted(lists.get(split, []))
        (out / f"{split}{X2CT_LIST_SUFFIX}").write_text("".join(f"{s}\n" for s in names))
        written[split] = len(names)
    return {"out": str(out), "samples": int(len(rows)), "lists": written}
