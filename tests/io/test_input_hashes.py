"""Remembered input hashes: signatures that agree across processes, re-hash when a file changes."""
import subprocess
import sys
from pathlib import Path

from pipelines.io.input_hashes import InputHashes, file_signature


def test_a_dicom_folder_signature_is_the_same_in_another_process(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        (folder / f"IM{i:04d}").write_bytes(bytes([i]) * 10)
    here = file_signature(folder)
    code = f"from pipelines.io.input_hashes import file_signature; print(file_signature({str(folder)!r}))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=str(Path(__file__).resolve().parents[2])).stdout.strip()
    assert str(here) == there


def test_a_changed_file_is_hashed_again_and_an_unchanged_one_is_not(tmp_path):
    path = tmp_path / "a.nii.gz"
    path.write_bytes(b"one")
    hashes = InputHashes(tmp_path / "cache")
    first = hashes.sha256(path)
    hashes.save()
    again = InputHashes(tmp_path / "cache")
    assert again.lookup(path) == first and again.hashed == 0
    path.write_bytes(b"two, longer")
    assert again.lookup(path) is None and again.sha256(path) != first and again.hashed == 1
