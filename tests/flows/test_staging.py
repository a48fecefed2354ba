"""A cached case result is used only when its staged files are this dataset's, under its own key."""
from pathlib import Path

from pipelines.builds.cache import staged_in_place
from pipelines.case.keys import job_key
from pipelines.case.process import CaseResult
from pipelines.ingest.cases import CaseJob
from pipelines.ingest.discover import CaseFiles
from schemas.layout import staged_case_dir
from schemas.manifest import QC_ACCEPTED


def _staged(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vertebra.h5").write_bytes(b"x")
    return {"vertebra": str(folder / "vertebra.h5")}


def test_staged_files_must_exist_in_this_cache_under_the_jobs_own_key(tmp_path, tiny_config):
    ct = tmp_path / "in" / "c0.nii.gz"
    ct.parent.mkdir()
    ct.write_bytes(b"ct")
    job = CaseJob(CaseFiles("c0", "ctspine1k", "verse", tmp_path / "in", {"ct": ct}), "train", "abc")
    cache, other = tmp_path / "a" / ".cache", tmp_path / "b" / ".cache"
    key = job_key(job, tiny_config)
    mine = CaseResult("c0", QC_ACCEPTED, staging_files=_staged(staged_case_dir(cache, key)))
    theirs = CaseResult("c0", QC_ACCEPTED, staging_files=_staged(staged_case_dir(other, key)))
    stale = CaseResult("c0", QC_ACCEPTED, staging_files={"vertebra": str(staged_case_dir(cache, key) / "drr.h5")})
    assert staged_in_place(mine, key, cache)
    assert not staged_in_place(theirs, key, cache)  # another dataset's cache, same key
    assert not staged_in_place(stale, key, cache)  # the record outlived its files
    assert staged_in_place(CaseResult("c0", "quarantined"), key, cache)  # nothing staged
