"""Instruments: exact projected geometry, seeded placement in the target vertebra, their own masks."""
import numpy as np

from pipelines.ops.camera import base_camera, project_points
from pipelines.ops.drr import Renderer
from pipelines.ops.traversal import label_boxes
from pipelines.physics import instruments, meshes
from pipelines.physics.instruments import KWIRE, SCREW, Instrument, instrument_channels, place_instruments
from schemas.config import InstrumentConfig
from schemas.detector import Geometry
from tests.conftest import synthetic_spine


def test_a_wires_projected_axis_lies_on_its_analytic_projection():
    volume = np.zeros((8, 8, 8), np.float32)
    volume[3:5, 3:5, 3:5] = 0.02
    g = Geometry(160, 160, 0.5, 1020.0, 850.0)
    renderer = Renderer(volume, np.eye(4), g)
    camera = base_camera("AP", g.sod_mm, (0.0, 0.0, 0.0))
    source, targets = renderer.world_rays(camera)
    p0, p1 = np.array([-20.0, 5.0, -25.0]), np.array([15.0, -10.0, 30.0])
    wire = Instrument(KWIRE, tuple(p0), tuple(p1), 0.8, "ss316l")
    metal, mask, _ = instrument_channels(source, targets, [wire], ["ss316l"], np.array([10.0]))  # 10 g/cm^3: g/cm^2 = mm
    chord = metal[:, 0].reshape(g.height, g.width)
    assert np.array_equal(mask.reshape(g.height, g.width) == KWIRE, chord > 0)
    ends = project_points(camera, np.stack([p0, p1]), g)  # (row, col) of both ends
    errors = []
    for row in range(g.height):
        profile = chord[row]
        if profile.sum() == 0 or not (min(ends[:, 0]) + 3 < row < max(ends[:, 0]) - 3):
            continue
        centroid = np.sum(np.arange(g.width) * profile) / profile.sum()
        t = (row - ends[0, 0]) / (ends[1, 0] - ends[0, 0])
        errors.append(abs(centroid - (ends[0, 1] + t * (ends[1, 1] - ends[0, 1]))))
    assert len(errors) > 50 and max(errors) < 0.5


def test_screws_sit_in_the_target_vertebra_and_placement_is_seeded():
    ct, labels, affine = synthetic_spine(shape=(60, 60, 72), spacing=(1.0, 1.0, 1.0))
    cfg = InstrumentConfig(probability=1.0, screw_levels=(2, 2), rod_probability=1.0, kwires=(1, 1), shapes="cylinders")
    target = int(labels[labels > 0].max())
    ids = sorted(set(labels[labels > 0].tolist()), reverse=True)
    ids = ids[ids.index(target):]
    a = place_instruments(np.random.default_rng(4), labels, affine, ids, cfg)
    b = place_instruments(np.random.default_rng(4), labels, affine, ids, cfg)
    assert a == b and a != place_instruments(np.random.default_rng(5), labels, affine, ids, cfg)
    # with the labels' boxes kept by the caller: the same instruments, found without whole-map passes
    assert place_instruments(np.random.default_rng(4), labels, affine, ids, cfg, label_boxes(labels)) == a
    # with the frames kept by the caller: found once, then the same instruments from the kept frames alone
    frames = {}
    assert place_instruments(np.random.default_rng(4), labels, affine, ids, cfg, label_boxes(labels), frames) == a
    assert sorted(frames) == sorted(ids[:2]) and all(f is not None for f in frames.values())
    blank = np.zeros_like(labels)  # a search now would find no vertebra at all
    assert place_instruments(np.random.default_rng(4), blank, affine, ids, cfg, label_boxes(labels), frames) == a
    kinds = [p.kind for p in a]
    assert kinds.count(SCREW) == 8 and kinds.count(KWIRE) == 1 and len(a) == 11  # 2 levels x 2 screws x (shaft, head), 2 rods
    inverse = np.linalg.inv(affine)
    tips = [np.array(p.p0) for p in a if p.kind == SCREW][::2]
    for level, tip in zip([ids[0], ids[0], ids[1], ids[1]], tips):
        i, j, k = np.rint(inverse[:3, :3] @ tip + inverse[:3, 3]).astype(int)
        assert labels[i, j, k] == level  # each screw's tip lies inside its vertebra
    assert place_instruments(np.random.default_rng(4), labels, affine, ids, InstrumentConfig(probability=0.0)) == []


def test_an_instrument_record_round_trips_and_is_rounded_to_a_micrometre():
    wire = Instrument.rounded(KWIRE, np.array([1.23456, 2.0, 3.0]), [4.0, 5.0, 6.0004999], 0.812345678, "ss316l")
    assert wire.p0 == (1.235, 2.0, 3.0) and wire.p1 == (4.0, 5.0, 6.0) and wire.radius == 0.8123
    assert Instrument.from_record(wire.record()) == wire
    assert wire.record() == {"kind": KWIRE, "p0": [1.235, 2.0, 3.0], "p1": [4.0, 5.0, 6.0], "radius": 0.8123,
                             "material": "ss316l"}


def test_cylinders_read_only_the_rays_near_them_and_keep_every_ray_s_sums_to_the_bit():
    """With the detector's shape each cylinder is walked over the pixels near its projection only; the
    masses and masks equal those of every ray tested (no shape), to the bit: wires across the field,
    at its edge, off it, one around the source, and crossing one another."""
    volume = np.zeros((8, 8, 8), np.float32)
    volume[3:5, 3:5, 3:5] = 0.02
    g = Geometry(96, 128, 0.6, 1020.0, 850.0)
    renderer = Renderer(volume, np.eye(4), g)
    rng = np.random.default_rng(7)
    for view in ("AP", "LAT"):
        camera = base_camera(view, g.sod_mm, (0.0, 0.0, 0.0))
        source, targets = renderer.world_rays(camera)
        wires = []
        for _ in range(8):
            p0 = rng.uniform(-40, 40, 3)
            wires.append(Instrument(KWIRE, tuple(p0), tuple(p0 + rng.uniform(-30, 30, 3)), float(rng.uniform(0.4, 3.0)),
                                    "ss316l" if rng.random() < 0.5 else "ti6al4v"))
        far = np.array([400.0, 0.0, 0.0])  # beyond the field's edge
        wires.append(Instrument(SCREW, tuple(far), tuple(far + [0.0, 0.0, 20.0]), 2.0, "ss316l"))
        wires.append(Instrument(KWIRE, tuple(source - 5.0), tuple(source + 5.0), 1.0, "ss316l"))  # around the source
        alloys, densities = ["ss316l", "ti6al4v"], np.array([8.0, 4.43])
        boxed = instrument_channels(source, targets, wires, alloys, densities, (g.height, g.width))
        every = instrument_channels(source, targets, wires, alloys, densities)
        for a, b in zip(boxed, every):
            assert a.tobytes() == b.tobytes()
        assert np.count_nonzero(boxed[1]) > 200  # the wires cross the field
    # a thin wire across the field's diagonal: its spans hold a thin band of it, not its bounding rectangle
    diagonal = Instrument(KWIRE, (-35.0, 0.0, -28.0), (35.0, 0.0, 28.0), 0.5, "ss316l")
    rows = instruments._cylinders([diagonal])
    spans = np.empty((1, g.height, 2), dtype=np.int64)
    frame = meshes.detector_frame(targets, (g.height, g.width))
    instruments._cylinder_spans(rows, source, *frame, g.height, g.width, spans)
    pixels = np.maximum(spans[0, :, 1] - spans[0, :, 0] + 1, 0).sum()
    assert 0 < pixels < 0.1 * g.height * g.width
