from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prokd.eval.efficiency import count_macs, count_parameters, interleaved_latency, measure_latency, time_interleaved


def test_count_parameters_includes_frozen_and_counts_shared_once():
    conv = nn.Conv2d(3, 8, 3)  # 8 * 3 * 9 weights + 8 biases
    model = nn.Sequential(conv, nn.BatchNorm2d(8))  # + 8 + 8 affine; running statistics are buffers
    conv.requires_grad_(False)
    assert count_parameters(model) == 224 + 16
    shared = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(shared, shared)) == 20


@pytest.mark.parametrize(
    ("layer", "input_shape", "expected"),
    [
        (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 16, 16), 8 * 16 * 16 * 3 * 3 * 3),
        (nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), (2, 4, 16, 16), 2 * 8 * 8 * 8 * 2 * 3 * 3),
        (nn.Linear(10, 5), (3, 10), 3 * 10 * 5),
    ],
    ids=["conv", "strided-grouped-conv", "linear"],
)
def test_count_macs_matches_hand_formula(layer, input_shape, expected):
    assert count_macs(layer, input_shape) == expected


def test_count_macs_ignores_elementwise_and_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 1, 1))
    model.train()
    assert count_macs(model, (1, 1, 8, 8)) == 2 * 8 * 8 * 9 + 8 * 8 * 2
    assert model.training and model[1].training


def test_measure_latency_reports_positive_times_and_restores_state():
    model = nn.Conv2d(1, 4, 3, padding=1)
    previous_threads = torch.get_num_threads()
    result = measure_latency(model, input_shape=(1, 1, 32, 32), threads=1, warmup=1, repeats=5)
    assert set(result) == {"median_ms", "p90_ms", "threads", "repeats"}
    assert 0 < result["median_ms"] <= result["p90_ms"]
    assert (result["threads"], result["repeats"]) == (1, 5)
    assert torch.get_num_threads() == previous_threads
    assert model.training


def test_measure_latency_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency(nn.Identity(), input_shape=(1, 1, 4, 4), repeats=0)
    with pytest.raises(ValueError, match="2 models but 1 input shapes"):
        interleaved_latency([nn.Identity(), nn.Identity()], [(1, 1, 4, 4)])


def test_time_interleaved_takes_turns_with_the_same_repeats_per_call():
    order = []
    calls = [lambda name=name: order.append(name) for name in "ABC"]
    timings = time_interleaved(calls, threads=1, warmup=1, repeats=3)
    assert order == list("ABC") * 4  # one warm-up round, then three timed rounds, each model in turn
    assert [len(ms) for ms in timings] == [3, 3, 3] and all(t >= 0 for ms in timings for t in ms)


def test_interleaved_latency_gives_identical_networks_alike_and_a_larger_one_more():
    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))
    twin = copy.deepcopy(small)
    large = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(64, 1, 3, padding=1))
    large.train()
    previous_threads = torch.get_num_threads()
    results = interleaved_latency([small, twin, large], [(1, 1, 64, 64)] * 3, threads=1, warmup=2, repeats=9)
    assert len(results) == 3 and all(r["repeats"] == 9 and r["threads"] == 1 for r in results)
    small_ms, twin_ms, large_ms = (r["median_ms"] for r in results)
    assert max(small_ms, twin_ms) / min(small_ms, twin_ms) < 3
    assert large_ms > 3 * max(small_ms, twin_ms)  # ~25x the MACs
    assert large.training and torch.get_num_threads() == previous_threads
