"""The demo's four drr samples, one view each: exact (top) and realistic (bottom) (docs/img/physics_demo.png).

Titles give each realistic view's drawn kV, mAs, collimation and grid; instruments are outlined in red
from `instrument_mask`.

    python docs/img/physics_demo.py VERSION_DIR   (the demo's version, e.g. out/demo/v1)
"""
import json
import sys
from pathlib import Path

import h5py
import matplotlib.pyplot as plt

from pipelines.loaders import DRRDataset
from schemas.manifest import Col
from schemas.shard_layout import Attr

plt.switch_backend("Agg")

ds = DRRDataset(sys.argv[1])
fig, axes = plt.subplots(2, 4, figsize=(13, 7))
for col in range(4):
    item, row = ds[col], ds.rows[col]
    with h5py.File(ds.version.shard_path(row[Col.SHARD]), "r") as h5:  # the view's recorded physics
        physics = json.loads(h5[row[Col.KEY]].attrs[Attr.XRAY])["physics"]
    grid = (f"grid {physics['grid_ratio']:.1f}:1, {physics['grid_lines_per_cm']:.0f}/cm" if physics["grid"]
            else "no grid")
    mask = item["instrument_mask"][0].numpy()
    for row, (name, img) in enumerate([("exact", item["drr"][0].numpy()), ("realistic", item["drr_xray"][0].numpy())]):
        ax = axes[row, col]
        ax.imshow(img, cmap="gray")
        if row == 1 and mask.any():
            ax.contour(mask > 0, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.set_ylabel(name)
        title = (f"{item['sample_id'].split('__')[-1]} {item['view_names'][0]}" if row == 0 else
                 f"{physics['kv']} kV, {physics['mas']:.2f} mAs,\n{physics['collimation']}, {grid}")
        ax.set_title(title, fontsize=8)
fig.tight_layout()
out = Path(__file__).with_name("physics_demo.png")
fig.savefig(str(out), dpi=70)
print("wrote", out)
