"""Tests for mesojax.progress: phase timing, periodic meter lines, the summary table."""

import time

import pytest
from absl import logging

from mesojax import progress


@pytest.fixture
def lines(monkeypatch):
    seen = []
    monkeypatch.setattr(logging, "info", lambda fmt, *args: seen.append(fmt % args))
    return seen


def test_phase_logs_start_and_duration_and_sums_repeats(lines):
    timings = progress.Timings()
    for _ in range(2):
        with progress.phase("fit ar", timings):
            time.sleep(0.01)
    assert list(timings) == ["fit ar"] and timings["fit ar"] >= 0.02
    assert lines[0] == "fit ar ..." and lines[1].startswith("fit ar: done in ")


def test_phase_that_fails_is_logged_reraised_and_not_recorded(lines):
    timings = progress.Timings()
    with pytest.raises(KeyError):
        with progress.phase("load data", timings):
            raise KeyError("x")
    assert timings == {} and lines[-1].startswith("load data: failed after ")


def test_meter_is_quiet_for_short_loops_and_reports_rate_and_eta(lines, monkeypatch):
    quick = progress.Meter("chunks", 3, every_s=60)
    for i in range(3):
        quick.update(i + 1)
    assert lines == []
    clock = iter([0.0, 10.0, 20.0, 30.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    slow = progress.Meter("steps", 4, every_s=5, unit="steps")
    slow.update(1)  # at t = 10 s: 0.1 steps/s, 30 s left
    slow.update(4)  # the end of a loop that reported on the way
    assert lines == ["steps: 1/4 [0.10 steps/s, eta 30 s]", "steps: 4/4 [0.20 steps/s, eta 0 s]"]


def test_table_lists_phases_in_order_with_the_total():
    text = progress.table(progress.Timings({"load data": 1.5, "training": 10.0}))
    rows = text.splitlines()
    assert rows[1].split() == ["load", "data", "1.5"]
    assert rows[2].split() == ["training", "10.0"] and rows[-1].split() == ["total", "11.5"]
    assert progress.table(progress.Timings()) == ""


def test_compilation_cache_keeps_compiled_programs_across_processes(tmp_path):
    """A second process finds the first one's compiled program in the cache directory."""
    import subprocess
    import sys

    code = ("import jax, jax.numpy as jnp; from mesojax import train; "
            f"train.enable_compilation_cache({str(tmp_path)!r}, min_compile_seconds=0.0); "
            "print(float(jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(7)).sum()))")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    entries = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert entries, first.stderr
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert second.stdout == first.stdout
    # Read, not written again: a miss would have compiled and stored the entry anew.
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == entries
