"""Rendering like a radiograph: the detector, distances and direction its DICOM header states, and a clear
error where it states too little or something SpineForge cannot render."""
import numpy as np
import pytest

from pipelines.errors import VolumeReadError
from pipelines.io.radiographs import read_radiograph
from pipelines.ops.camera import base_camera, project_points
from pipelines.physics.radiograph_view import gantry_of, radiograph_view, rotation_x, rotation_z, views_like
from schemas.config import StreamConfig
from schemas.detector import Geometry
from tests.loaders.test_radiographs import write_dicom

TEMPLATE = Geometry(256, 256, 0.8, 1020.0, 850.0)


def dx(path, **tags):
    base = {"ImagerPixelSpacing": [0.5, 0.5], "DistanceSourceToDetector": 1200.0,
            "EstimatedRadiographicMagnificationFactor": 1.5}
    return write_dicom(path, np.zeros((40, 50), np.uint16), tags.pop("modality", "DX"), **{**base, **tags})


def view(path, **kwargs):
    return radiograph_view(read_radiograph(path, pixels=False), path.name, TEMPLATE, where=path, **kwargs)


def test_the_header_sets_the_detector_the_distances_and_the_direction(tmp_path):
    v = view(dx(tmp_path / "a.dcm", ViewPosition="PA", PatientOrientation=["L", "F"]))
    g = v.geometry
    assert (g.height, g.width, g.pixel_spacing_mm, g.sdd_mm, g.sod_mm) == (40, 50, 0.5, 1200.0, 800.0)
    assert v.direction == "PA" and np.allclose(v.gantry, rotation_z(180))
    # PA with columns towards the patient's left: the detector seen from behind, so no reversal is needed
    camera = np.eye(4)
    camera[:3, :3] = v.gantry
    camera = camera @ base_camera("AP", g.sod_mm)
    centre, left = project_points(camera, np.array([[0, 0, 0], [-10.0, 0, 0]]), g)
    assert left[1] > centre[1]
    ap = view(dx(tmp_path / "b.dcm", ViewPosition="AP", PatientOrientation=["L", "F"]))
    assert ap.geometry.reverse_x_axis and not g.reverse_x_axis
    binned = view(tmp_path / "a.dcm", binning=4)
    assert (binned.geometry.height, binned.geometry.width, binned.geometry.pixel_spacing_mm) == (10, 12, 2.0)


def test_c_arm_angles_turn_the_pa_view_lao_and_cranial():
    gantry, what, _ = gantry_of(90.0, 0.0, "", None)
    beam = gantry @ np.array([0, -1.0, 0])  # the AP camera's beam (source to detector), turned
    assert np.allclose(beam, [-1, 0, 0]) and what == "C-arm LAO 90 CRA 0"  # towards the patient's left
    gantry, _, _ = gantry_of(0.0, 30.0, "", None)
    assert np.allclose(gantry @ [0, -1.0, 0], rotation_x(30) @ [0, 1.0, 0])  # detector tilted to the head
    assert np.allclose(gantry_of(None, None, "LL", None)[0] @ [0, 1.0, 0], [1, 0, 0])  # source at the right


@pytest.mark.parametrize("tags,says", [
    ({"DistanceSourceToDetector": None}, "no DistanceSourceToDetector in the header; give sdd_mm"),
    ({"EstimatedRadiographicMagnificationFactor": None}, "no source-to-isocentre distance"),
    ({"ImagerPixelSpacing": [0.5, 0.6]}, "square pixels"),
    ({"ViewPosition": "LLD"}, "ViewPosition 'LLD' is not one SpineForge renders"),
    ({"PatientOrientation": ["L", "H"]}, "rows run towards H"),
])
def test_what_the_header_cannot_give_is_a_clear_error(tmp_path, tags, says):
    values = {k: v for k, v in tags.items() if v is not None}
    path = dx(tmp_path / "x.dcm", **values)
    if None in tags.values():
        from pydicom import dcmread

        ds = dcmread(path)
        for k, v in tags.items():
            if v is None:
                delattr(ds, k)
        ds.save_as(path)
    with pytest.raises(VolumeReadError, match=says):
        view(path)


def test_a_folder_must_share_one_detector_and_the_stream_config_leaves_it_to_the_header(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    dx(folder / "a.dcm", ViewPosition="AP")
    dx(folder / "b.dcm", ViewPosition="LL", EstimatedRadiographicMagnificationFactor=1.2)
    views = views_like(folder, TEMPLATE)
    assert [v.name for v in views] == ["a.dcm", "b.dcm"] and views[1].geometry.sod_mm == 1000.0
    dx(folder / "c.dcm", ImagerPixelSpacing=[0.4, 0.4])
    with pytest.raises(ValueError, match="differ in their detectors"):
        views_like(folder, TEMPLATE)
    with pytest.raises(ValueError, match="like_radiograph sets the detector and the view; drop height"):
        StreamConfig.model_validate({"like_radiograph": str(folder), "height": 64})
