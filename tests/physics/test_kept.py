"""`physics.kept.Kept`: values made once per key, the least recently used let go, one value per key
across threads."""
import threading

import pytest

from pipelines.physics.kept import Kept


def test_a_kept_value_is_made_once_and_the_least_recently_used_goes_first():
    kept, made = Kept(2), []

    def make(key):
        return lambda: made.append(key) or [key]
    a = kept.get("a", make("a"))
    assert kept.get("a", make("a")) is a and made == ["a"]
    kept.get("b", make("b"))
    kept.get("a", make("a"))  # a used last: b goes when c comes
    kept.get("c", make("c"))
    assert len(kept) == 2 and made == ["a", "b", "c"]
    assert kept.get("a", make("a")) is a and made == ["a", "b", "c"]
    kept.get("b", make("b"))
    assert made == ["a", "b", "c", "b"]
    kept.clear()
    assert len(kept) == 0
    with pytest.raises(ValueError, match="at least one"):
        Kept(0)


def test_threads_making_one_key_at_once_all_get_the_first_kept():
    kept, start = Kept(4), threading.Barrier(8)
    got = []

    def worker():
        start.wait()
        got.append(kept.get("k", lambda: object()))
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(g is got[0] for g in got) and len(kept) == 1
