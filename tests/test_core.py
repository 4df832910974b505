"""`neuralwiki.core`'s timer, `best_time`, which chapter 1 and appendix E time their rungs with."""
import time

from neuralwiki.core import best_time


def slower_and_slower():
    "A function whose first call returns at once and each later call sleeps 0.03 s longer; it counts its calls."
    calls = []
    def f():
        time.sleep(0.03 * len(calls))
        calls.append(1)
    return f, calls


def test_best_time_is_the_fastest_call_not_the_mean():
    f, calls = slower_and_slower()
    assert best_time(f, repeats=3, budget=10) < 0.02  # the first call; the mean would be 0.03 s
    assert len(calls) == 3


def test_best_time_stops_at_its_budget():
    f, calls = slower_and_slower()
    best_time(f, repeats=5, budget=0)
    assert len(calls) == 1


def test_best_time_calls_at_least_once():
    f, calls = slower_and_slower()
    best_time(f, repeats=0)
    assert len(calls) == 1


def test_best_time_passes_the_arguments():
    seen = []
    best_time(lambda *args: seen.append(args), 1, 'two', repeats=2)
    assert seen == [(1, 'two'), (1, 'two')]
