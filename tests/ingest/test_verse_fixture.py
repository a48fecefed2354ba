"""The real VerSe mask (P-I-R, float64, 1 x 1 x 2 mm) through naming, labels and resampling."""
import json
import shutil

import numpy as np
import SimpleITK as sitk

from pipelines.case.prepare import load_and_prepare
from pipelines.ingest.discover import discover
from pipelines.ops.orient import volume_from_sitk, voxel_to_world, world_to_voxel
from tests.conftest import shared_fixture, write_volume


def _verse_tree(tmp_path):
    mask_src = shared_fixture("verse004", "sub-verse004_seg-vert_msk.nii.gz")
    ctd_src = shared_fixture("verse004", "sub-verse004_seg-subreg_ctd.json")
    deriv = tmp_path / "derivatives" / "sub-verse004"
    deriv.mkdir(parents=True)
    shutil.copy(mask_src, deriv / mask_src.name)
    shutil.copy(ctd_src, deriv / ctd_src.name)
    mask = volume_from_sitk(sitk.ReadImage(str(mask_src)))
    # a CT on the mask's grid: air outside a body, soft tissue, bone inside the vertebra labels
    ct = np.full(mask.array.shape, 40.0, np.float32)
    ct[:, :, :3] = -1000.0
    ct[mask.array > 0] = 800.0
    write_volume(tmp_path / "rawdata" / "sub-verse004" / "sub-verse004_ct.nii.gz", ct, mask.affine)
    return mask, json.loads(ctd_src.read_text())


def test_verse_case_is_discovered_translated_and_resampled(tmp_path, tiny_config):
    mask, ctd = _verse_tree(tmp_path)
    assert mask.orientation == "PIR" and mask.array.dtype == np.float64
    found = discover([tmp_path])
    (case,) = found.cases
    assert case.case_id == "sub-verse004" and set(case.files) == {"ct", "mask", "centroids"}
    prepared = load_and_prepare(case, tiny_config)
    assert prepared.levels == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert prepared.labels.orientation == "RAS"
    np.testing.assert_allclose(prepared.labels.spacing, 1.0)
    for label in range(16, 25):
        before = voxel_to_world(mask.affine, np.argwhere(mask.array == label).mean(0))[0]
        after = voxel_to_world(prepared.labels.affine, np.argwhere(prepared.labels.array == label).mean(0))[0]
        assert np.linalg.norm(before - after) < 1.0, label


def test_verse_centroids_land_inside_their_vertebra_after_resampling(tmp_path, tiny_config):
    mask, ctd = _verse_tree(tmp_path)
    assert ctd[0]["direction"] == ["P", "I", "R"]
    prepared = load_and_prepare(discover([tmp_path]).cases[0], tiny_config)
    labels = prepared.labels.array
    for c in ctd[1:]:
        world = voxel_to_world(mask.affine, [[c["X"], c["Y"], c["Z"]]])
        ijk = np.rint(world_to_voxel(prepared.labels.affine, world)[0]).astype(int)
        window = labels[tuple(slice(i - 2, i + 3) for i in ijk)]
        assert (window == c["label"]).any(), c
