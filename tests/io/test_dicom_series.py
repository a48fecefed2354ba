"""DICOM folders: the CT series chosen among several, slice gaps and mixed orientations refused."""
import numpy as np
import pytest

from pipelines.errors import VolumeReadError
from pipelines.io.dicom_series import dicom_series
from pipelines.io.volumes import load_volume
from tests.conftest import write_dicom_series


def _move_into(src, folder, prefix):
    folder.mkdir(exist_ok=True)
    for n, path in enumerate(sorted(src.iterdir())):
        path.rename(folder / f"{prefix}{n:03d}")


def _volume(n=12):
    return (np.random.default_rng(0).normal(0, 30, (n, 16, 16)) + 40).astype(np.int16)


def test_the_ct_series_is_chosen_and_the_others_named(tmp_path):
    folder = tmp_path / "series"
    _move_into(write_dicom_series(tmp_path / "ct", _volume(), (0.8, 0.8, 2.0)), folder, "a")
    _move_into(write_dicom_series(tmp_path / "scout", _volume(1), tags={"0020|000e": "9.9.1",
               "0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"}), folder, "b")
    _move_into(write_dicom_series(tmp_path / "pet", _volume(5), tags={"0020|000e": "9.9.2", "0008|0060": "PT"}),
               folder, "c")
    assert len(dicom_series(folder)) == 3  # split by SeriesInstanceUID, files without extensions
    loaded = load_volume(folder)
    assert loaded.size == (16, 16, 12)
    assert len(loaded.notes) == 1 and "localizer" in loaded.notes[0] and "PT" in loaded.notes[0]


def test_a_missing_slice_is_a_qc_reason(tmp_path):
    series = write_dicom_series(tmp_path / "s", _volume(), (0.8, 0.8, 2.0))
    sorted(series.iterdir())[5].unlink()
    with pytest.raises(VolumeReadError) as err:
        load_volume(series)
    assert err.value.code == "missing_slices" and "4.00 mm" in err.value.reason


def test_slices_of_two_orientations_are_a_qc_reason(tmp_path):
    folder = tmp_path / "mixed"
    _move_into(write_dicom_series(tmp_path / "a", _volume(6), (1.0, 1.0, 2.0)), folder, "a")
    tilted = write_dicom_series(tmp_path / "b", _volume(6), (1.0, 1.0, 2.0),
                                tags={"0020|0037": "1\\0\\0\\0\\0.9962\\0.0872"})
    for n, path in enumerate(sorted(tilted.iterdir())):  # same series, positions continuing the first half
        path.rename(folder / f"b{n:03d}")
    with pytest.raises(VolumeReadError) as err:
        load_volume(folder)
    assert err.value.code == "mixed_orientation", err.value.reason
