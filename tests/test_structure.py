"""The package's shape, enforced: no upward imports between pipeline stages, and every schema name
(HDF5 key, attribute, table column, file or folder name, QC reason code) written only in schemas/."""
import ast
from pathlib import Path

import pytest

import schemas.layout as layout
from schemas.manifest import (
    CASES_COLUMNS,
    MANIFEST_COLUMNS,
    PAIRS_COLUMNS,
    PRODUCTS,
    QC_ACCEPTED,
    QC_QUARANTINED,
    QC_REASONS,
)
from schemas.shard_layout import XRAY_RECORD_FIELDS, Attr, Key

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipelines"

# Stages in the order data flows; a module may import its own stage or earlier ones only.
STAGES = [
    ("schemas",),
    ("pipelines", "pipelines.errors"),
    ("pipelines.ops",),
    ("pipelines.io",),
    ("pipelines.physics",),
    ("pipelines.ingest",),
    ("pipelines.case",),
    ("pipelines.builds.request", "pipelines.builds.plan", "pipelines.builds.cache", "pipelines.builds.publish"),
    ("pipelines.tools", "pipelines.loaders", "pipelines.runtime"),
    ("pipelines.builds.tasks",),
    ("pipelines.builds.flow",),
    ("pipelines.builds.run",),
    ("pipelines.builds.serve",),
    ("pipelines.builds", "pipelines.cli"),
]


def stage_of(module: str) -> int | None:
    best = None
    for rank, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def schema_names() -> set[str]:
    names = {v for k, v in vars(Key).items() if not k.startswith("_")}
    names |= {v for k, v in vars(Attr).items() if not k.startswith("_")}
    names |= set(MANIFEST_COLUMNS) | set(CASES_COLUMNS) | set(PAIRS_COLUMNS)
    names |= {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    names |= set(PRODUCTS) | {QC_ACCEPTED, QC_QUARANTINED} | set(QC_REASONS)  # QC reasons: schemas.manifest.QC
    names |= set(XRAY_RECORD_FIELDS)
    return names


def test_stage_table_covers_every_module():
    assert [m for m in map(module_name, modules()) if stage_of(m) is None] == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_later_stage(path):
    own = stage_of(module_name(path))
    later = [(line, name) for line, name in imported(ast.parse(path.read_text(encoding="utf-8")))
             if (stage_of(name) or 0) > own]
    assert later == [], f"{path.name} imports later stages: {later}"


def literal_names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every name a module spells out: string constants, and the keywords of `dict(...)` calls (a dict
    literal written another way)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            out += [(node.lineno, kw.arg) for kw in node.keywords if kw.arg]
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_schema_name_is_written_as_a_literal_outside_schemas(path):
    names = schema_names()
    hits = [(line, name) for line, name in literal_names(ast.parse(path.read_text(encoding="utf-8"))) if name in names]
    assert hits == [], f"{path.name}: schema names as literals (use schemas/): {hits}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The two checks above are not vacuous: a literal key, a dict(...) keyword and an upward import are found."""
    tree = ast.parse("from pipelines.builds.flow import run_flow\nx = group['drr_vertebra']\ny = dict(sample_id=1, n=2)\n")
    assert [n for _, n in imported(tree) if stage_of(n) > stage_of("pipelines.io.shards")] == ["pipelines.builds.flow"]
    assert {n for _, n in literal_names(tree)} & schema_names() == {"drr_vertebra", "sample_id"}


def test_importing_the_loaders_imports_neither_diffdrr_nor_prefect():
    """A trainer that loads shards pays for torch and h5py, not for the build's machinery."""
    import subprocess
    import sys

    code = ("import sys, pipelines.loaders; "
            "print(sorted(m for m in ('diffdrr', 'prefect', 'dask', 'torchio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    assert out.stdout.strip() == "[]"
    consumers = subprocess.run([sys.executable, "-c", "import sys, pipelines.loaders.consumers; print('diffdrr' in sys.modules)"],
                               capture_output=True, text=True, cwd=str(ROOT), check=True)
    assert consumers.stdout.strip() == "True"  # the check above can fail: this import does bring it in
