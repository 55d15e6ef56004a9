"""`--num-workers 0` (auto) counts every thread and process a rank's loader starts against
the node's cores: 8 ranks on a 128-core node get 8 DALI threads and the feed thread each
(9 + the trainer = 10 of 16 cores a rank); on a node with 8 cores a GPU the old rule gave
7 threads + 3 source processes + the trainer = 11 of 8 (the feed has had no source
processes since issue 25: its producer thread reads in the rank)."""

from __future__ import annotations

import os

import pytest

from pipeline.cpubudget import cpu_budget


@pytest.mark.parametrize("backend, device, cores, ranks", [
    ("dali", "cuda", 128, 8), ("dali", "cuda", 64, 8), ("dali", "cuda", 48, 8), ("dali", "cuda", 16, 2),
    ("reference", "cuda", 16, 8), ("reference", "cpu", 12, 2), ("dali", "cpu", 64, 1),
])
def test_every_process_of_every_rank_fits_the_node(monkeypatch, backend, device, cores, ranks):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    budget = cpu_budget(backend, device, ranks)
    assert budget.used * ranks <= cores, budget.line()
    assert "OVER" not in budget.line()
    # one more worker would not fit (or the cap is reached)
    more = cpu_budget(backend, device, ranks, budget.workers + 1)
    assert more.used * ranks > cores or budget.workers == (8 if backend == "dali" and device == "cuda" else 4)


def test_the_line_counts_threads_and_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(128)))
    line = cpu_budget("dali", "cuda", 8).line()
    assert line == ("CPU budget: 128 cores / 8 ranks on this node = 16 a rank; "
                    "each rank 8 DALI threads + the feed thread + the trainer = 10")
    # An explicit --num-workers is kept, and said to be over the budget when it is.
    assert cpu_budget("dali", "cuda", 8, workers=16).line().endswith("= 18, OVER the node's cores")


def test_one_torchrun_a_slurm_node_divides_its_mask(monkeypatch):
    """docs/cluster.md's sbatch: one task a node with all 128 cores, 8 ranks under torchrun."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(128)))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "128")
    assert cpu_budget("dali", "cuda", 8).share == 16
