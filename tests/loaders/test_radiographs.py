"""Real radiographs loaded in the rendered views' conventions: DICOM DX/CR/XA tags, fit-xray's outputs."""
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pipelines.loaders.augment import Augment
from pipelines.loaders.radiographs import RadiographDataset
from schemas.detector import Geometry


def write_dicom(path, pixels: np.ndarray, modality="DX", photometric="MONOCHROME2", **tags):
    """A DICOM radiograph written by pydicom (uncompressed, explicit VR little endian)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = modality, photometric
    frames = pixels if pixels.ndim == 3 else pixels[None]
    ds.NumberOfFrames = len(frames) if pixels.ndim == 3 else None
    if ds.NumberOfFrames is None:
        del ds.NumberOfFrames
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = frames.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def grid_image(shape, spacing_mm, pitch_mm=10.0):
    """Bright 3-px lines every `pitch_mm` through the centre, on a dark field (wide enough to survive
    resampling to a coarser pitch)."""
    rows, cols = shape
    img = np.full(shape, 100, np.uint16)
    for axis, n in ((0, rows), (1, cols)):
        centre = (n - 1) / 2.0
        k = np.arange(-20, 21) * pitch_mm / spacing_mm + centre
        k = (np.rint(k).astype(int)[:, None] + np.arange(-1, 2)).ravel()
        k = k[(k >= 0) & (k < n)]
        if axis == 0:
            img[k, :] = 4000
        else:
            img[:, k] = 4000
    return img


def test_dx_spacing_distances_and_monochrome1(tmp_path):
    pixels = (np.arange(30 * 40).reshape(30, 40) % 1000 + 10).astype(np.uint16)
    dx = write_dicom(tmp_path / "dx.dcm", pixels, "DX", "MONOCHROME1", ImagerPixelSpacing=[0.139, 0.141],
                     PixelSpacing=[0.12, 0.12], DistanceSourceToDetector=1100.5, DistanceSourceToPatient=950.0)
    cr = write_dicom(tmp_path / "cr.dcm", pixels, "CR", PixelSpacing=[0.2, 0.25])
    xa = write_dicom(tmp_path / "xa.dcm", np.stack([pixels, pixels + 7]), "XA", ImagerPixelSpacing=[0.3, 0.3],
                     DistanceSourceToDetector=1200)
    ds = RadiographDataset([dx, cr, xa])
    a, b, c = ds[0], ds[1], ds[2]
    assert a["spacing_source"] == "ImagerPixelSpacing" and torch.allclose(a["pixel_spacing_mm"].double(),
                                                                         torch.tensor([0.139, 0.141]).double())
    assert a["sdd_mm"] == 1100.5 and a["sod_mm"] == 950.0 and a["modality"] == "DX" and a["inverted"]
    assert a["real_image"].shape == (1, 30, 40) and a["real_image"].dtype == torch.float32
    # MONOCHROME1 reflected in the 16 stored bits' range, whatever the image's own min and max
    assert torch.equal(a["real_image"][0], torch.from_numpy(65535 - pixels.astype(np.float32)))
    assert b["spacing_source"] == "PixelSpacing" and b["pixel_spacing_mm"].tolist() == pytest.approx([0.2, 0.25])
    assert not b["inverted"] and np.isnan(b["sdd_mm"]) and torch.equal(b["real_image"][0], torch.from_numpy(
        pixels.astype(np.float32)))
    assert c["modality"] == "XA" and c["sdd_mm"] == 1200.0 and torch.equal(c["real_image"][0],
                                                                          torch.from_numpy(pixels.astype(np.float32)))


def test_fitted_to_a_stream_geometry_a_10mm_grid_lands_on_the_detector_pitch(tmp_path):
    """A DX at 0.3 mm fitted to a 256 x 0.8 mm detector: lines 10 mm apart land 12.5 px apart, centred."""
    img = grid_image((600, 600), 0.3)
    dx = write_dicom(tmp_path / "grid.dcm", img, "DX", ImagerPixelSpacing=[0.3, 0.3])
    g = Geometry(256, 256, 0.8, 1020.0, 850.0)
    s = RadiographDataset([dx], geometry=g)[0]
    assert s["real_image"].shape == (1, 256, 256) and s["pixel_spacing_mm"].tolist() == [0.8, 0.8]
    assert s["valid"][0, 128, 128] and not s["valid"][0, 0, 0]  # 180 mm of film in a 204.8 mm field
    profile = s["real_image"][0, :, 100].numpy()
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(profile, height=float(profile.min()) + 100, distance=8)
    assert np.allclose(np.diff(peaks), 12.5, atol=1.0)
    centre = peaks[np.argmin(abs(peaks - 127.5))]
    assert abs(centre - 127.5) <= 1.0
    # the training transforms and augmentations take it as they take a view
    out = Augment("xvr", seed=0)(s)
    assert out["real_image"].shape == (1, 256, 256) and torch.isfinite(out["real_image"]).all()


@pytest.mark.parametrize("suffix,bits", [(".mha", 16), (".png", 8), (".png", 16), (".tif", 16)])
def test_fit_xray_outputs_load_back_with_their_spacing(tmp_path, suffix, bits):
    png = tmp_path / "in.png"
    sitk.WriteImage(sitk.GetImageFromArray(grid_image((300, 300), 0.3).astype(np.uint16)), str(png))
    out = tmp_path / f"out{suffix}"
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "fit-xray", str(png), str(out), "--spacing", "0.3",
                          "--size", "200", "--pixel", "0.5", "--bits", str(bits)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    spacing = None if suffix in (".mha", ".tif") else (0.5, 0.5)  # PNG carries no spacing: given
    s = RadiographDataset([out], spacing_mm=spacing)[0]
    assert s["real_image"].shape == (1, 200, 200)
    assert s["pixel_spacing_mm"].tolist() == pytest.approx([0.5, 0.5])
    assert s["real_image"].max() > s["real_image"].min()


def test_missing_files_are_named():
    with pytest.raises(FileNotFoundError, match="nowhere.dcm"):
        RadiographDataset(["nowhere.dcm"])
