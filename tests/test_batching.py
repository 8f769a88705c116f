"""The one bucketing rule (pipeline.length_grouped_batches) and training's TrainBatches: every example
once per epoch, little padding, equal steps per process."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline import WINDOW_BATCHES, length_grouped_batches
from training import TrainBatches

LENGTHS = np.random.default_rng(0).integers(5, 128, size=1003).tolist()


def padding_share(batches) -> float:
    real = sum(LENGTHS[i] for b in batches for i in b)
    return 1 - real / sum(max(LENGTHS[i] for i in b) * len(b) for b in batches)


def indices(batch: list[int]) -> list[int]:
    return batch


def test_each_example_once_and_far_less_padding_than_random_batches():
    sampler = TrainBatches(LENGTHS, batch_size=32, collate=indices, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
    assert len(batches) == len(sampler) == 32
    order = np.random.default_rng(1).permutation(len(LENGTHS))
    random_batches = [order[i:i + 32].tolist() for i in range(0, len(order), 32)]
    assert padding_share(batches) < 0.05 < 0.3 < padding_share(random_batches)


def test_epochs_differ_and_are_reproducible():
    sampler = TrainBatches(LENGTHS, batch_size=32, collate=indices, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    # the order depends on seed + epoch only, so every process draws the same one
    assert second == list(TrainBatches(LENGTHS, 32, indices, seed=2))


def test_collate_receives_the_row_indices_of_each_batch():
    batches = list(TrainBatches(LENGTHS, 100, lambda rows: [LENGTHS[i] for i in rows], seed=0))
    assert sorted(length for batch in batches for length in batch) == sorted(LENGTHS)


@pytest.mark.parametrize("replicas", [2, 3])
def test_processes_get_disjoint_batches_and_the_same_number_of_steps(replicas):
    samplers = [TrainBatches(LENGTHS, 32, indices, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)]
    per_rank = [list(s) for s in samplers]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(samplers[0])
    covered = {i for batches in per_rank for b in batches for i in b}
    assert covered == set(range(len(LENGTHS)))  # padding repeats a few batches, never drops one


def test_without_rng_batches_are_sorted_by_length_inside_each_window():
    batch_size = 4
    window = batch_size * WINDOW_BATCHES
    batches = length_grouped_batches(LENGTHS, batch_size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(LENGTHS)))
    for start in range(0, len(LENGTHS), window):
        in_window = flat[start:start + window]
        assert sorted(in_window) == list(range(start, min(start + window, len(LENGTHS))))  # windows keep input order
        assert [LENGTHS[i] for i in in_window] == sorted(LENGTHS[start:start + window], reverse=True)
    assert len(batches) == -(-len(LENGTHS) // batch_size)
