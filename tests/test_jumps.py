"""Jumps in a keypoint track: found exactly where they were put, and the robust posterior's
refusal to follow a swapped peak measured the way bench_robust_jumps measures it on real video."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.eval.jumps import Jump, find_jumps, follow_shares
from dgp_pyro.model.dgp import ModelSettings
from dgp_pyro.model.potentials import PotentialWeights
from dgp_pyro.model.structured_guide import GuideCorrection
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.posterior.posterior2d import PosteriorModel
from dgp_pyro.posterior.predict import NetworkSummaries
from dgp_pyro.run import RunConfig, load_run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SIZE = (320, 256)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_robust_jumps", BENCHMARKS / "bench_robust_jumps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smooth_track(T: int = 300, K: int = 4, step: float = 2.0, seed: int = 0) -> np.ndarray:
    """Keypoints on slow random walks (steps of ``step`` px), far apart."""
    rng = np.random.default_rng(seed)
    start = np.stack([60.0 + 60.0 * np.arange(K), 120.0 + 10.0 * np.arange(K)], axis=-1)
    return start + np.cumsum(rng.normal(0.0, step, size=(T, K, 2)), axis=0)


def test_find_jumps_finds_exactly_the_spikes_put_in():
    truth = _smooth_track()
    track = truth.copy()
    put = [Jump(0, 40, 1, 0.0), Jump(2, 41, 2, 0.0), Jump(1, 150, 1, 0.0), Jump(3, 298, 1, 0.0)]
    for jump in put:
        track[jump.start : jump.stop, jump.keypoint] += [70.0, -30.0]
    track[100:103, 1] += 90.0  # three frames away: longer than max_frames, not a jump
    track[200, 2] = np.nan  # a missing detection is no jump
    found = find_jumps(track, min_px=40.0, max_frames=2)
    assert [(j.keypoint, j.start, j.frames) for j in found] == sorted(
        (j.keypoint, j.start, j.frames) for j in put
    )
    for jump in found:
        assert jump.size == pytest.approx(np.hypot(70.0, 30.0), abs=8.0)
    assert find_jumps(truth, min_px=40.0) == []  # a smooth path has none
    # the detections follow their own jumps all the way, the truth not at all
    np.testing.assert_allclose(follow_shares(track, track, found), 1.0)
    assert follow_shares(truth, track, found).max() < 0.15


def test_find_jumps_checks_its_arguments():
    with pytest.raises(ValueError, match=r"\(frames, keypoints, 2\)"):
        find_jumps(np.zeros((10, 2)), 5.0)
    with pytest.raises(ValueError, match="min_px > 0"):
        find_jumps(np.zeros((10, 2, 2)), 0.0)


def _posterior_model(K: int, prob: float) -> PosteriorModel:
    settings = ModelSettings(
        variant="temporal", stride=8, heatmap_sigma=8.0, outlier_prob=prob, image_size=SIZE
    )
    weights = PotentialWeights(torch.full((K,), 1.0 / 2.0**2), torch.ones(0))  # steps of 2 px
    return PosteriorModel(settings, weights, GuideCorrection(K), SIZE)


def test_the_robust_posterior_does_not_follow_an_injected_swap():
    """Confident detections (2 px spread) of slow keypoints; every 20 frames one keypoint takes
    another's detection for 1-2 frames. The Gaussian form follows the swap most of the way; the
    robust form stays with the temporal prior."""
    bench = _bench()
    truth = _smooth_track(T=400, K=4, seed=1)
    rng = np.random.default_rng(2)
    T, K, _ = truth.shape
    summaries = NetworkSummaries(
        mean=truth + rng.normal(0.0, 1.0, truth.shape),
        cov=np.broadcast_to(4.0 * np.eye(2), (T, K, 2, 2)).copy(),
        confidence=np.full((T, K), 0.8),
        frame_index=np.arange(T),
    )
    models = {"robust": _posterior_model(K, 0.05), "gaussian": _posterior_model(K, 0.0)}
    clean = {name: model.posterior(summaries, SIZE).mean for name, model in models.items()}
    for name in clean:  # without swaps both are near the truth
        assert np.sqrt(np.mean((clean[name] - truth) ** 2)) < 1.5
    corrupted, events = bench.inject_swaps(summaries, 2, 20, 40.0, seed=0)
    assert len(events) >= 15
    for e in events:  # each swap is another keypoint's real detection, far enough away
        swapped = corrupted.mean[e.start, e.keypoint]
        others = np.delete(summaries.mean[e.start], e.keypoint, axis=0)
        assert np.min(np.linalg.norm(others - swapped, axis=-1)) == 0.0
        assert e.size > 40.0
    # a swapped-in detection brings no second mode (the priors must bridge it); others keep theirs
    with_second = dataclasses.replace(
        summaries, second=dataclasses.replace(summaries, confidence=np.full((T, K), 0.1))
    )
    corrupted, events = bench.inject_swaps(with_second, 2, 20, 40.0, seed=0)
    hit = np.zeros((T, K), bool)
    for e in events:
        hit[e.start : e.stop, e.keypoint] = True
    assert (corrupted.second.confidence[hit] == 0.0).all() and (
        corrupted.second.confidence[~hit] == 0.1
    ).all()
    result = bench.injected_jumps(summaries, models, clean, SIZE, [1, 2], 20, 40.0, seed=0)
    for frames in ("1", "2"):
        assert result[frames]["robust"]["followed"] <= 0.05, result
        assert result[frames]["robust"]["median_moved_px"] < 3.0, result
        assert result[frames]["gaussian"]["median_share"] > 0.3, result


def test_bench_robust_jumps_runs_on_a_trained_run(tmp_path):
    """The script end to end on a tiny dgp run of a synthetic project: one JSON line and a figure.
    The network's output is the cache (``--summaries``), written here with known jumps, so the
    numbers do not hang on what a 4-step network detects."""
    project = write_synthetic_project(
        tmp_path / "synth", views=1, frames=120, labeled=16, seed=0, size=(64, 64)
    )
    config = RunConfig(
        project=str(project), model="dgp", backbone="resnet18", size=[64, 64], steps=4, batch_size=4,
        holdout=0.2, checkpoint_every=100, model_options={"window": 4},
    )  # fmt: skip
    fit_run(config, tmp_path / "run", progress=False)
    K = len(load_run(tmp_path / "run").config.keypoints)
    rng = np.random.default_rng(0)
    track = rng.uniform(8, 56, size=(1, K, 2)) + np.cumsum(rng.normal(0, 0.3, size=(120, K, 2)), axis=0)
    track[30, 0] += [20.0, 0.0]  # two confident jumps of the network
    track[70:72, 1] += [0.0, -18.0]
    cache = tmp_path / "summaries.npz"
    confidence = np.full((120, K), 0.9)
    np.savez(cache, mean=track, cov=np.broadcast_to(np.eye(2), (120, K, 2, 2)), confidence=confidence,
             frame_index=np.arange(120))  # fmt: skip
    args = [str(tmp_path / "run"), "--min-px", "10", "--inject-every", "10", "--inject-frames", "1", "2",
            "--summaries", str(cache), "--out", str(tmp_path / "figs")]  # fmt: skip
    result = _bench().main(args)
    assert result["frames"] == 120 and result["model"] == "dgp"
    natural = result["natural"]
    assert natural["jumps"] == 2 and natural["confident_jumps"] == 2
    assert natural["by_keypoint"][:2] == [1, 1]
    assert natural["robust"]["confident"]["followed"] is not None
    assert set(result["injected"]) == {"1", "2"} and result["injected"]["1"]["swaps"] > 5
    assert Path(result["figure"]).is_file()
