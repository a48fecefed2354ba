"""The exact voxel traversal: agreement with diffdrr's Siddon and brute force, its torch twin,
determinism, the labelled channel; and the error-budget sampling of the trilinear renderer."""
import dataclasses

import numba
import numpy as np
import pytest
import torch

from pipelines.ops.camera import base_camera, camera_for_motion
from pipelines.ops.drr import Renderer
from pipelines.ops.ray_batch import cuda_walk_available, walk_rays
from pipelines.ops.sampling import pose_to_matrix
from pipelines.ops.traversal import (
    GRID_FAR_MIN,
    NEAR,
    OCCUPIED,
    label_box,
    label_boxes,
    label_table,
    occupancy,
    traverse_hinges_numba,
    traverse_numba,
    traverse_torch,
    walk_counts,
)
from schemas.detector import Geometry
from tests.ops.test_drr import centred_grid, grid_coords

MU = 0.02


def textured(n: int = 40, seed: int = 0) -> np.ndarray:
    """Tissue up to every face, smooth texture plus voxel noise: hard for interpolating renderers."""
    c = grid_coords(n)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    rng = np.random.default_rng(seed)
    vol = MU * (1 + 0.3 * np.sin(x / 5) * np.cos(y / 7 + z / 9)) + 0.02 * (x ** 2 + y ** 2 < (n / 4) ** 2)
    return (vol + rng.uniform(0, 0.004, vol.shape)).astype(np.float32)


def poses(sod: float) -> np.ndarray:
    motion = pose_to_matrix(np.array([0.2, -0.1, 0.3, 4.0, -3.0, 2.0]), np.zeros(3), "ZXY")
    return np.stack([base_camera("AP", sod), base_camera("LAT", sod),
                     camera_for_motion("AP", sod, np.zeros(3), motion), camera_for_motion("LAT", sod, np.zeros(3), motion)])


def test_traversal_is_diffdrrs_siddon_integral():
    g = Geometry(48, 40, 1.7, 1020.0, 850.0, renderer="siddon")
    vol = textured()
    cams = poses(g.sod_mm)
    siddon = Renderer(vol, centred_grid(40), g).render(cams)
    ours = Renderer(vol, centred_grid(40), Geometry(**{**g.__dict__, "renderer": "traversal"})).render(cams)
    for v in range(len(cams)):
        assert np.linalg.norm(ours[v] - siddon[v]) / np.linalg.norm(siddon[v]) < 1e-5


def brute_force(volume, source, target, length, samples=400_001):
    """Voxel-constant integral by dense nearest-voxel sampling of the whole segment."""
    a = np.linspace(0.0, 1.0, samples)[:, None]
    idx = np.floor(source + a * (target - source) + 0.5).astype(int)
    inside = np.all((idx >= 0) & (idx < np.array(volume.shape)), axis=1)
    values = np.zeros(samples)
    values[inside] = volume[tuple(idx[inside].T)]
    return values.mean() * length


def test_rays_that_start_or_end_inside_the_volume_are_cut_exactly():
    """Segments beginning or ending inside the box (a detector inside the body's box) integrate only the
    segment - checked against brute force; axis-parallel rays and misses included."""
    vol = textured(24, seed=5)
    source = np.array([11.3, -30.0, 7.7])
    targets = np.array([[11.3, 10.2, 7.7],  # axis-parallel, ends inside
                        [3.1, 15.6, 20.4], [20.9, 40.0, 1.2], [-30.0, 40.0, 7.7],  # the last one misses
                        [11.3, -30.0, 7.7 + 1e-3]])
    lengths = np.linalg.norm(targets - source, axis=1) * 1.5
    whole, _ = traverse_numba(vol, source, targets, lengths, 1, len(targets))
    for r in range(len(targets)):
        assert whole[r] == pytest.approx(brute_force(vol, source, targets[r], lengths[r]), rel=2e-4, abs=1e-9)
    assert whole[3] == 0.0 and whole[1] > 0
    inner = np.array([5.0, 6.0, 7.0])  # the source inside the volume too
    inside, _ = traverse_numba(vol, inner, targets[:3], lengths[:3], 1, 3)
    for r in range(3):
        assert inside[r] == pytest.approx(brute_force(vol, inner, targets[r], lengths[r]), rel=2e-4)


def random_rays(rng, n, shape):
    source = np.array([shape[0] / 2 + 3.3, -400.0, shape[2] / 2 - 2.1])
    targets = np.c_[rng.uniform(-20, shape[0] + 20, n), np.full(n, 600.0), rng.uniform(-20, shape[2] + 20, n)]
    targets[:7, 0] = source[0]  # rays parallel to a face plane
    targets[7:12, 2] = source[2]
    return source, targets, np.linalg.norm(targets - source, axis=1)


def test_torch_twin_is_bit_identical_and_threads_do_not_change_images():
    rng = np.random.default_rng(2)
    vol = rng.uniform(0, 1, (23, 31, 17)).astype(np.float32)
    labels = rng.integers(0, 3, vol.shape).astype(np.uint8)
    source, targets, lengths = random_rays(rng, 30 * 20, vol.shape)
    a = traverse_numba(vol, source, targets, lengths, 30, 20, labels, 2)
    b = traverse_torch(torch.as_tensor(vol), torch.as_tensor(source), torch.as_tensor(targets),
                       torch.as_tensor(lengths), torch.as_tensor(labels), 2, chunk=97)
    np.testing.assert_array_equal(a[0], b[0].numpy())
    np.testing.assert_array_equal(a[1], b[1].numpy())
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = traverse_numba(vol, source, targets, lengths, 30, 20, labels, 2)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(a[0], one[0])
    np.testing.assert_array_equal(a[1], one[1])
    assert (a[0] > 0).mean() > 0.5 and np.all(a[1] <= a[0])


def air_pocked(rng, shape):
    """Tissue with empty boxes of every size and scattered zero voxels: blocks that are empty, partly
    empty and full, at every alignment."""
    vol = rng.uniform(0.001, 0.03, shape).astype(np.float32)
    for _ in range(6):
        lo = [int(rng.integers(0, n)) for n in shape]
        vol[tuple(slice(lo_, lo_ + int(rng.integers(1, 30))) for lo_ in lo)] = 0
    vol[rng.uniform(size=shape) < 0.3] = 0
    return vol


def scattered_rays(rng, shape, n):
    """Rays from a far source in any direction through the volume; the first ones along an axis, a
    face diagonal and the body diagonal (ties between plane crossings)."""
    source = np.array(shape) / 2 + rng.normal(0, 1, 3) * 80
    targets = np.array(shape) / 2 + rng.normal(0, 1, (n, 3)) * 40
    targets[:5] = source + np.array([[0, 0, 100], [0, 100, 0], [100, 0, 0], [50, 50, 0], [7, 7, 7]])
    return source, targets, rng.uniform(500, 1000, n)


@pytest.mark.parametrize("shift", [0, 1, 2, 3, 4])
def test_skipping_empty_blocks_gives_bit_identical_images_from_fewer_reads(shift):
    """Stopping after the last block near non-zero voxels changes no bit of the whole, labelled or hinge
    images, for blocks of 1 to 16 voxels, rays in every direction (axis-parallel and diagonal ones
    included) and rays that end inside an empty block; and it reads fewer voxels (the volumes have a
    margin of air two blocks wide, as a scan's field has around the body)."""
    rng = np.random.default_rng(10 + shift)
    saved = 0
    for _ in range(6):
        shape = tuple(int(n) for n in rng.integers(5, 50, 3))
        vol = np.pad(air_pocked(rng, shape), 2 << shift)
        shape = vol.shape
        labels = rng.integers(0, 3, shape).astype(np.uint8)
        source, targets, lengths = scattered_rays(rng, shape, 20 * 24)
        occupied = occupancy(vol, shift)
        assert occupied.grid.shape == tuple(-(-n // (1 << shift)) for n in shape)
        plain = traverse_numba(vol, source, targets, lengths, 20, 24, labels, 1)
        skipped = traverse_numba(vol, source, targets, lengths, 20, 24, labels, 1, occupied)
        for a, b in zip(plain, skipped):
            np.testing.assert_array_equal(a, b)
        plain = traverse_hinges_numba(vol, source, targets, lengths, 20, 24, [0.01, 0.02])
        skipped = traverse_hinges_numba(vol, source, targets, lengths, 20, 24, [0.01, 0.02], occupied=occupied)
        for a, b in zip(plain, skipped):
            np.testing.assert_array_equal(a, b)
        on_ray, read = walk_counts(vol, source, targets, 20, 24, occupied)
        assert walk_counts(vol, source, targets, 20, 24) == (on_ray, on_ray)
        saved += on_ray - read
    assert saved > 0


def test_a_ray_through_empty_blocks_only_reads_nothing_and_a_negative_knot_turns_skipping_off():
    vol = np.zeros((32, 32, 32), dtype=np.float32)
    vol[8:16, 8:16, 8:16] = 0.02  # one full block of 8
    occupied = occupancy(vol)
    assert occupied.grid.sum() == 1 and occupied.empty_fraction == pytest.approx(63 / 64)
    # a ray through blocks none of which is NEAR the occupied one reads nothing; one beside the block
    # and one through it read from their entry to the far face of the last block NEAR it (the walk stops
    # there: 24 voxels), and the voxel entered at that face (the stop's margin, 1e-9 of the ray, is far
    # below a voxel)
    assert occupied.flags.reshape(4, 4, 4)[1, 1, 1] == OCCUPIED | NEAR
    assert (occupied.flags.reshape(4, 4, 4)[:3, :3, :3] & NEAR).all()
    assert occupied.flags.reshape(4, 4, 4)[3, 3, 3] == 0
    assert not (occupied.flags.reshape(4, 4, 4)[3, :, 3] & NEAR).any()
    for x, expected in ((28.0, 0), (20.0, 25), (12.0, 25)):
        source, targets = np.array([x, -100.0, x]), np.array([[x, 200.0, x]])
        assert walk_counts(vol, source, targets, 1, 1, occupied) == (32, expected)
    targets = np.array([[20.0, 200.0, 20.0], [12.0, 200.0, 4.0]])
    # max(0 - c, 0) is not 0 below a negative knot: empty blocks must be walked then
    plain = traverse_hinges_numba(vol, source, targets, np.ones(2), 1, 2, [-0.01])
    with_grid = traverse_hinges_numba(vol, source, targets, np.ones(2), 1, 2, [-0.01], occupied=occupied)
    np.testing.assert_array_equal(plain[2], with_grid[2])
    assert plain[2][0, 1] > 0
    with pytest.raises(ValueError, match="occupancy of a"):
        traverse_numba(vol[:-1], source, targets, np.ones(2), 1, 2, occupied=occupied)


def test_the_cpu_renderer_walks_with_the_grid_only_where_wide_air_makes_it_pay():
    """Finding each ray's stop costs more than it saves unless much of the volume is far from any
    non-zero voxel (GRID_FAR_MIN, measured): a body filling its box walks without the grid, a body in
    the middle of a wide box of air (a second one in its corner) walks with it, and the images are the
    same bits either way."""
    g = Geometry(24, 20, 2.0, 1020.0, 850.0, renderer="traversal")
    full = Renderer(textured(40), centred_grid(40), g, device="cpu", walker="numba")
    assert full.occupancy.far_fraction < GRID_FAR_MIN and not full.occupancy.pays_on_cpu and full.occupied is None
    apart = np.zeros((80, 80, 80), dtype=np.float32)
    apart[32:48, 32:48, 32:48] = textured(16, seed=1)
    apart[-16:, -16:, -16:] = textured(16, seed=2)
    sparse = Renderer(apart, centred_grid(80), g, device="cpu", walker="numba")
    assert sparse.occupancy.far_fraction >= GRID_FAR_MIN and sparse.occupied is sparse.occupancy
    cams = poses(g.sod_mm)
    with_grid = sparse.render(cams)
    assert with_grid.max() > 0
    sparse.occupied = None
    np.testing.assert_array_equal(sparse.render(cams), with_grid)
    volume = sparse.drr.density.numpy()
    source, targets, _ = (x[0] for x in sparse._rays(np.asarray(cams[2], dtype=np.float32)[None]))
    on_ray, read = walk_counts(volume, source[0].numpy(), targets.numpy(), g.height, g.width, sparse.occupancy)
    assert read < on_ray


def test_rays_grazing_a_blocks_edges_are_clipped_without_losing_a_rounding_sized_segment():
    """Rays within 1e-11 voxel of an occupied block's edges and corners: the walk and the backwards
    walk of the block grid order their crossings there each by its own rounding, so the walk can read a
    voxel of a block the grid walk passed beside. Ending the walk after the last block NEAR an occupied
    one keeps every image bit-identical; ending it after the last OCCUPIED block does not (checked
    here too, so the rays do reach the case)."""
    rng = np.random.default_rng(1)
    vol = np.zeros((32, 32, 32), dtype=np.float32)
    vol[16:24, 16:24, 16:24] = rng.uniform(0.5, 1, (8, 8, 8))
    occupied = occupancy(vol)
    occupied_only = dataclasses.replace(occupied, flags=occupied.grid.reshape(-1) * np.uint8(OCCUPIED | NEAR))
    lost = 0
    for _ in range(60):
        corner = np.array([15.5, 15.5, 15.5]) + rng.integers(0, 2, 3) * 8
        source = corner + rng.normal(0, 1, 3) * 60
        points = corner + rng.normal(0, 1, (4096, 3)) * 1e-11
        points[:, rng.integers(0, 3)] += rng.uniform(-6, 6, 4096)  # along one of the block's edges
        targets = source + (points - source) * 3
        plain = traverse_numba(vol, source, targets, np.ones(4096), 64, 64)[0]
        np.testing.assert_array_equal(traverse_numba(vol, source, targets, np.ones(4096), 64, 64,
                                                     occupied=occupied)[0], plain)
        lost += int((traverse_numba(vol, source, targets, np.ones(4096), 64, 64,
                                    occupied=occupied_only)[0] != plain).sum())
    assert lost > 0


def test_labelled_channel_equals_the_masked_volume_and_reads_only_its_box():
    rng = np.random.default_rng(4)
    vol = rng.uniform(0, 1, (30, 26, 22)).astype(np.float32)
    labels = np.zeros(vol.shape, dtype=np.uint8)
    labels[8:15, 5:20, 9:12] = 5
    labels[20, 20, 20] = 5  # a stray voxel widens the box
    np.testing.assert_array_equal(label_box(labels, 5), [8, 5, 9, 21, 21, 21])
    np.testing.assert_array_equal(label_box(labels, 6), [0] * 6)
    labels[0, 0, 0] = 2  # every label's box from one pass is its own label_box
    assert set(label_boxes(labels)) == {2, 5}
    np.testing.assert_array_equal(label_boxes(labels)[5], label_box(labels, 5))
    np.testing.assert_array_equal(label_boxes(labels)[2], [0, 0, 0, 1, 1, 1])
    labels[0, 0, 0] = 0
    source, targets, lengths = random_rays(rng, 400, vol.shape)
    whole, part = traverse_numba(vol, source, targets, lengths, 20, 20, labels, 5)
    masked, _ = traverse_numba(np.where(labels == 5, vol, 0).astype(np.float32), source, targets, lengths, 20, 20)
    np.testing.assert_allclose(part, masked, rtol=1e-12, atol=1e-15)
    assert part.max() > 0
    _, none = traverse_numba(vol, source, targets, lengths, 20, 20, labels, 6)
    assert not none.any()
    with pytest.raises(ValueError, match="do not match"):
        traverse_numba(vol, source, targets, lengths, 20, 20, labels[:-1], 5)


def test_error_budget_chooses_the_sampling_records_it_and_re_renders_exactly():
    vol = textured(40, seed=1)
    g = Geometry(40, 40, 2.0, 1020.0, 850.0, renderer="clipped_trilinear", error_budget=0.02)
    loose = Renderer(vol, centred_grid(40), g)
    tight = Renderer(vol, centred_grid(40), Geometry(**{**g.__dict__, "error_budget": 0.002}))
    assert loose.geometry.samples_per_voxel <= tight.geometry.samples_per_voxel
    assert loose.calibrated_error <= 0.02
    record = loose.record()
    assert record["samples_per_voxel"] == loose.geometry.samples_per_voxel
    assert record["calibrated_error"] == loose.calibrated_error
    cams = poses(g.sod_mm)
    stored = loose.render(cams)
    again = Renderer(vol, centred_grid(40), Geometry.from_record(record))
    assert again.calibrated_error is None  # a recorded density is used as is
    np.testing.assert_array_equal(stored, again.render(cams))
    exact = Renderer(vol, centred_grid(40), Geometry(**{**g.__dict__, "renderer": "traversal"})).render(cams)
    errors = [np.linalg.norm(stored[v] - exact[v]) / np.linalg.norm(exact[v]) for v in range(len(cams))]
    assert max(errors) < 2 * 0.02  # the budget holds beyond the calibration rays and views, within 2x
    fixed = Renderer(vol, centred_grid(40), Geometry(**{**g.__dict__, "samples_per_voxel": 1.0}))
    assert fixed.calibrated_error is None and "calibrated_error" not in fixed.record()


def test_records_made_before_the_budget_existed_still_load():
    old = {"height": 8, "width": 8, "pixel_spacing_mm": 1.0, "sdd_mm": 1020.0, "sod_mm": 850.0,
           "renderer": "clipped_trilinear", "samples_per_voxel": 1.0, "reverse_x_axis": True}
    g = Geometry.from_record(old)
    assert g.samples_per_voxel == 1.0 and g.error_budget == 0.005


def test_several_views_in_one_torch_call_are_each_views_own_walk():
    """One source and one label per ray: two views (other sources, other labels, one with no label) in one
    call give each view's numba images bit for bit."""
    rng = np.random.default_rng(8)
    vol = rng.uniform(0, 1, (21, 19, 17)).astype(np.float32)
    labels = rng.integers(0, 3, vol.shape).astype(np.uint8)
    views = [random_rays(rng, 12 * 10, vol.shape), random_rays(rng, 12 * 10, vol.shape)]
    views[1] = (views[1][0] + np.array([4.0, 0.0, -3.0]),) + views[1][1:]
    views[1] = (views[1][0], views[1][1], np.linalg.norm(views[1][1] - views[1][0], axis=1))
    (s1, t1, n1), (s2, t2, n2) = views
    wanted = [traverse_numba(vol, s1, t1, n1, 12, 10, labels, 2), traverse_numba(vol, s2, t2, n2, 12, 10)]
    sources = torch.as_tensor(np.concatenate([np.tile(s1, (len(t1), 1)), np.tile(s2, (len(t2), 1))]))
    per_ray = torch.as_tensor(np.r_[np.full(len(t1), 2), np.full(len(t2), -1)])
    whole, part = traverse_torch(torch.as_tensor(vol), sources, torch.as_tensor(np.concatenate([t1, t2])),
                                 torch.as_tensor(np.r_[n1, n2]), torch.as_tensor(labels), per_ray, chunk=53)
    np.testing.assert_array_equal(whole.numpy(), np.r_[wanted[0][0], wanted[1][0]])
    np.testing.assert_array_equal(part.numpy(), np.r_[wanted[0][1], np.zeros(len(t2))])


def _batch_of_views(rng):
    """Three views of an air-pocked volume, each its own source and label (2, none, 1), as one batch of
    rays, and each view's numba walk (hinges, skipping empty blocks) to compare with."""
    shape = (33, 29, 26)
    vol = air_pocked(rng, shape)
    labels = rng.integers(0, 3, shape).astype(np.uint8)
    occupied = occupancy(vol)
    knots = [0.005, 0.02]
    views, wanted = [], []
    for label in (2, -1, 1):
        source, targets, lengths = scattered_rays(rng, shape, 12 * 10)
        views.append((np.tile(source, (len(targets), 1)), targets, lengths, np.full(len(targets), label)))
        wanted.append(traverse_hinges_numba(vol, source, targets, lengths, 12, 10, knots, labels, label, occupied))
    batch = [np.concatenate(x) for x in zip(*views)]
    return vol, labels, occupied, knots, batch, [np.concatenate(x) for x in zip(*wanted)]


def test_a_batch_of_rays_walks_as_each_views_numba_walk():
    """`walk_rays` (the batch walk the GPU kernel runs, here on the CPU's threads): several views with
    their own sources and labels in one call give each view's numba images, hinges included, bit for
    bit, skipping empty blocks; without knots the exact images alone, the same bits."""
    vol, labels, occupied, knots, (sources, targets, lengths, per_ray), wanted = _batch_of_views(
        np.random.default_rng(21))
    table = label_table(label_boxes(labels))
    got = walk_rays(vol, sources, targets, lengths, labels, per_ray, table, knots, occupied)
    for a, b in zip(wanted, got):
        np.testing.assert_array_equal(a, b)
    whole, part = walk_rays(vol, sources, targets, lengths, labels, per_ray, table, occupied=occupied)
    np.testing.assert_array_equal(whole, wanted[0])
    np.testing.assert_array_equal(part, wanted[1])
    assert (wanted[1] > 0).any() and (wanted[2][:, 1] > 0).any()
    with pytest.raises(ValueError, match="occupancy of a"):
        walk_rays(vol[:-1], sources, targets, lengths, occupied=occupied)


@pytest.mark.parametrize("height, width", [(16, 16), (7, 13), (3, 21), (1, 6), (17, 33)])
def test_rays_walked_eight_in_lockstep_are_each_rays_own_walk(height, width):
    """The image kernel walks neighbouring rays `lockstep.LANES` at a time; `walk_rays` walks each ray
    on its own (`_ray`, the GPU's function). Bit for bit the same whole, labelled and hinge images, with
    and without the occupancy grid, for detectors whose tiles leave lanes idle, rays that miss, rays
    along axes and diagonals (ties), rays grazing an occupied block's edges, and lanes whose rays end
    many steps apart."""
    rng = np.random.default_rng(height * 100 + width)
    n = height * width
    hit = missed = 0
    for trial in range(4):
        shape = tuple(int(x) for x in rng.integers(24 if trial == 3 else 5, 40, 3))
        vol = air_pocked(rng, shape)
        labels = rng.integers(0, 3, shape).astype(np.uint8)
        source, targets, lengths = scattered_rays(rng, shape, n)
        if trial == 3:  # grazing the edges of a block of 8 (ties between the walk's and the grid's rounding)
            corner = np.array([7.5, 7.5, 7.5]) + rng.integers(0, 2, (n, 3)) * 8
            points = corner + rng.normal(0, 1, (n, 3)) * 1e-11
            points[np.arange(n), rng.integers(0, 3, n)] += rng.uniform(-6, 6, n)
            targets = source + (points - source) * 3
        targets[::5] += 500.0  # some rays miss the volume
        occupied = occupancy(vol)
        table = label_table(label_boxes(labels))
        for occ in (None, occupied):
            for label in (-1, 1):
                per_ray = np.full(n, label)
                sources = np.tile(source, (n, 1))
                got = traverse_hinges_numba(vol, source, targets, lengths, height, width, [0.004, 0.02], labels,
                                            label, occ)
                alone = walk_rays(vol, sources, targets, lengths, labels, per_ray, table, [0.004, 0.02], occ)
                for a, b in zip(got, alone):
                    np.testing.assert_array_equal(a, b)
                exact = traverse_numba(vol, source, targets, lengths, height, width, labels, label, occ)
                np.testing.assert_array_equal(exact[0], alone[0])
                np.testing.assert_array_equal(exact[1], alone[1])
        hit += int((got[0] > 0).sum())
        missed += int((got[0] == 0).sum())
    assert hit > 0 and missed > 0


def test_a_volume_too_large_for_the_image_kernels_offsets_is_refused_before_any_copy():
    """The lockstep lanes hold voxel offsets in 32 bits: a volume of 2**31 voxels or more is refused
    with the way out named (a broadcast view: nothing is allocated, so the check comes first)."""
    from pipelines.ops.traversal import MAX_VOXELS

    vol = np.broadcast_to(np.zeros(1, np.float32), (1300, 1300, 1300))
    assert vol.size > MAX_VOXELS
    with pytest.raises(ValueError, match="32-bit offsets.*walk_rays"):
        traverse_numba(vol, np.zeros(3), np.ones((4, 3)), np.ones(4), 2, 2)
    with pytest.raises(ValueError, match="32-bit offsets"):
        traverse_hinges_numba(vol, np.zeros(3), np.ones((4, 3)), np.ones(4), 2, 2, [0.01])


def test_the_voxel_the_lockstep_walk_prefetches_lies_ahead_on_the_ray():
    """The lockstep walk prefetches, for each ray, the voxel at `_ahead`'s offset from the one it reads:
    a hint that changes no image (the test above), but one that must point along the ray to save the
    wait. Walked LOOKAHEAD crossings on, by the walk's own step, every ray (oblique, along axes, up or
    down each axis) is within a voxel of it on each axis."""
    from pipelines.ops.traversal import LOOKAHEAD, _advance, _ahead, _enter

    rng = np.random.default_rng(5)
    n = 200
    walked = 0
    for _ in range(300):
        source = rng.uniform(-80, n + 80, 3)
        target = rng.uniform(n * 0.3, n * 0.7, 3)
        target = source + (target - source) * 3
        if rng.random() < 0.2:  # along an axis
            target = source.copy()
            target[rng.integers(3)] += rng.choice([-1, 1]) * 3 * n
            source = np.clip(source, 1, n - 2)
        d = target - source
        (a0, a1, _, _, i, j, k, off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j, left_k, si, sj, sk, st_i, st_j,
         st_k) = _enter(n, n, n, np.zeros(6, dtype=np.int64), *source, *d, False)
        if a1 <= a0 or left_i + left_j + left_k < 2 * LOOKAHEAD:
            continue
        ahead = _ahead(inc_i, inc_j, inc_k, st_i, st_j, st_k)
        start = off
        for _ in range(int(LOOKAHEAD)):
            _, _, off, ni, nj, nk, left_i, left_j, left_k = _advance(off, ni, nj, nk, inc_i, inc_j, inc_k, left_i, left_j,
                                                                    left_k, st_i, st_j, st_k)
        reached = np.array(np.unravel_index(off, (n, n, n)))
        hinted = np.array(np.unravel_index(start + ahead, (n, n, n)))
        assert np.abs(reached - hinted).max() <= 1, (source, target)
        walked += 1
    assert walked > 200


@pytest.mark.skipif(not torch.cuda.is_available() or not cuda_walk_available(), reason="no CUDA device for numba")
def test_the_cuda_kernel_walks_as_the_cpu_does():
    """The same batch on the GPU (numba's CUDA kernel over `_walk_ray`): float64 sums within 1e-12 of
    the CPU's (the GPU compiler may fuse multiply-adds), results on the GPU."""
    vol, labels, occupied, knots, batch, wanted = _batch_of_views(np.random.default_rng(22))
    dev = torch.device("cuda")
    sources, targets, lengths, per_ray = (torch.as_tensor(x, device=dev) for x in batch)
    got = walk_rays(torch.as_tensor(vol, device=dev), sources, targets, lengths, torch.as_tensor(labels, device=dev),
                    per_ray, torch.as_tensor(label_table(label_boxes(labels)), device=dev), knots, occupied)
    for a, b in zip(wanted, got):
        assert b.device.type == "cuda"
        np.testing.assert_allclose(b.cpu().numpy(), a, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_without_a_usable_cuda_target_gpu_walks_fall_back_to_the_torch_walker():
    """Where numba's CUDA target cannot run a kernel (no GPU here), a CUDA device gets the torch
    walker, and asking for the 'cuda' walker is a clear error."""
    from pipelines.ops.drr import default_walker

    assert not cuda_walk_available()
    assert default_walker(torch.device("cpu")) == "numba" and default_walker(torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="'cuda' walker needs a CUDA device"):
        Renderer(textured(8), centred_grid(8), Geometry(8, 8, 2.0, 1020.0, 850.0, renderer="traversal"),
                 device="cpu", walker="cuda")
