"""The one bounded cache: at most ``size`` entries, least recently used out, failures never cached."""

from __future__ import annotations

import threading

import pytest

from contrast.cache import BoundedCache


def test_holds_at_most_size_entries_and_evicts_the_least_recently_used() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_computes_once_and_never_caches_a_failure() -> None:
    cache: BoundedCache[str, int] = BoundedCache(4)
    calls: list[str] = []

    def compute() -> int:
        calls.append("x")
        return 7

    assert cache.get_or_compute("k", compute) == 7
    assert cache.get_or_compute("k", compute) == 7
    assert calls == ["x"]

    def fail() -> int:
        raise ValueError("bad input")

    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get_or_compute("bad", fail)
    assert cache.get("bad") is None


def test_pop_and_clear_forget_entries() -> None:
    cache: BoundedCache[int, str] = BoundedCache(4)
    cache.put(1, "one")
    cache.put(2, "two")
    cache.pop(1)
    cache.pop(3)  # absent: nothing happens
    assert cache.get(1) is None
    cache.clear()
    assert len(cache) == 0


def test_a_cache_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_concurrent_writers_keep_the_bound() -> None:
    cache: BoundedCache[int, int] = BoundedCache(8)

    def write(base: int) -> None:
        for i in range(500):
            cache.put(base + i, i)
            cache.get(base + i // 2)

    threads = [threading.Thread(target=write, args=(n * 1000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 8
