"""Fit a real X-ray to the training detector's physical field.

The training detector covers `size * spacing` mm (default 1024 x 0.2 mm = 204.8 mm). An image
covering more is cropped to its central field; one covering less is padded; either is then
resampled to the training grid. The returned mask marks pixels that hold real image data.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates


def field_pixels(field_mm: float, spacing_mm: float) -> int:
    """Pixels of `spacing_mm` that span `field_mm` (rounded to the nearest whole pixel)."""
    return int(round(field_mm / spacing_mm))


def crop_or_pad_axis(image: np.ndarray, valid: np.ndarray, axis: int, n: int,
                     pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Centrally crop or pad `image` (and its valid mask) to `n` pixels along `axis`."""
    size = image.shape[axis]
    if n <= size:
        lo = (size - n) // 2
        index = [slice(None)] * image.ndim
        index[axis] = slice(lo, lo + n)
        return image[tuple(index)], valid[tuple(index)]
    before = (n - size) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (before, n - size - before)
    return np.pad(image, pad, constant_values=pad_value), np.pad(valid, pad, constant_values=False)


def fit_xray(image: np.ndarray, spacing_mm: tuple[float, float], size: tuple[int, int] = (1024, 1024),
             target_spacing_mm: tuple[float, float] = (0.2, 0.2),
             pad_value: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """(image on the training grid, valid-region mask, record of what was done).

    `image` is (rows, columns); spacings are (row, column) in mm.
    """
    image = np.asarray(image, dtype=np.float32)
    valid = np.ones(image.shape, bool)
    steps = {}
    for axis in (0, 1):
        field = size[axis] * target_spacing_mm[axis]
        n = field_pixels(field, spacing_mm[axis])
        steps[f"axis{axis}"] = {"from": image.shape[axis], "to": n,
                                "action": "crop" if n < image.shape[axis] else "pad" if n > image.shape[axis] else "keep"}
        image, valid = crop_or_pad_axis(image, valid, axis, n, pad_value)
    # pixel centres of the training grid in the cropped/padded image's pixel coordinates
    coords = [(np.arange(size[a]) + 0.5) * image.shape[a] / size[a] - 0.5 for a in (0, 1)]
    grid = np.meshgrid(*coords, indexing="ij")
    out = map_coordinates(image, grid, order=1, mode="nearest")
    # valid only where interpolation drew on real pixels alone (no padding blended in)
    mask = map_coordinates(valid.astype(np.float32), grid, order=1, mode="nearest") >= 1.0 - 1e-6
    return out.astype(np.float32), mask, steps
