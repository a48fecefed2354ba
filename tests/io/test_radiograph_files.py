"""Real DICOM radiographs as they come (pydicom-data's CR, and pydicom's MR/NM/US files in every encoding):
spacing never guessed, the same values whichever encoding and decoder carried them, one clear error per
broken file, and `fit-xray` files that follow the umask."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from pipelines.errors import VolumeReadError
from pipelines.io.radiographs import SpacingUnknownError, read_radiograph
from pipelines.loaders.radiographs import RadiographDataset

DECODERS = ("pydicom", "pylibjpeg", "gdcm", "pillow")  # pydicom's decoding plugins


def data(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is not in pydicom's test data (pydicom-data installed?)"
    return path


def by_every_decoder(path: str, **kwargs) -> dict[str, np.ndarray]:
    """The file's values as each of pydicom's plugins that can decode its transfer syntax gives them."""
    out = {}
    for decoder in DECODERS:
        try:
            out[decoder] = read_radiograph(path, decoder=decoder, **kwargs).image
        except (ValueError, VolumeReadError) as exc:
            if "no pixel decoder" not in str(exc) and "cannot decode" not in str(exc):
                raise
    return out


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    return float(20 * np.log10(peak / np.sqrt(np.mean((a.astype(np.float64) - b) ** 2))))


# (file, another encoding of the same image decoded as the reference, the fewest decoders that must agree)
LOSSLESS = [
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", 3), ("RG3_J2KR.dcm", "RG3_UNCR.dcm", 3),
    ("MR_small_implicit.dcm", "MR_small.dcm", 1), ("MR_small_bigendian.dcm", "MR_small.dcm", 1),
    ("MR_small_RLE.dcm", "MR_small.dcm", 2), ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", 2),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", 3),
    ("emri_small_RLE.dcm", "emri_small.dcm", 2), ("emri_small_big_endian.dcm", "emri_small.dcm", 1),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 2),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", 3),
]
# (lossy file, the set's own decode of it (UNCI), the lossless original (UNCR), the least PSNR in dB
# against the original over the declared value range)
LOSSY = [("RG1_J2KI.dcm", "RG1_UNCI.dcm", "RG1_UNCR.dcm", 50.0), ("RG3_J2KI.dcm", "RG3_UNCI.dcm", "RG3_UNCR.dcm", 50.0),
         ("MR2_J2KI.dcm", "MR2_UNCI.dcm", "MR2_UNCR.dcm", 40.0)]


@pytest.mark.parametrize("name,reference,decoders", LOSSLESS)
def test_lossless_encodings_give_the_reference_values_bit_for_bit_by_every_decoder(name, reference, decoders):
    given = {"spacing_mm": (0.5, 0.5), "frame": None}  # emri_small states no spacing
    expected = read_radiograph(data(reference), **given).image
    decoded = by_every_decoder(data(name), **given)
    assert len(decoded) >= decoders, f"{name}: only {sorted(decoded)} decode it"
    for decoder, values in decoded.items():
        assert values.shape == expected.shape and np.array_equal(values, expected), (name, decoder)


@pytest.mark.parametrize("name,own_decode,original,least_db", LOSSY)
def test_lossy_encodings_match_their_own_decode_and_stay_within_their_error(name, own_decode, original, least_db):
    read = read_radiograph(data(name), spacing_mm=(0.2, 0.2))
    assert read.lossy and read.transfer_syntax == "JPEG 2000 Image Compression"
    decoded = by_every_decoder(data(name), spacing_mm=(0.2, 0.2))
    assert len(decoded) >= 3
    reference = read_radiograph(data(own_decode), spacing_mm=(0.2, 0.2)).image
    for decoder, values in decoded.items():
        assert np.array_equal(values, reference), decoder
    lossless = read_radiograph(data(original), spacing_mm=(0.2, 0.2))
    lo, hi = lossless.value_range
    assert psnr(read.image, lossless.image, hi - lo) >= least_db
    assert not np.array_equal(read.image, lossless.image)  # it is lossy


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm",
                                  "RG3_UNCR.dcm", "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm"])
def test_computed_radiographs_without_a_spacing_are_refused_and_read_when_it_is_given(name):
    with pytest.raises(SpacingUnknownError) as caught:
        read_radiograph(data(name))
    message = str(caught.value)
    assert name in message and "\n" not in message
    for tag in ("ImagerPixelSpacing", "PixelSpacing", "NominalScannedPixelSpacing"):
        assert tag in message
    if name.startswith("RG1"):
        assert "PixelSpacing '[0.000, 0.000]'" in message  # a zero spacing is not a spacing
    r = read_radiograph(data(name), spacing_mm=(0.175, 0.175))
    assert r.spacing_source == "given" and r.spacing_mm == (0.175, 0.175)
    assert r.modality == "CR" and r.photometric == "MONOCHROME1" and r.inverted
    assert r.image.dtype == np.float32 and r.image.shape == ((1955, 1841) if name.startswith("RG1") else (1760, 1760))
    if name.startswith("RG1"):  # chest CR: the mediastinum and spine come out brighter than the lungs
        h, w = r.image.shape
        band = [float(r.image[int(h * 0.3):int(h * 0.6), int(w * f) - 20:int(w * f) + 20].mean()) for f in (0.3, 0.5, 0.7)]
        assert band[1] > 1.2 * max(band[0], band[2])
        assert r.sdd_mm == 1996.0 and r.sod_mm is None and "no source-to-isocentre distance in the header" in r.notes


def test_deflate_and_jpeg_baseline_encodings_read_as_their_source(tmp_path):
    """Deflated explicit VR (pydicom writes it) and JPEG baseline (Pillow's bitstream in a DICOM) files:
    the deflated one equals its source; every decoder of the JPEG one gives Pillow's own decode."""
    ds = dcmread(data("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert np.array_equal(read_radiograph(tmp_path / "deflated.dcm").image,
                          read_radiograph(data("MR_small.dcm")).image)
    assert read_radiograph(data("image_dfl.dcm"), spacing_mm=(1, 1)).transfer_syntax.startswith("Deflated")

    import io

    from PIL import Image
    from pydicom.encaps import encapsulate

    source = read_radiograph(data("RG3_UNCR.dcm"), spacing_mm=(1, 1)).image[::8, ::8]
    grey = np.round(source / source.max() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=90)
    ds = dcmread(data("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = grey.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.save_as(tmp_path / "baseline.dcm", enforce_file_format=True)
    pillow = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
    decoded = by_every_decoder(str(tmp_path / "baseline.dcm"))
    assert len(decoded) >= 2
    for decoder, values in decoded.items():
        assert np.abs(values - pillow).max() <= 1.0, decoder  # IDCT rounding between libraries
    assert read_radiograph(tmp_path / "baseline.dcm").lossy


def test_12_bit_jpeg_extended_lossless_jpeg_and_near_lossless_jpeg_ls_decode():
    extended = read_radiograph(data("JPGExtended.dcm"))
    assert extended.image.shape == (1024, 256) and extended.lossy and extended.image.max() > 200
    for name in ("JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEGLSNearLossless_16.dcm"):
        decoded = by_every_decoder(data(name), spacing_mm=(0.3, 0.3))
        assert len(decoded) >= 2 and all(np.array_equal(v, decoded["gdcm"]) for v in decoded.values()), name


def test_frames_one_or_all_and_the_headers_lookup_tables(tmp_path):
    every = read_radiograph(data("emri_small.dcm"), spacing_mm=(1, 1), frame=None)
    assert every.image.shape == (10, 64, 64) and every.frames == 10 and every.frame is None
    third = read_radiograph(data("emri_small_RLE.dcm"), spacing_mm=(1, 1), frame=3)
    assert third.frame == 3 and np.array_equal(third.image, every.image[3])
    assert np.array_equal(read_radiograph(data("emri_small.dcm"), spacing_mm=(1, 1), frame=-1).image, every.image[9])
    with pytest.raises(VolumeReadError, match="frame 10 asked for; the file has 10"):
        read_radiograph(data("emri_small.dcm"), spacing_mm=(1, 1), frame=10)
    # a Modality LUT Sequence (not a rescale) maps stored values: independent of pydicom, by the table itself
    ds = dcmread(data("mlut_18.dcm"))
    lut = ds.ModalityLUTSequence[0]
    first, table = int(lut.LUTDescriptor[1]), np.asarray(lut.LUTData)
    stored = ds.pixel_array.astype(np.int64)
    expected = table[np.clip(stored - first, 0, len(table) - 1)]
    assert np.array_equal(read_radiograph(data("mlut_18.dcm"), spacing_mm=(1, 1)).image, expected)
    # the VOI LUT where asked, and only then
    voi = read_radiograph(data("vlut_04.dcm"), spacing_mm=(1, 1), voi=True)
    plain = read_radiograph(data("vlut_04.dcm"), spacing_mm=(1, 1))
    assert voi.voi == "VOI LUT Sequence" and not np.array_equal(voi.image, plain.image)
    ds = dcmread(data("MR_small.dcm"))
    for tag in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
        ds.pop(tag, None)
    ds.save_as(tmp_path / "no-window.dcm")
    with pytest.raises(VolumeReadError, match="no VOI LUT or window"):
        read_radiograph(tmp_path / "no-window.dcm", voi=True)
    # Presentation LUT Shape INVERSE on a MONOCHROME2 image: reflected in the declared range
    ds = dcmread(data("MR_small.dcm"))
    ds.PresentationLUTShape = "INVERSE"
    ds.save_as(tmp_path / "inverse.dcm")
    inverse, source = read_radiograph(tmp_path / "inverse.dcm"), read_radiograph(data("MR_small.dcm"))
    lo, hi = source.value_range
    assert inverse.inverted and np.array_equal(inverse.image, np.float32(lo + hi) - source.image)


def _wrong_size(tmp_path, rows):
    ds = dcmread(data("MR_small.dcm"))
    ds.Rows = rows
    ds.save_as(tmp_path / f"rows{rows}.dcm")
    return str(tmp_path / f"rows{rows}.dcm")


BROKEN = [  # (file or maker, spacing, what the one-line error says)
    (lambda tmp: data("MR_truncated.dcm"), None, "broken pixel data: The number of bytes of pixel data is less"),
    (lambda tmp: _wrong_size(tmp, 80), None, "less than expected"),
    (lambda tmp: _wrong_size(tmp, 32), None, "pixel data is 8192 bytes, the header's 32x64x1 at 16 bits needs 4096"),
    (lambda tmp: data("emri_small_jpeg_2k_lossless_too_short.dcm"), (1, 1), "no pixel data in the DICOM file"),
    (lambda tmp: data("JPEG-lossy.dcm"), (1, 1), "cannot decode its JPEG Extended (Process 2 and 4) pixel data"),
    (lambda tmp: data("SC_rgb.dcm"), None, "a colour image (RGB, channels differ)"),
    (lambda tmp: data("OBXXXX1A.dcm"), (1, 1), "PhotometricInterpretation PALETTE COLOR is not a grey image"),
    (lambda tmp: data("RG3_J2KI.dcm"), None, "no usable pixel spacing in the DICOM header"),
]


@pytest.mark.parametrize("make,spacing,says", BROKEN, ids=["truncated", "rows-too-many", "rows-too-few",
                                                             "no-pixel-data", "corrupt-jpeg", "rgb", "palette",
                                                             "no-spacing"])
def test_each_broken_file_gets_one_clear_error(tmp_path, make, spacing, says):
    path = make(tmp_path)
    with pytest.raises(VolumeReadError) as caught:
        read_radiograph(path, spacing_mm=spacing)
    message = str(caught.value)
    assert says in message and os.path.basename(path) in message and "\n" not in message


def test_a_folder_reports_what_it_leaves_out_and_refuses_when_nothing_is_usable(tmp_path):
    usable, refused = tmp_path / "usable", tmp_path / "refused"
    usable.mkdir(), refused.mkdir()
    for name in ("RG3_J2KI.dcm", "MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"):
        (usable / name).write_bytes(open(data(name), "rb").read())
    with pytest.warns(UserWarning, match="1 of 3 radiograph"):
        ds = RadiographDataset(usable)
    assert [p.name for p in ds.paths] == ["MR_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"]
    with pytest.raises(VolumeReadError, match="colour image"):  # only its pixels tell a colour from a grey RGB
        ds[1]
    report = ds.report.set_index(ds.report["path"].map(lambda p: os.path.basename(p)))
    assert "no usable pixel spacing" in report.loc["RG3_J2KI.dcm", "reason"]
    assert report.loc["MR_small.dcm", "spacing_source"] == "PixelSpacing"
    (refused / "RG1_J2KR.dcm").write_bytes(open(data("RG1_J2KR.dcm"), "rb").read())
    with pytest.raises(ValueError, match="no usable radiograph among 1 file.*RG1_J2KR.dcm: no usable pixel spacing"):
        RadiographDataset(refused)
    given = RadiographDataset(refused, spacing_mm=(0.2, 0.2))[0]
    assert given["spacing_source"] == "given" and given["real_image"].shape == (1, 1955, 1841)


def _fit_xray(tmp_path, *args, umask=0o022):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "fit-xray", *args], capture_output=True,
                          text=True, cwd=tmp_path, umask=umask)


def test_fit_xray_refuses_an_unknown_spacing_and_records_a_given_one_in_files_that_follow_the_umask(tmp_path):
    source = data("RG1_J2KI.dcm")
    out = tmp_path / "fitted.mha"
    run = _fit_xray(tmp_path, source, str(out))
    assert run.returncode == 2 and "RG1_J2KI.dcm" in run.stderr and "ImagerPixelSpacing" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written
    run = _fit_xray(tmp_path, source, str(out), "--spacing", "0.2", "--size", "256", "--pixel", "0.8")
    assert run.returncode == 0, run.stderr
    assert "(given, at the detector)" in run.stdout
    sidecar = json.loads((tmp_path / "fitted.json").read_text())
    assert sidecar["radiograph"]["spacing_source"] == "given" and sidecar["radiograph"]["spacing_mm"] == [0.2, 0.2]
    assert sidecar["radiograph"]["transfer_syntax"] == "JPEG 2000 Image Compression" and sidecar["radiograph"]["lossy"]
    image = sitk.ReadImage(str(out))
    assert image.GetSize() == (256, 256) and image.GetSpacing() == (0.8, 0.8)
    for name in ("fitted.mha", "fitted_valid.mha", "fitted.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    private = tmp_path / "private"
    private.mkdir()
    run = _fit_xray(private, source, str(private / "p.png"), "--spacing", "0.2", "--size", "64", umask=0o077)
    assert run.returncode == 0, run.stderr
    assert {p.name: p.stat().st_mode & 0o777 for p in private.iterdir()} == {
        "p.png": 0o600, "p_valid.png": 0o600, "p.json": 0o600}


def test_xray_info_tells_what_is_read_refused_or_broken(tmp_path):
    files = [data("RG1_J2KI.dcm"), data("MR_small_RLE.dcm"), data("MR_truncated.dcm")]
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "xray-info", *files, "--json"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 1, run.stderr  # not every file is usable
    rows = {r["file"]: r for r in map(json.loads, run.stdout.splitlines())}
    assert rows["RG1_J2KI.dcm"]["outcome"].startswith("refused: no usable pixel spacing")
    assert rows["RG1_J2KI.dcm"]["pixels"] == "decoded" and rows["RG1_J2KI.dcm"]["sdd_mm"] == "1996"
    assert rows["MR_small_RLE.dcm"]["outcome"] == "read" and rows["MR_small_RLE.dcm"]["encoding"] == "RLE Lossless"
    assert rows["MR_small_RLE.dcm"]["spacing_source"] == "PixelSpacing"
    assert rows["MR_truncated.dcm"]["outcome"].startswith("broken: broken pixel data")
    table = subprocess.run([sys.executable, "-m", "pipelines.cli", "xray-info", files[0], "--spacing", "0.2"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert table.returncode == 0 and "given" in table.stdout.splitlines()[1] and not list(tmp_path.iterdir())
