"""Analytic checks of the render path: path lengths, magnification, positions, pose handling."""
import numpy as np
import pytest
import torch

from pipelines.ops.camera import base_camera, camera_for_motion, project_point
from pipelines.ops.drr import Renderer
from pipelines.ops.sampling import pose_to_matrix
from schemas.detector import Geometry
from tests.conftest import make_affine

MU = 0.02


def centred_grid(n: int, spacing: float = 1.0) -> np.ndarray:
    half = (n - 1) / 2 * spacing
    return make_affine((spacing,) * 3, "RAS", (-half, -half, -half))


def grid_coords(n: int) -> np.ndarray:
    return np.arange(n) - (n - 1) / 2


@pytest.fixture
def geom():
    return Geometry(height=64, width=64, pixel_spacing_mm=1.0, sdd_mm=1020.0, sod_mm=850.0, renderer="siddon")


def cube(n=64, half=20):
    c = grid_coords(n)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    return np.where((abs(x) < half) & (abs(y) < half) & (abs(z) < half), MU, 0).astype(np.float32)


@pytest.mark.parametrize("renderer", ["traversal", "clipped_trilinear", "siddon", "trilinear"])
@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_cube_central_pixel_is_mu_times_chord(renderer, view, geom):
    g = Geometry(**{**geom.__dict__, "renderer": renderer, "samples_per_voxel": 2.0})
    img = Renderer(cube(), centred_grid(64), g).render(base_camera(view, g.sod_mm)[None])[0]
    centre = img[31:33, 31:33].mean()  # the four pixels around the principal point
    assert centre == pytest.approx(MU * 40.0, rel=0.01)


@pytest.mark.parametrize("renderer", ["traversal", "siddon"])
def test_sphere_shadow_radius_is_magnified_by_sdd_over_sod(renderer):
    g = Geometry(height=128, width=128, pixel_spacing_mm=0.5, sdd_mm=1020.0, sod_mm=850.0, renderer=renderer)
    c = grid_coords(64)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    r = 20.0
    sphere = np.where(x ** 2 + y ** 2 + z ** 2 <= r ** 2, MU, 0).astype(np.float32)
    img = Renderer(sphere, centred_grid(64), g).render(base_camera("AP", g.sod_mm)[None])[0]
    shadow = img > 1e-4
    area_mm2 = shadow.sum() * g.pixel_spacing_mm ** 2
    measured = np.sqrt(area_mm2 / np.pi)
    expected = r * g.sdd_mm / np.sqrt(g.sod_mm ** 2 - r ** 2)  # tangent rays of the sphere
    assert measured == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("renderer", ["traversal", "siddon"])
@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_off_centre_rod_appears_where_the_geometry_predicts(view, renderer, geom):
    """A rod along S at x = +15 mm (patient right), y = +10 mm (anterior)."""
    geom = Geometry(**{**geom.__dict__, "renderer": renderer})
    c = grid_coords(64)
    x, y, _ = np.meshgrid(c, c, c, indexing="ij")
    rod = np.where((abs(x - 15) < 1.5) & (abs(y - 10) < 1.5), MU, 0).astype(np.float32)
    cam = base_camera(view, geom.sod_mm)
    img = Renderer(rod, centred_grid(64), geom).render(cam[None])[0]
    profile = img[20:44].mean(axis=0)
    measured_col = (profile * np.arange(64)).sum() / profile.sum()
    _, predicted_col = project_point(cam, [15.0, 10.0, 0.0], geom)
    assert measured_col == pytest.approx(predicted_col, abs=0.5)
    if view == "AP":  # radiological convention: the patient's right is on the image's left
        assert predicted_col < 31.5


@pytest.mark.parametrize("renderer", ["traversal", "siddon"])
def test_camera_motion_equals_moving_the_volume(renderer, geom):
    """Rendering the volume moved by a pose equals rendering the moved voxels (translation + rotation)."""
    geom = Geometry(**{**geom.__dict__, "renderer": renderer})
    n = 64
    c = grid_coords(n)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    # an L-shaped object, so rotations are visible
    obj = (((abs(x) < 12) & (abs(y) < 3) & (abs(z) < 3)) | ((abs(x - 10) < 3) & (abs(y) < 3) & (abs(z) < 10)))
    vol = np.where(obj, MU, 0).astype(np.float32)
    centre = np.zeros(3)
    params = np.array([np.pi / 2, 0.0, 0.0, 5.0, 0.0, 0.0])  # 90 deg about S, then 5 mm to the right
    motion = pose_to_matrix(params, centre, "ZXY")
    # the same motion applied to the voxels: rotate the affine's axes and shift its origin
    moved_affine = motion @ centred_grid(n)
    for view in ("AP", "LAT"):
        via_camera = Renderer(vol, centred_grid(n), geom).render(camera_for_motion(view, geom.sod_mm, centre, motion)[None])
        via_volume = Renderer(vol, moved_affine, geom).render(base_camera(view, geom.sod_mm)[None])
        np.testing.assert_allclose(via_camera, via_volume, atol=1e-4)
        assert via_camera.max() > 0.1


def test_vertebra_only_never_exceeds_whole_and_rendering_is_repeatable(geom):
    vol = cube()
    part = vol.copy()
    part[:32] = 0
    cams = np.stack([base_camera(v, geom.sod_mm) for v in ("AP", "LAT")])
    whole = Renderer(vol, centred_grid(64), geom).render(cams)
    only = Renderer(part, centred_grid(64), geom).render(cams)
    assert np.all(only <= whole + 1e-6)
    np.testing.assert_array_equal(whole, Renderer(vol, centred_grid(64), geom).render(cams))


def test_one_traversal_gives_whole_and_labelled_views_exactly():
    """The labelled channel of one walk equals rendering the masked volume on its own, and never exceeds
    the whole; the whole channel equals a plain render."""
    g = Geometry(height=64, width=64, pixel_spacing_mm=1.0, sdd_mm=1020.0, sod_mm=850.0)
    rng = np.random.default_rng(3)
    vol = cube() * rng.uniform(0.5, 1.5, (64, 64, 64)).astype(np.float32)
    labels = np.zeros(vol.shape, dtype=np.uint8)
    labels[20:40, 25:35, 28:44] = 9
    labels[40:50, 20:30, 20:30] = 4
    motion = pose_to_matrix(np.array([0.1, -0.2, 0.15, 3.0, -2.0, 1.0]), np.zeros(3), "ZXY")
    cams = np.stack([camera_for_motion(v, g.sod_mm, np.zeros(3), motion) for v in ("AP", "LAT")])
    renderer = Renderer(vol, centred_grid(64), g, labels=labels)
    whole, part = renderer.render_labelled(cams, 9)
    masked = Renderer(np.where(labels == 9, vol, 0).astype(np.float32), centred_grid(64), g).render(cams)
    np.testing.assert_allclose(part, masked, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole, renderer.render(cams))
    assert np.all(part <= whole) and part.max() > 0.1 and (part == 0).mean() > 0.5
    with pytest.raises(ValueError, match="traversal"):
        Renderer(vol, centred_grid(64), Geometry(**{**g.__dict__, "renderer": "siddon"})).render_labelled(cams, 9)


@pytest.mark.parametrize("view", ["AP", "LAT"])
def test_clipped_renderer_agrees_with_siddon_within_one_percent(view):
    """A textured volume whose edges hold tissue (the hard case for interpolating renderers)."""
    rng = np.random.default_rng(0)
    n = 48
    c = grid_coords(n)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    vol = (MU * (1 + 0.3 * np.sin(x / 5) * np.cos(y / 7)) + 0.01 * (x ** 2 + y ** 2 < 15 ** 2)).astype(np.float32)
    vol += rng.uniform(0, 0.002, vol.shape).astype(np.float32)
    g = Geometry(48, 48, 1.6, 1020.0, 850.0, renderer="siddon")
    cams = np.stack([base_camera(view, 850.0, [2.0, -1.0, 3.0])])
    siddon = Renderer(vol, centred_grid(n), g).render(cams)
    clipped = Renderer(vol, centred_grid(n), Geometry(**{**g.__dict__, "renderer": "clipped_trilinear"})).render(cams)
    assert np.linalg.norm(clipped - siddon) / np.linalg.norm(siddon) < 0.01


def test_clipped_integration_is_independent_of_chunking_and_misses_are_zero():
    import torch

    from pipelines.ops.trilinear import integrate_clipped

    rng = np.random.default_rng(1)
    density = torch.as_tensor(rng.uniform(0, 1, (10, 12, 14)).astype(np.float32))
    source = torch.tensor([4.5, -200.0, 6.0])
    targets = torch.stack([torch.tensor([4.5 + dx, 300.0, 6.0 + dz]) for dx in range(-8, 9, 2) for dz in range(-9, 10, 3)])
    targets = torch.cat([targets, torch.tensor([[400.0, 300.0, 6.0]])]).float()  # the last ray misses
    lengths = (targets - source).norm(dim=-1)
    big = integrate_clipped(density, source, targets, lengths, chunk=10_000)
    small = integrate_clipped(density, source, targets, lengths, chunk=3, split=2)
    torch.testing.assert_close(big, small)
    assert big[-1] == 0 and (big[:-1] > 0).all()
    # a ray straight along j through (4, ., 6) crosses 12 voxels of 1 unit: integral = sum of the column
    straight = integrate_clipped(density, torch.tensor([4.0, -50.0, 6.0]), torch.tensor([[4.0, 50.0, 6.0]]),
                                 torch.tensor([100.0]), step_vox=0.25)
    assert float(straight[0]) == pytest.approx(float(density[4, :, 6].sum()), rel=0.02)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("renderer", ["traversal", "clipped_trilinear"])
def test_cuda_and_cpu_renders_agree(renderer, geom):
    import torch

    g = Geometry(**{**geom.__dict__, "renderer": renderer, "samples_per_voxel": 1.0})
    cams = np.stack([base_camera(v, g.sod_mm) for v in ("AP", "LAT")])
    cpu = Renderer(cube(), centred_grid(64), g, torch.device("cpu")).render(cams)
    gpu = Renderer(cube(), centred_grid(64), g, torch.device("cuda")).render(cams)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("view, expected", [
    # (row, column) of each block's shadow relative to the image centre: -1 before it, 0 on it, +1 after it
    ("AP", {"superior": (-1, 0), "right": (0, -1), "anterior": (0, 0)}),  # rows head->feet, columns right->left
    ("LAT", {"superior": (-1, 0), "right": (0, 0), "anterior": (0, +1)}),  # rows head->feet, columns post->ant
])
def test_image_axes_in_world_terms(view, expected):
    """What docs/layout.md states: where a block superior, right (+x) or anterior (+y) of the centre lands."""
    n, spacing = 41, 2.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * spacing
    geom = Geometry(height=64, width=64, pixel_spacing_mm=3.0, sdd_mm=1020, sod_mm=850)
    high, mid = slice(n - 8, n - 3), slice(n // 2 - 2, n // 2 + 3)  # towards +axis, and about the centre
    blocks = {"superior": (mid, mid, high), "right": (high, mid, mid), "anterior": (mid, high, mid)}
    centre = (geom.height - 1) / 2
    for name, block in blocks.items():
        mu = np.zeros((n, n, n), np.float32)
        mu[block] = 1.0
        image = Renderer(mu, affine, geom).render(base_camera(view, geom.sod_mm)[None])[0]
        row, col = np.unravel_index(image.argmax(), image.shape)
        where = tuple(int(np.sign(round(v - centre))) if abs(v - centre) > 4 else 0 for v in (row, col))
        assert where == expected[name], (name, row, col)


def test_camera_rays_in_one_pass_keep_the_bits_of_the_torch_operations():
    """`_camera_rays` makes a view's targets (world and voxel) and lengths in one compiled pass; they
    are the bits of `_transform_points` and of torch's CPU norm of target - source, so the walks'
    images keep theirs. The lengths' fused multiply-adds matter: a plain sum of squares differs."""
    from pipelines.ops.drr import _camera_rays, _transform_points

    rng = np.random.default_rng(1)
    plain = 0
    for scale in (1e-2, 1.0, 1e2):
        mw, mv = rng.normal(size=(4, 4)) * scale * 300, rng.normal(size=(4, 4)) * scale
        source = rng.normal(size=3) * 1000
        points = torch.as_tensor(rng.normal(size=(20001, 3)))
        world, voxel, length = _camera_rays(mw, mv, source, points.numpy())
        expected_world = _transform_points(mw, points)
        assert np.array_equal(world, expected_world.numpy())
        assert np.array_equal(voxel, _transform_points(mv, points).numpy())
        expected = (expected_world - torch.as_tensor(source)).norm(dim=-1).numpy()
        assert np.array_equal(length, expected)
        d = world - source
        plain += int((np.sqrt((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]) != expected).sum())
    assert plain > 0  # the check above tells the two roundings apart


def test_ray_points_are_transformed_with_the_same_bits_on_the_cpu_kernel_and_in_torch():
    """`_transform_points` runs one compiled pass on the CPU and torch operations elsewhere; both
    compute ((x m0 + y m1) + z m2) + m3 per coordinate in float64, so rays (and every image walked
    along them) keep their bits whichever path a device takes."""
    from pipelines.ops.drr import _transform_points

    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        m = rng.normal(size=(4, 4)) * scale
        points = torch.as_tensor(rng.normal(size=(4097, 3)) * 300)
        x, y, z = points[:, 0:1], points[:, 1:2], points[:, 2:3]
        mt = torch.as_tensor(m)
        expected = x * mt[:3, 0] + y * mt[:3, 1] + z * mt[:3, 2] + mt[:3, 3]
        got = _transform_points(m, points)
        assert got.dtype == torch.float64 and got.shape == (4097, 3)
        assert torch.equal(got, expected)
        assert torch.equal(_transform_points(m, points[::2]), expected[::2])  # a strided view of the points
