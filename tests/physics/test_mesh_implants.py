"""Mesh implants: chords against the analytic cylinder and against an independent ray engine (Embree
through trimesh), transmission against Beer-Lambert, masks at the silhouette, clear errors for open and
self-intersecting meshes, placement in the spine, records that make the same mesh again."""
import json
import logging

import numpy as np
import pytest
import trimesh

from pipelines.physics import implants, meshes
from pipelines.physics.implants import CAGE, PLATE, MeshImplant
from pipelines.physics.instruments import ROD, SCREW, Instrument, instrument_channels, place_instruments
from schemas.config import InstrumentConfig, UserMesh
from tests.conftest import synthetic_spine

SDD, SOD = 1020.0, 850.0


def _detector(n=200, pixel=0.2):
    """A source on -z and an n x n detector (rows along y, columns along x), pixel centres' world points."""
    source = np.array([0.0, 0.0, -SOD])
    jj, ii = np.meshgrid(np.arange(n), np.arange(n))
    targets = np.stack([(jj - (n - 1) / 2) * pixel, (ii - (n - 1) / 2) * pixel, np.full(jj.shape, SDD - SOD)], -1)
    return source, targets.reshape(-1, 3), (n, n)


def _embree_chords(mesh, source, targets):
    """Every ray's exits minus entries from Embree's hits (trimesh's ray engine): an independent chord."""
    d = targets - source
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    tri, ray, loc = mesh.ray.intersects_id(np.repeat(source[None], len(d), 0), d, multiple_hits=True,
                                           return_locations=True)
    t = np.einsum("ij,ij->i", loc - source, unit[ray])
    sign = np.sign(np.einsum("ij,ij->i", mesh.face_normals[tri], unit[ray]))
    out = np.zeros(len(d))
    np.add.at(out, ray, sign * t)
    return out


def test_a_mesh_cylinders_chords_agree_with_the_analytic_cylinder_on_every_ray():
    source, targets, shape = _detector(256, 0.25)
    axis = np.array([np.cos(0.3), np.sin(0.3), 0.2])
    axis /= np.linalg.norm(axis)
    mesh = trimesh.creation.cylinder(radius=3.0, height=40.0, sections=512)
    mesh.apply_transform(implants.pose_along(-20.0 * axis, axis) @ trimesh.transformations.translation_matrix([0, 0, 20.0]))
    meshes.check_mesh(mesh, "cylinder")
    chord = meshes.chords(mesh.vertices, mesh.faces, source, targets, shape).ravel()
    exact, *_ = instrument_channels(source, targets, [Instrument(SCREW, tuple(-20 * axis), tuple(20 * axis), 3.0, "x")],
                                   ["x"], np.array([10.0]))  # 10 g/cm^3: g/cm^2 = mm
    assert (exact[:, 0] > 0).sum() > 2000
    assert np.abs(chord - exact[:, 0]).max() < 0.1


def test_a_threaded_screws_chords_are_the_independent_ray_engines():
    source, targets, shape = _detector(200, 0.1)
    mesh = implants.pedicle_screw(6.5, 45.0)
    mesh.apply_transform(implants.pose_along(np.array([0.0, -22.0, 3.0]), np.array([0.05, 1.0, 0.2])))
    chord = meshes.chords(mesh.vertices, mesh.faces, source, targets, shape).ravel()
    assert (chord > 0).sum() > 10_000 and chord.max() > 6.0
    assert np.abs(chord - _embree_chords(mesh, source, targets)).max() < 1e-4


def test_a_mesh_screws_transmission_is_its_alloys_beer_lambert():
    """The synthesis's primary through a mesh screw (its binned tables) against the fine spectrum's
    Beer-Lambert integral over the chord Embree gives, ray by ray."""
    from pipelines.physics import tables
    from pipelines.physics.synthesis import primary
    from schemas.config import XrayConfig

    cfg = XrayConfig()
    alloy = next(a for a in cfg.alloys if a.name == "ti6al4v")
    source, targets, shape = _detector(160, 0.1)
    mesh = implants.pedicle_screw(6.5, 45.0)
    mesh.apply_transform(implants.pose_along(np.array([0.0, -22.0, 0.0]), np.array([0.0, 1.0, 0.0])))
    implant = MeshImplant.make(SCREW, "pedicle_screw", {"major_diameter": 6.5, "length": 45.0},
                               implants.pose_along(np.array([0.0, -22.0, 0.0]), np.array([0.0, 1.0, 0.0])), "ti6al4v")
    lookup = tables.tables_for(tables.SpectrumKey(90, 12.0, 3.0, 0.0, "Cesium Iodide", 0.6, 24), tuple(cfg.materials),
                               tuple(cfg.alloys))
    density = tables.alloy_density(alloy)
    metal, *_ = instrument_channels(source, targets, [implant], ["ti6al4v"], np.array([density]), shape)
    masses = np.zeros((len(targets), len(lookup.channels)))
    masses[:, lookup.channels.index("ti6al4v")] = metal[:, 0]
    _, signal = primary(masses, lookup)
    energies, fluence = tables.tube_spectrum(90, 12.0, al_mm=3.0)
    eta, kept = tables.detector_response("Cesium Iodide", 0.6, energies)
    weight = fluence * eta * kept
    mu = tables.alloy_mu_rho(alloy, energies) * density / 10.0  # per mm
    length = _embree_chords(mesh, source, targets)
    through = length > 0.5
    beer_lambert = np.exp(-np.outer(length[through], mu)) @ weight / weight.sum()
    assert through.sum() > 1000
    assert np.abs(signal[through] / signal[~through].max() / beer_lambert - 1).max() < 0.005


def test_a_convex_meshs_mask_is_its_vertices_projection_to_half_a_pixel():
    from scipy.spatial import ConvexHull, Delaunay

    source, targets, shape = _detector(200, 0.2)
    mesh = trimesh.creation.box([14.0, 9.0, 6.0])
    mesh.apply_transform(trimesh.transformations.euler_matrix(0.4, 0.7, 0.2))
    implant_mask = meshes.chords(mesh.vertices, mesh.faces, source, targets, shape) > meshes.CHORD_EPS_MM
    # the vertices' projection (column, row), from the detector's own frame
    origin, eu, ev = meshes.detector_frame(targets, shape)
    t = (SDD - SOD - source[2]) / (mesh.vertices[:, 2] - source[2])
    hit = source + (mesh.vertices - source) * t[:, None]
    uv = np.stack([(hit[:, 0] - origin[0]) / eu[0], (hit[:, 1] - origin[1]) / ev[1]], 1)
    hull = ConvexHull(uv)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    centres = np.stack([cols.ravel(), rows.ravel()], 1).astype(float)
    inside = (Delaunay(uv[hull.vertices]).find_simplex(centres) >= 0).reshape(shape)
    assert implant_mask.sum() > 1000
    differ = np.argwhere(implant_mask != inside)
    if len(differ):
        normals, offsets = hull.equations[:, :2], hull.equations[:, 2]
        distance = np.abs(centres.reshape(*shape, 2)[differ[:, 0], differ[:, 1]] @ normals.T + offsets).min(axis=1)
        assert distance.max() <= 0.5


def test_open_self_intersecting_and_inside_out_meshes_are_refused_by_name(tmp_path):
    box = trimesh.creation.box([10.0, 10.0, 10.0])
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)
    open_box.export(tmp_path / "open.stl")
    with pytest.raises(meshes.MeshError, match="open.stl: the mesh is open"):
        meshes.load_mesh(tmp_path / "open.stl")
    other = box.copy()
    other.apply_translation([4.0, 3.0, 2.0])
    overlapping = trimesh.Trimesh(np.concatenate([box.vertices, other.vertices]),
                                  np.concatenate([box.faces, other.faces + len(box.vertices)]), process=False)
    overlapping.export(tmp_path / "overlap.ply")
    with pytest.raises(meshes.MeshError, match="overlap.ply: the mesh intersects itself"):
        meshes.load_mesh(tmp_path / "overlap.ply")
    inverted = box.copy()
    inverted.invert()
    inverted.export(tmp_path / "inside_out.obj")
    with pytest.raises(meshes.MeshError, match="inside_out.obj: the mesh's normals point inwards"):
        meshes.load_mesh(tmp_path / "inside_out.obj")
    with pytest.raises(meshes.MeshError, match="mesh.txt: a mesh must be one of"):
        meshes.load_mesh(tmp_path / "mesh.txt")
    box.export(tmp_path / "box.stl")
    assert meshes.load_mesh(tmp_path / "box.stl").volume == pytest.approx(1000.0)


def test_the_checks_signed_volume_is_the_enclosed_volume_with_the_windings_sign():
    """`check_mesh` tells outward from inward normals by `signed_volume`: the volume trimesh's
    mass properties give (a box's 1000 mm^3, a bent rod's, a plate with holes), negated when the
    mesh is turned inside out."""
    box = trimesh.creation.box(extents=(10.0, 10.0, 10.0))
    rod = implants.rod([[0.0, 0.0, 0.0], [0.0, 11.0, 30.0], [0.0, 6.0, 72.0]])
    for mesh in (box, rod, implants.plate(length=55.0)):
        assert meshes.signed_volume(mesh.vertices, mesh.faces) == pytest.approx(mesh.volume, rel=1e-12)
        inverted = mesh.copy()
        inverted.invert()
        assert meshes.signed_volume(inverted.vertices, inverted.faces) == pytest.approx(-mesh.volume, rel=1e-12)
    assert meshes.signed_volume(box.vertices, box.faces) == pytest.approx(1000.0)


def test_faces_found_closed_are_not_grouped_again_but_every_mesh_s_orientation_is_checked(monkeypatch):
    """Closed and consistently wound are properties of the faces alone: a second rod of the same ring
    count (the same faces, other vertices) skips trimesh's edge grouping; its orientation is still
    checked (the same faces around mirrored vertices are refused), and faces not seen before (an open
    copy, a rod of another length) are grouped."""
    grouped = []
    watertight = trimesh.Trimesh.is_watertight
    monkeypatch.setattr(trimesh.Trimesh, "is_watertight",
                        property(lambda mesh: grouped.append(len(mesh.faces)) or watertight.fget(mesh)))
    meshes._CLOSED_FACES.clear()
    first = implants.rod([[0, 0, 0], [5, 2, 40], [8, 0, 80]], 5.5)
    bent = implants.rod([[0, 0, 0], [-6, 3, 40], [2, 9, 79]], 5.5)
    assert np.array_equal(first.faces, bent.faces) and not np.allclose(first.vertices, bent.vertices)
    meshes.check_mesh(first, "first")
    meshes.check_mesh(bent, "bent")
    assert grouped == [len(first.faces)]
    mirrored = trimesh.Trimesh(bent.vertices * [-1.0, 1.0, 1.0], bent.faces, process=False)
    with pytest.raises(meshes.MeshError, match="normals point inwards"):
        meshes.check_mesh(mirrored, "mirrored")
    open_copy = trimesh.Trimesh(first.vertices, first.faces[1:], process=False)
    with pytest.raises(meshes.MeshError, match="the mesh is open"):
        meshes.check_mesh(open_copy, "open")
    longer = implants.rod([[0, 0, 0], [5, 2, 40], [8, 0, 95]], 5.5)
    meshes.check_mesh(longer, "longer")
    assert grouped == [len(first.faces), len(open_copy.faces), len(longer.faces)]


def test_a_plate_s_holes_are_cut_whether_they_lie_apart_or_overlap():
    """The holes cut from a plate's box, through its thickness: apart (one boolean with every cutter) and
    overlapping (one cutter after another), the box's volume less the holes' (a 96-facet prism's area)."""
    import math

    facet_area = 0.5 * 96 * 2.25 ** 2 * math.sin(2 * math.pi / 96)  # the cutter's cross-section, mm^2
    apart = meshes.check_mesh(implants.plate(length=60.0), "apart")
    assert apart.volume == pytest.approx(16 * 2.5 * 60 - 4 * facet_area * 2.5, rel=1e-7)
    overlapping = meshes.check_mesh(implants.plate(length=16.0), "overlapping")  # centres 4 mm apart
    assert 16 * 2.5 * 16 - 4 * facet_area * 2.5 < overlapping.volume < 16 * 2.5 * 16 - facet_area * 2.5


def test_every_generated_implant_is_a_closed_simple_mesh_of_its_stated_size():
    screw = meshes.check_mesh(implants.pedicle_screw(6.5, 45.0, pitch=2.75, thread_depth=1.0), "screw")
    radii = np.hypot(screw.vertices[:, 0], screw.vertices[:, 1])
    assert radii.max() == pytest.approx(3.25, abs=0.01) and screw.bounds[1][2] == pytest.approx(45.0)
    # between a core cylinder and a major one
    assert np.pi * 2.25 ** 2 * 40 < screw.volume < np.pi * 3.25 ** 2 * 45
    for mesh in (implants.tulip(), implants.cage(), implants.plate(),
                 implants.rod([[0, 0, 0], [5, 2, 40], [8, 0, 80]], 5.5)):
        meshes.check_mesh(mesh, "generated")
    with pytest.raises(ValueError, match="cannot bend"):
        implants.rod([[0, 0, 0], [10, 0, 2], [0, 0, 4]], 6.0)
    # a rod is simple by construction (its mesh skips the ray-cast check in `local_mesh`): a gentle helix
    # whose turns lie 6 mm apart would touch itself, and is refused
    angle = np.arange(17) * np.pi / 4
    helix = np.stack([20 * np.cos(angle), 20 * np.sin(angle), 6 * angle / (2 * np.pi)], 1)
    with pytest.raises(ValueError, match="comes back within"):
        implants.rod(helix, 5.5)
    wide = helix * [1, 1, 3]  # the same helix with its turns 18 mm apart: accepted, and the full check agrees
    assert meshes.max_winding(implants.rod(wide, 5.5)) == 1


@pytest.fixture(scope="module")
def spine():
    ct, labels, affine = synthetic_spine(shape=(60, 60, 72), spacing=(1.0, 1.0, 1.0))
    target = int(labels[labels > 0].max())
    ids = sorted(set(labels[labels > 0].tolist()), reverse=True)
    return labels, affine, ids[ids.index(target):]


def test_mesh_implants_are_placed_in_the_spine_seeded_and_recorded(spine, tmp_path):
    labels, affine, ids = spine
    box = trimesh.creation.box([4.0, 4.0, 4.0])
    box.export(tmp_path / "marker.stl")
    cfg = InstrumentConfig(probability=1.0, screw_levels=(2, 2), rod_probability=1.0, kwires=(0, 0),
                           cage_probability=1.0, plate_probability=1.0,
                           meshes=[UserMesh(path=str(tmp_path / "marker.stl"), material="ss316l", kind="cage")])
    a = place_instruments(np.random.default_rng(4), labels, affine, ids, cfg)
    assert a == place_instruments(np.random.default_rng(4), labels, affine, ids, cfg)
    generators = [p.generator for p in a]
    assert generators.count("pedicle_screw") == 4 and generators.count("tulip") == 4 and generators.count("rod") == 2
    assert generators.count("cage") == 1 and generators.count("plate") == 1 and generators.count("file") == 1
    inverse = np.linalg.inv(affine)
    screws = [p for p in a if p.generator == "pedicle_screw"]
    for level, screw in zip([ids[0], ids[0], ids[1], ids[1]], screws):
        tip = np.asarray(screw.pose).reshape(4, 4)[:3, 3]
        i, j, k = np.rint(inverse[:3, :3] @ tip + inverse[:3, 3]).astype(int)
        assert labels[i, j, k] == level  # each screw's tip inside its vertebra
    # each rod passes through its side's tulip seats
    for r in (p for p in a if p.generator == "rod"):
        params = json.loads(r.params)
        points, radius = np.array(params["points"]), params["diameter"] / 2
        axis = implants._catmull_rom(points, 1.0)
        for seat in points[1:-1]:
            assert np.linalg.norm(axis - seat, axis=1).min() < 1e-9
        rod = trimesh.Trimesh(*r.world(), process=False)
        length = np.linalg.norm(np.diff(axis, axis=0), axis=1).sum()
        assert rod.volume == pytest.approx(np.pi * radius ** 2 * length, rel=0.01)  # a round rod along that path
    centres = [np.array(f) for f in (np.argwhere(labels == lid).mean(0) for lid in ids[:2])]
    cage = next(p for p in a if p.generator == "cage")
    z = np.asarray(cage.pose).reshape(4, 4)[2, 3]
    world_z = sorted(float((affine[:3, :3] @ c + affine[:3, 3])[2]) for c in centres)
    assert world_z[0] < z < world_z[1]  # between the two levels
    for implant in a:
        again = MeshImplant.from_record(json.loads(json.dumps(implant.record())))
        assert again == implant
        assert np.array_equal(again.world()[0], implant.world()[0])


def test_a_changed_mesh_file_is_refused_and_masks_carry_the_kinds(spine, tmp_path):
    box = trimesh.creation.box([4.0, 4.0, 4.0])
    box.export(tmp_path / "marker.stl")
    implant = MeshImplant.make(PLATE, "file", {"path": str(tmp_path / "marker.stl"),
                                               "sha256": meshes.file_sha256(tmp_path / "marker.stl")},
                               np.eye(4), "ss316l")
    source, targets, shape = _detector(64, 0.5)
    _, mask, _ = instrument_channels(source, targets, [implant], ["ss316l"], np.array([8.0]), shape)
    assert set(np.unique(mask).tolist()) == {0, PLATE}
    trimesh.creation.box([5.0, 4.0, 4.0]).export(tmp_path / "marker.stl")
    implants.local_mesh.cache_clear()
    with pytest.raises(meshes.MeshError, match="marker.stl: the file changed"):
        implant.world()
    rod = MeshImplant.make(ROD, "rod", {"points": [[0, 0, -20], [0, 0, 20]], "diameter": 5.5}, np.eye(4), "ss316l")
    cage = MeshImplant.make(CAGE, "cage", {}, np.eye(4), "ss316l")
    _, mask, _ = instrument_channels(source, targets, [rod, cage], ["ss316l"], np.array([8.0]), shape)
    assert set(np.unique(mask).tolist()) == {0, ROD, CAGE, ROD | CAGE}


def test_validate_parses_every_recorded_implant():
    from pipelines.physics.draw import XrayRecord, draw_physics
    from pipelines.tools.validate import _check_xray_record
    from schemas.config import XrayConfig

    screw = MeshImplant.make(SCREW, "pedicle_screw", {"major_diameter": 6.5, "length": 45.0}, np.eye(4), "ti6al4v")
    wire = Instrument.rounded(4, [0, 0, 0], [1, 2, 3], 0.8, "ss316l")
    record = XrayRecord(draw_physics(np.random.default_rng(1), XrayConfig()), (screw, wire), (7, 8)).record()
    assert _check_xray_record("s", json.dumps(record), 2) == []
    assert XrayRecord.from_record(record).instruments == (screw, wire)
    record["instruments"][0]["pose"] = [1.0, 2.0]
    problems = _check_xray_record("s", json.dumps(record), 2)
    assert len(problems) == 1 and "record does not parse" in problems[0]


def test_each_instrument_has_its_own_exact_bit_where_they_overlap():
    """instrument_ids: bit k is exactly where instrument k alone has a chord, for meshes and cylinders alike,
    so overlapping implants keep both; a config that could place more than the mask holds is refused."""
    source, targets, shape = _detector(96, 0.5)
    parts = [MeshImplant.make(ROD, "rod", {"points": [[0, -15, -20], [0, 15, 20]], "diameter": 5.5}, np.eye(4), "ss316l"),
             MeshImplant.make(CAGE, "cage", {}, np.eye(4), "ti6al4v"),
             Instrument.rounded(4, [-15, -15, 0], [15, 15, 0], 1.0, "ss316l"),
             MeshImplant.make(SCREW, "pedicle_screw", {"major_diameter": 6.5, "length": 45.0}, np.eye(4), "ti6al4v")]
    alloys, densities = ["ss316l", "ti6al4v"], np.array([8.0, 4.43])
    masses, kinds, ids = instrument_channels(source, targets, parts, alloys, densities, shape)
    alone_all = []
    for k, part in enumerate(parts):
        alone_masses, alone_kinds, alone_ids = instrument_channels(source, targets, [part], alloys, densities, shape)
        alone = alone_kinds > 0
        assert alone.sum() > 50 and np.array_equal(alone_ids > 0, alone)
        assert np.array_equal((ids >> k) & 1 == 1, alone), k
        alone_all.append(alone)
    assert (np.sum(alone_all, axis=0) >= 2).sum() > 20  # they do overlap, and keep every bit there
    assert np.array_equal(ids > 0, kinds > 0) and ids.dtype == np.int32
    with pytest.raises(ValueError, match="instrument_ids holds 31"):
        InstrumentConfig(screw_levels=(6, 8))


def test_instrument_masses_written_into_the_view_s_alloy_columns_are_those_of_a_new_array():
    """`out`: the alloy columns of a wider (N, channels) array are zeroed and filled in place (meshes through
    a strided view of it, cylinders directly), the same values as a new array; the other columns are kept."""
    source, targets, shape = _detector(64, 0.5)
    parts = [MeshImplant.make(ROD, "rod", {"points": [[0, -15, -20], [0, 15, 20]], "diameter": 5.5}, np.eye(4), "ss316l"),
             Instrument.rounded(4, [-15, -15, 0], [15, 15, 0], 1.0, "ti6al4v")]
    alloys, densities = ["ss316l", "ti6al4v"], np.array([8.0, 4.43])
    masses, kinds, ids = instrument_channels(source, targets, parts, alloys, densities, shape)
    wide = np.full((len(targets), 5), 3.0)
    written, kinds_out, ids_out = instrument_channels(source, targets, parts, alloys, densities, shape, out=wide[:, 3:])
    assert (masses[:, 0] > 0).sum() > 50 and (masses[:, 1] > 0).sum() > 50
    assert np.shares_memory(written, wide) and np.array_equal(wide[:, 3:], masses)
    assert (wide[:, :3] == 3.0).all() and np.array_equal(kinds_out, kinds) and np.array_equal(ids_out, ids)
    with pytest.raises(ValueError, match="instrument masses out of shape"):
        instrument_channels(source, targets, parts, alloys, densities, shape, out=wide[:, 2:])


def test_catalogue_meshes_are_checked_once_per_machine_and_a_tampered_one_again(tmp_path, monkeypatch, caplog):
    """A screw or tulip mesh (catalogue sizes) is generated and checked once; a new process (here: the
    in-memory cache cleared, as in a DataLoader worker of the next epoch) reads it back from the machine's
    cache, the same arrays. A kept file whose arrays differ from those checked is generated and checked
    again; continuous sizes (a cage) are not kept; `off` keeps nothing."""
    monkeypatch.setenv(implants.MESH_CACHE_ENV, str(tmp_path))
    checks = []
    check = meshes.check_mesh
    monkeypatch.setattr(meshes, "check_mesh", lambda *a, **k: checks.append(a[1]) or check(*a, **k))
    params = json.dumps({"diameter": 12.0, "height": 13.0, "rod_diameter": 6.0})
    implants.local_mesh.cache_clear()
    first = implants.local_mesh("tulip", params)
    implants.local_mesh.cache_clear()
    second = implants.local_mesh("tulip", params)
    assert len(checks) == 1 and all(np.array_equal(a, b) for a, b in zip(first, second))
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("mesh-") and kept[0].suffix == ".npz"
    with np.load(kept[0]) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["vertices"][0, 0] += 1.0  # not the checked mesh any more
    np.savez(kept[0], **arrays)
    implants.local_mesh.cache_clear()
    logger = logging.getLogger("spineforge")  # the CLI's set-up (earlier tests) stops its propagation
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="spineforge"):
            third = implants.local_mesh("tulip", params)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(checks) == 2 and np.array_equal(third[0], first[0]) and "failed their check" in caplog.text
    implants.local_mesh.cache_clear()
    digests = []
    digest = implants._digest
    monkeypatch.setattr(implants, "_digest", lambda *a: digests.append(a) or digest(*a))
    implants.local_mesh("cage", json.dumps({"length": 26.0, "width": 10.0, "height": 11.3}))
    assert len(list(tmp_path.iterdir())) == 1 and len(checks) == 3
    assert digests == []  # a mesh not kept is not hashed for a check it will never have
    monkeypatch.setenv(implants.MESH_CACHE_ENV, "off")
    implants.local_mesh.cache_clear()
    implants.local_mesh("tulip", params)
    assert len(checks) == 4
    implants.local_mesh.cache_clear()


def test_the_views_of_an_item_share_its_posed_meshes():
    """A posed mesh is made once for all the views of an item (the same array back, not made again), is the
    local mesh under its pose, cannot be written, and a mesh made anew by `local_mesh` is posed anew."""
    pose = np.eye(4)
    pose[:3, :3] = trimesh.transformations.rotation_matrix(0.3, [0, 1, 1])[:3, :3]
    pose[:3, 3] = [10.0, -4.0, 2.5]
    cage = MeshImplant.make(CAGE, "cage", {}, pose, "ti6al4v")
    first, faces = cage.world()
    again, _ = MeshImplant.make(CAGE, "cage", {}, pose, "ti6al4v").world()
    assert again is first and not first.flags.writeable
    local, local_faces = implants.local_mesh("cage", cage.params)
    m = np.asarray(cage.pose).reshape(4, 4)
    np.testing.assert_allclose(first, local @ m[:3, :3].T + m[:3, 3], rtol=0, atol=1e-12)  # R v + t, any order
    assert np.array_equal(faces, local_faces)
    moved = MeshImplant.make(CAGE, "cage", {}, np.eye(4), "ti6al4v").world()[0]
    assert moved is not first and np.array_equal(moved, local)
    implants.local_mesh.cache_clear()
    assert cage.world()[0] is not first


def test_snapped_vertices_are_the_projected_ones_rounded_to_the_subpixel_grid():
    """The rasteriser's fixed-point vertices come from one pass (`meshes.snapped`): the same integers
    as rounding `meshes.projected`'s coordinates, on a posed threaded screw and a tilted detector."""
    rng = np.random.default_rng(3)
    vertices = np.asarray(implants.pedicle_screw(6.5, 40.0).vertices)
    pose = implants.pose_along(rng.uniform(-20, 20, 3), rng.normal(size=3), roll=0.4)
    world = meshes.posed(np.ascontiguousarray(vertices), pose)
    source = np.array([3.0, -7.0, -SOD])
    origin, eu, ev = np.array([-25.6, -25.6, SDD - SOD]), np.array([0.2, 0.0, 0.01]), np.array([0.0, 0.2, -0.02])
    uv = meshes.projected(world, source, origin, eu, ev)
    us, vs = meshes.snapped(world, source, origin, eu, ev)
    expected = np.round(uv * meshes.SUBPIXEL).astype(np.int64)
    assert us.dtype == vs.dtype == np.int64
    assert np.array_equal(us, expected[:, 0]) and np.array_equal(vs, expected[:, 1])
    assert np.ptp(uv[:, 0]) > 10  # the screw spans many pixels


def test_a_rod_s_rings_and_self_contact_distance_are_numpy_s_expressions_to_the_bit():
    """The rod's one-pass helpers against the numpy expressions they replace: the ring points about
    each path point's frame, and the closest approach of two samples far apart along the path."""
    rng = np.random.default_rng(2)
    path = np.cumsum(rng.normal(size=(70, 3)) + [0.0, 0.0, 1.0], axis=0)
    normals, binormals = rng.normal(size=(70, 3)), rng.normal(size=(70, 3))
    phi = np.arange(implants.SECTIONS) * (2 * np.pi / implants.SECTIONS)
    want = path[:, None] + 2.75 * (np.cos(phi)[None, :, None] * normals[:, None] + np.sin(phi)[None, :, None]
                                   * binormals[:, None])
    rings = implants._rings(path, normals, binormals, np.cos(phi), np.sin(phi), 2.75)
    assert rings.tobytes() == want.reshape(-1, 3).tobytes()
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    for arc in (2.0, 20.0, 1e9):
        far = np.abs(s[:, None] - s[None, :]) > arc
        want = float(np.linalg.norm(path[:, None] - path[None, :], axis=2)[far].min()) if far.any() else np.inf
        assert implants._min_far_distance(path, arc) == want


def test_a_tube_s_side_is_found_by_its_face_pattern_and_nothing_else():
    """`tube_bands` names how many of `band_faces`' bands a face array starts with: a screw's and a rod's
    sides (their caps after them), none for a tulip, a cage or a side whose faces were reordered; a side
    whose last band is off the pattern counts the bands before it (as a capped tube's caps follow them)."""
    screw = implants.pedicle_screw(6.5, 45.0)
    bands, sections = meshes.tube_bands(np.ascontiguousarray(screw.faces, dtype=np.int64))
    assert sections == implants.SECTIONS and 2 * (bands + 1) * sections == len(screw.faces)  # side, then two caps
    rod = implants.rod(np.array([[0.0, 0, 0], [5, 20, 40], [8, 35, 80]]), 5.5)
    assert meshes.tube_bands(np.ascontiguousarray(rod.faces, dtype=np.int64))[1] == implants.SECTIONS
    for other in (implants.tulip(), implants.cage()):
        assert meshes.tube_bands(np.ascontiguousarray(other.faces, dtype=np.int64)) == (0, 0)
    side = meshes.band_faces(5, 8)
    assert meshes.tube_bands(side) == (4, 8)
    swapped = side.copy()
    swapped[[9, 10]] = swapped[[10, 9]]  # the same triangles, another order: not the pattern the rasteriser assumes
    assert meshes.tube_bands(swapped) == (0, 0)
    wound = side.copy()
    wound[-1] = wound[-1][::-1]  # the last band's last face turned: the bands before it are still the pattern
    assert meshes.tube_bands(wound) == (3, 8)


def test_a_tube_s_chords_are_the_same_bits_with_and_without_its_bands():
    """The rasteriser finds which of a tube's side faces can hold a pixel centre in a pass over its rings
    (`_band_centres`) and then takes the faces in their order: each pixel sums the same terms in the same
    order as the face-by-face pass, so the chords and the touched box are the same bits, pose after pose."""
    rng = np.random.default_rng(3)
    source, targets, shape = _detector(160, 0.3)
    origin, eu, ev = meshes.detector_frame(targets, shape)
    tubes = [implants.pedicle_screw(5.5, 40.0), implants.rod(np.array([[0.0, 0, 0], [5, 20, 40], [8, 35, 80]]), 5.5)]
    covered = 0
    for mesh in tubes:
        faces = np.ascontiguousarray(mesh.faces, dtype=np.int64)
        bands, sections = meshes.tube_bands(faces)
        assert bands > 0
        for _ in range(6):
            rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
            vertices = np.ascontiguousarray(mesh.vertices @ rotation.T + rng.normal(size=3) * 4)
            out = [np.zeros(shape), np.zeros(shape)]
            box = [np.array([shape[0], -1, shape[1], -1]), np.array([shape[0], -1, shape[1], -1])]
            for k, (b, s) in enumerate(((bands, sections), (0, 0))):
                meshes._raster_chords(vertices, faces, b, s, source, origin, eu, ev, out[k], box[k])
            assert np.array_equal(out[0], out[1]) and np.array_equal(box[0], box[1])
            covered += int((out[0] > 0).sum())
    assert covered > 5000  # the poses put the tubes on the detector
