"""DICOM series in a folder: which series is the CT (localizers and other series set aside, and said
so), and that its slices are all there, before SimpleITK reads it as one volume."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import VolumeReadError
from schemas.manifest import QC

# DICOM tags read from each series' first file
MODALITY, IMAGE_TYPE, DESCRIPTION = "0008|0060", "0008|0008", "0008|103e"
POSITION, ORIENTATION = "0020|0032", "0020|0037"

LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")

SLICE_GAP_TOLERANCE = 0.1  # a gap more than 10 % off the typical slice step means missing slices

@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]
    modality: str
    image_type: str
    description: str

    @property
    def is_localizer(self) -> bool:
        text = f"{self.image_type} {self.description}".upper()
        return any(word in text for word in LOCALIZER_WORDS)

    def describe(self) -> str:
        kind = f"{self.modality or 'no modality'}{' localizer' if self.is_localizer else ''}"
        label = f" '{self.description}'" if self.description else ""
        return f"{kind}{label}, {len(self.files)} file(s), series {self.uid}"

def _tag(reader, tag: str, index: int | None = None) -> str:
    if index is None:
        return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
    return reader.GetMetaData(index, tag).strip() if reader.HasMetaDataKey(index, tag) else ""

def dicom_series(folder: Path) -> list[DicomSeries]:
    """Every series in a folder (split by SeriesInstanceUID, any file names), with its first file's tags."""
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        header = image_header(Path(files[0]))
        out.append(DicomSeries(uid, files, _tag(header, MODALITY), _tag(header, IMAGE_TYPE), _tag(header, DESCRIPTION)))
    return out

def choose_ct_series(folder: Path, series: list[DicomSeries]) -> tuple[DicomSeries, list[str]]:
    """The CT volume of a DICOM folder -- the largest CT series that is not a localizer/scout -- and a
    note naming every series left out. VolumeReadError('no_ct_series') when there is none."""
    if not series:
        raise VolumeReadError(folder, "folder holds no DICOM series")
    volumes = [s for s in series if s.modality.upper() == "CT" and not s.is_localizer and len(s.files) > 1]
    if not volumes:
        found = "; ".join(s.describe() for s in series)
        raise VolumeReadError(folder, f"no CT volume among its DICOM series ({found})", code=QC.NO_CT_SERIES)
    chosen = max(volumes, key=lambda s: (len(s.files), s.uid))
    others = [s for s in series if s is not chosen]
    notes = [f"DICOM folder {folder.name}: used {chosen.describe()}; not used: "
             + "; ".join(s.describe() for s in others)] if others else []
    return chosen, notes

def check_slices(folder: Path, reader: sitk.ImageSeriesReader, n: int) -> None:
    """Slices of one orientation, evenly spaced along it: else 'mixed_orientation' / 'missing_slices'."""
    orientations = {_tag(reader, ORIENTATION, i) for i in range(n)}
    if len(orientations) > 1:
        raise VolumeReadError(folder, f"slices of {len(orientations)} different orientations in one series",
                              code=QC.MIXED_ORIENTATION)
    if n < 3 or not orientations or not all(_tag(reader, POSITION, i) for i in range(n)):
        return
    cosines = np.array([float(v) for v in orientations.pop().split("\\")], dtype=float)
    normal = np.cross(cosines[:3], cosines[3:6])
    positions = np.array([[float(v) for v in _tag(reader, POSITION, i).split("\\")] for i in range(n)])
    steps = np.abs(np.diff(positions @ normal))
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > SLICE_GAP_TOLERANCE * typical):
        worst = float(steps.max())
        raise VolumeReadError(folder, f"uneven slice positions: steps {steps.min():.2f}-{worst:.2f} mm where "
                              f"{typical:.2f} mm is typical (about {max(round(worst / typical) - 1, 1) if typical else 0} "
                              "slice(s) missing, or repeated slices)", code=QC.MISSING_SLICES)

def read_dicom_folder(path: Path) -> tuple[sitk.Image, list[str]]:
    """The CT series of a DICOM folder as one volume (slices ordered by position), with notes."""
    chosen, notes = choose_ct_series(path, dicom_series(path))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    check_slices(path, reader, len(chosen.files))
    return image, notes


def image_header(path: Path) -> sitk.ImageFileReader:
    """A file's header (geometry and meta-data) without its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(Path(path), "unreadable header") from exc
    return reader
