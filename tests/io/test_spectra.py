"""The spectra cache: work not redone, damaged files recomputed, off when asked."""
import numpy as np

from pipelines.io import spectra


def test_a_cached_spectrum_is_computed_once_and_a_damaged_one_again(tmp_path, monkeypatch):
    monkeypatch.setenv(spectra.CACHE_ENV, str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return np.arange(3.0), np.ones(3)

    first = spectra.cached_spectrum("k1", compute)
    second = spectra.cached_spectrum("k1", compute)
    assert len(calls) == 1 and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert [p.name for p in tmp_path.iterdir()] == ["spectrum-k1.npz"]  # no temporary file left
    (tmp_path / "spectrum-k1.npz").write_bytes(b"not a spectrum")
    spectra.cached_spectrum("k1", compute)
    assert len(calls) == 2
    monkeypatch.setenv(spectra.CACHE_ENV, "off")
    spectra.cached_spectrum("k1", compute)
    spectra.cached_spectrum("k1", compute)
    assert len(calls) == 4


def test_an_unwritable_cache_costs_time_not_the_build(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(spectra.CACHE_ENV, str(blocker / "cache"))  # a folder under a file: never creatable
    energies, fluence = spectra.cached_spectrum("k2", lambda: (np.arange(2.0), np.ones(2)))
    assert len(energies) == 2 and blocker.is_file()
