"""What a build reads: a file whose signature is new is read once to hash it while the build is
planned (the decision is made from content) and once more by its case task, which decodes it; a
file whose hash is known is read once, decoded; nothing is read when the version is published."""
from collections import Counter
from pathlib import Path

import pytest
import SimpleITK as sitk

from pipelines.builds.run import run_build
from tests.flows.test_orchestration import collection, small_config


@pytest.fixture
def reads(monkeypatch, tmp_path):
    """Counts full reads of input files (by name) through every path SpineForge could take."""
    counts = Counter()
    inputs = tmp_path / "in"

    def counted(real, name_of):
        def wrapper(*args, **kwargs):
            path = Path(str(name_of(*args)))
            if inputs in path.parents:
                counts[path.name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(Path, "read_bytes", counted(Path.read_bytes, lambda self: self))
    import pipelines.ingest.load as load
    import pipelines.io.input_hashes as input_hashes
    import pipelines.io.volumes as volumes
    hashing = counted(volumes.sha256_file, lambda path, *a: path)  # one wrapper, however it is reached
    for module in (volumes, input_hashes, load):
        monkeypatch.setattr(module, "sha256_file", hashing)
    monkeypatch.setattr(sitk, "ReadImage", counted(sitk.ReadImage, lambda path, *a: path))
    return inputs, counts


def test_first_build_rerun_and_noop_read_each_input_twice_once_or_not_at_all(reads, tmp_path):
    inputs, counts = reads
    collection(inputs, n=2)
    names = sorted(p.name for p in inputs.iterdir())
    out = str(tmp_path / "out")

    first = run_build(small_config(), [str(inputs)], out)  # new files: hashed while planning, then decoded
    assert first.published and counts == Counter({n: 2 for n in names}) and first.files_hashed == len(names)

    counts.clear()  # another seed: every case is recomputed, from files whose hashes are now known
    second = run_build(small_config(seed=7), [str(inputs)], out)
    assert second.published and second.cases_cached == 0 and counts == Counter({n: 1 for n in names})

    counts.clear()  # unchanged inputs and config: known to be published without reading anything
    again = run_build(small_config(seed=7), [str(inputs)], out)
    assert not again.published and counts == Counter()


def test_a_changed_file_is_hashed_when_planned_and_the_next_build_reuses_the_result(reads, tmp_path):
    inputs, counts = reads
    collection(inputs, n=2)
    out = str(tmp_path / "out")
    first = run_build(small_config(), [str(inputs)], out)
    from tests.conftest import write_ctspine_case
    write_ctspine_case(inputs, "c1", noise_seed=99)  # new content for one case
    counts.clear()
    second = run_build(small_config(), [str(inputs)], out)
    assert second.published and second.build_id != first.build_id
    assert counts == Counter({"c1.nii.gz": 2, "c1_seg.nii.gz": 2})  # hashed, decoded; c0 came from the cache
    assert second.cases_cached == 1
    counts.clear()
    third = run_build(small_config(), [str(inputs)], out)
    assert not third.published and third.version == second.version and counts == Counter()


def test_an_unchanged_rebuild_is_answered_without_prefect_or_dask(tmp_path):
    """The CLI decides "already published" from remembered hashes before importing Prefect."""
    import json
    import subprocess
    import sys

    inputs = collection(tmp_path / "in", n=1)
    config = tmp_path / "c.json"
    config.write_text(json.dumps(small_config().model_dump(mode="json")))
    first = run_build(small_config(), [str(inputs)], str(tmp_path / "out"))
    script = (f"import sys; from pipelines.cli import main; "
              f"rc = main(['build', '--config', {str(config)!r}, '--input', {str(inputs)!r}, '--out', "
              f"{str(tmp_path / 'out')!r}]); "
              f"print('heavy:', sorted(m for m in ('prefect', 'distributed', 'torch') if m in sys.modules)); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(Path(__file__).resolve().parents[2]))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already published (no-op)" in done.stdout and first.version_dir in done.stdout
    assert "heavy: []" in done.stdout
