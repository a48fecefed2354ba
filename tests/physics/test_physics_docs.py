"""The physics figures docs/physics.md states are what the repository's scripts print: the scatter models'
SPRs exactly (deterministic); the Monte Carlo's SPRs (10 and 20 cm at 90 kV: thicker slabs need more
histories than a test affords, the benchmark prints them) and TG-195 totals within their statistics,
re-run with fewer histories."""
import re
from pathlib import Path

import pytest

from benchmarks.scatter import CASES, GRIDS, Case, model_spr, water_slab_spr
from benchmarks.tg195 import run_case2

DOC = (Path(__file__).resolve().parents[2] / "docs" / "physics.md").read_text(encoding="utf-8")


def _rows(header: str) -> list[list[str]]:
    table = DOC[DOC.index(header):].split("\n\n")[0]
    lines = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _case(water: str, kv: str, field: str, filtration: str, gap: str) -> Case:
    """The benchmark's case a documented row names (its filtration and air gap as printed)."""
    case = next(c for c in CASES if (f"{c.water_cm:g} cm", f"{c.kv}", f"{c.field_cm * 10:g} mm", c.filtration,
                                     f"{c.gap_cm:g} cm") == (water, kv, field, filtration, gap))
    return case


def test_the_documented_spr_table_is_what_benchmarks_scatter_prints():
    rows = _rows("| water | kV | field | filtration | air gap | SPR, Monte Carlo | kernels (default) | / MC | gaussian | / MC |")
    assert len(rows) == len(CASES)
    for water, kv, field, filtration, gap, mc, kernels, k_ratio, gaussian, g_ratio in rows:
        case = _case(water, kv, field, filtration, gap)
        assert f"{model_spr(0, model='kernels', case=case):.3f}" == kernels, case
        assert f"{model_spr(0, model='gaussian', case=case):.3f}" == gaussian, case
        assert float(k_ratio) == pytest.approx(float(kernels) / float(mc), abs=0.006)
        assert float(g_ratio) == pytest.approx(float(gaussian) / float(mc), abs=0.006)
        if case in (Case(10.0, 90), Case(20.0, 90)):  # the Monte Carlo column, re-run with fewer histories
            fresh = water_slab_spr(0, 2_000_000 if case.water_cm < 15 else 6_000_000, seed=11, case=case)
            assert abs(fresh["spr"] - float(mc)) < 4 * fresh["spr_se"], (case, fresh["spr"], fresh["spr_se"])


def test_the_documented_grid_table_is_what_benchmarks_scatter_prints():
    """Behind grids: the models' SPRs exactly, and the Monte Carlo's behind a 10:1 grid through 20 cm again."""
    rows = _rows("| water | kV | field | filtration | air gap | grid | SPR, Monte Carlo | kernels | / MC | gaussian | / MC |")
    assert len(rows) >= 8
    for water, kv, field, filtration, gap, grid, mc, kernels, k_ratio, gaussian, g_ratio in rows:
        case = _case(water, kv, field, filtration, gap)
        ratio, lines = grid.split(":1, ")
        g = next(g for g in GRIDS if (f"{g.ratio:g}", f"{g.lines_per_cm:g}/cm") == (ratio, lines))
        assert f"{model_spr(0, model='kernels', grid=g, case=case):.3f}" == kernels, (case, grid)
        assert f"{model_spr(0, model='gaussian', grid=g, case=case):.3f}" == gaussian, (case, grid)
        for model, ratio in ((kernels, k_ratio), (gaussian, g_ratio)):  # within the printed values' rounding
            m, c = float(model), float(mc)  # each printed to 0.0005: the ratio's own, then both terms'
            assert float(ratio) == pytest.approx(m / c, abs=0.0051 + 0.0005 / (c - 0.0005) + m * 0.0005 / (c - 0.0005) ** 2)
        if case == Case(20.0, 90) and g == GRIDS[0]:
            fresh = water_slab_spr(0, 6_000_000, seed=11, grids=(g,), case=case)
            assert abs(fresh["grid_spr"][0] - float(mc)) < 4 * fresh["grid_spr_se"][0], (fresh["grid_spr"], mc)


def test_the_documented_profile_of_every_case_is_what_benchmarks_scatter_prints():
    """Each case's worst band across the field, without a grid and behind the 10:1 grid: the band is one of
    the field's, the kernels' SPR there exactly (deterministic), the ratio from the printed columns."""
    from pipelines.physics import scatter_kernels

    rows = _rows("| water | kV | field | filtration | air gap | grid | bands | worst band | SPR, Monte Carlo | ± s.e. "
                 "| kernels | / MC |")
    assert len(rows) == 2 * len(CASES)
    for water, kv, field, filtration, gap, grid, bands, band, mc, se, kernels, ratio in rows:
        c = _case(water, kv, field, filtration, gap)
        centres = list(scatter_kernels.profile_bands_mm(c.field_cm))
        assert len(centres) == int(bands) and float(se) > 0
        model = scatter_kernels.model_spr(c.water_cm, c.kv, c.al_mm, field_cm=c.field_cm, cu_mm=c.cu_mm,
                                          sdd_cm=c.sdd_cm, sod_cm=c.sod_cm, profile=True,
                                          grid=None if grid == "none" else GRIDS[0])
        assert f"{model[centres.index(float(band.removesuffix(' mm')))]:.3f}" == kernels, (c, grid, band)
        m, v = float(kernels), float(mc)
        assert float(ratio) == pytest.approx(m / v, abs=0.0051 + 0.0005 / (v - 0.0005) + m * 0.0005 / (v - 0.0005) ** 2)


def test_the_documented_tg195_totals_are_what_benchmarks_tg195_prints():
    rows = _rows("| beam | total body, Monte Carlo | TG-195 | difference |")
    assert [r[0] for r in rows] == ["56.4 keV", "120 kVp"]
    for beam, mc, reference, difference, *_ in rows:
        fresh = run_case2(300_000, beam, seed=5)
        assert fresh["total"] == pytest.approx(float(mc), rel=0.01), beam
        assert round(fresh["total_ref"], 1) == float(reference)
        assert float(difference.rstrip(" %").replace("−", "-")) == pytest.approx(
            (float(mc) / float(reference) - 1) * 100, abs=0.006)
    assert re.search(r"3\.449 mm; mean energy 56\.38 keV", DOC)


def test_the_documented_spr_profiles_are_what_benchmarks_scatter_prints():
    """The profile table: the API's SPRs exactly (deterministic), the ratios from the printed columns, and the
    spine phantom's Monte Carlo SPRs in its three central bands again with fewer histories."""
    from pipelines.physics import phantoms, scatter_profiles

    rows = _rows("| band centre | water: MC | API | / MC | spine: MC | API | / MC | chest: MC | API | / MC |")
    assert len(rows) == scatter_profiles.BANDS
    cases = {"water": phantoms.box_hu((400.0, 200.0, 400.0), 5.0), "spine": phantoms.spine_slab(),
             "chest": phantoms.chest_slab()}
    for k, (name, (hu, affine)) in enumerate(cases.items()):
        api = scatter_profiles.model_profile(hu, affine)["spr"]
        for band, row in enumerate(rows):
            mc, model, ratio = row[1 + 3 * k: 4 + 3 * k]
            assert f"{api[band]:.3f}" == model, (name, band)
            assert float(ratio) == pytest.approx(float(model) / float(mc), abs=0.006), (name, band)
    fresh = scatter_profiles.monte_carlo_profile(cases["spine"][0], 5.0, 3_000_000, seed=11)
    for band in (4, 5, 6):
        documented = float(rows[band][4])
        assert abs(fresh["spr"][band] - documented) < 4 * fresh["spr_se"][band], (band, fresh["spr"][band])


def test_the_documented_off_axis_gains_are_what_benchmarks_scatter_prints():
    """The off-axis pencils' table: every aim without and behind the 10:1 grid, the kernels' gain exactly
    (deterministic), the ratio from the printed columns."""
    from pipelines.physics import scatter_kernels

    rows = _rows("| pencil aimed at | grid | gain, Monte Carlo | ± s.e. | kernels | / MC |")
    aims = [(d, 0.0) for d in scatter_kernels.OFF_AXIS_CM] + [(0.0, d) for d in scatter_kernels.OFF_AXIS_CM]
    assert [r[0] for r in rows] == [f"({x:g}, {y:g}) cm" for x, y in aims] * 2
    for aim, (_, grid, mc, se, kernels, ratio) in zip(aims * 2, rows):
        g = None if grid == "none" else GRIDS[0]
        assert f"{scatter_kernels.model_off_axis_gain(aim, grid=g):.3f}" == kernels, (aim, grid)
        assert float(se) > 0 and float(ratio) == pytest.approx(float(kernels) / float(mc), abs=0.006)
