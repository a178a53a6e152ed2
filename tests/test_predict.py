"""Streaming prediction over videos and labeled images, prediction files, decoding failures."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgp_pyro.cli.main import main
from dgp_pyro.data.predictions import read_predictions
from dgp_pyro.data.video import VideoReader, write_video
from dgp_pyro.errors import DGPError
from dgp_pyro.nets.heatmap_net import HeatmapNet
from dgp_pyro.posterior.predict import (
    NetworkSummaries,
    predict_images,
    predict_video,
    summaries_to_table,
    summarize_frames,
    write_prediction_files,
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from dgp_pyro.data.synthetic.project import write_synthetic_project

    out = tmp_path_factory.mktemp("synth") / "p"
    return write_synthetic_project(out, views=1, frames=40, labeled=12, seed=3, size=(64, 64))


@pytest.fixture(scope="module")
def video(synth) -> Path:
    return synth / "videos" / "session0.mp4"


@pytest.fixture(scope="module")
def network() -> HeatmapNet:
    return HeatmapNet(13, backbone="resnet18", stride=8, seed=0).eval()


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_streaming_equals_per_image(network, video, tmp_path):
    size = (96, 64)  # not the video's size: both paths resize and map back
    streamed = predict_video(network, video, size, batch_size=7)
    assert streamed.mean.shape == (40, 13, 2) and streamed.cov.shape == (40, 13, 2, 2)
    assert streamed.frame_index.tolist() == list(range(40))
    paths = []
    with VideoReader(video) as reader:
        for k in (0, 5, 17, 39):
            path = tmp_path / f"frame{k}.png"
            Image.fromarray(reader.read(k)).save(path)
            paths.append(path)
    single = predict_images(network, paths, size, batch_size=3)
    rows = [0, 5, 17, 39]
    np.testing.assert_allclose(single.mean, streamed.mean[rows], atol=1e-3)
    np.testing.assert_allclose(single.cov, streamed.cov[rows], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(single.confidence, streamed.confidence[rows], atol=1e-5)
    # a frame range
    part = predict_video(network, video, size, batch_size=4, start=10, stop=21)
    assert part.frame_index.tolist() == list(range(10, 21))
    np.testing.assert_allclose(part.mean, streamed.mean[10:21], atol=1e-3)


@pytest.mark.parametrize("prefetch, most", [(False, 0), (True, 1)])
def test_predict_video_memory_is_flat(network, video, monkeypatch, prefetch, most):
    """When a batch is decoded, no earlier batch is alive (one ahead with double buffering)."""
    real = VideoReader.iter_batches
    refs: list[weakref.ref] = []
    alive: list[int] = []

    def tracking(self, batch_size, start=0, stop=None):
        for frames, index in real(self, batch_size, start, stop):
            gc.collect()
            alive.append(sum(ref() is not None for ref in refs))  # earlier batches still referenced
            batch = frames.copy()
            del frames
            refs.append(weakref.ref(batch))
            yield batch, index
            del batch

    monkeypatch.setattr(VideoReader, "iter_batches", tracking)
    result = predict_video(network, video, (64, 64), batch_size=8, prefetch=prefetch)
    assert len(alive) == 5
    assert max(alive) <= most, alive
    assert np.isfinite(result.mean).all()


def test_prefetch_gives_the_same_result(network, video):
    a = predict_video(network, video, (64, 64), batch_size=6, prefetch=True)
    b = predict_video(network, video, (64, 64), batch_size=6, prefetch=False)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.confidence, b.confidence)


def test_prefetch_thread_stops_when_the_network_fails(video):
    import threading

    class Failing(torch.nn.Module):
        stride, num_keypoints, calls = 8, 1, 0

        def forward(self, images):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("network failed")
            return torch.zeros(images.shape[0], 1, images.shape[2] // 8, images.shape[3] // 8)

    failing = Failing()
    failing.register_parameter("p", torch.nn.Parameter(torch.zeros(())))
    with pytest.raises(RuntimeError, match="network failed"):
        predict_video(failing, video, (64, 64), batch_size=4)
    assert not [t for t in threading.enumerate() if t.name == "dgp-pyro-decode"]


class DotNet(torch.nn.Module):
    """A stand-in network whose heatmap is the (pooled, rescaled) red channel of its input."""

    stride = 4
    num_keypoints = 1

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        pooled = torch.nn.functional.avg_pool2d(images[:, :1], self.stride)
        low = pooled.amin(dim=(-2, -1), keepdim=True)
        high = pooled.amax(dim=(-2, -1), keepdim=True)
        return self.gain * (12 * (pooled - low) / (high - low) - 6)


def _dot_frame(w: int, h: int, x: float, y: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.round(255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))).astype(np.uint8)
    return np.repeat(image[..., None], 3, axis=-1)[None]


def test_coordinates_map_back_to_the_frame():
    from dgp_pyro.data.augment import resize_frames, unscale_points
    from dgp_pyro.nets.heatmap_net import normalize_images
    from dgp_pyro.nets.heatmaps import soft_argmax

    net = DotNet().eval()
    for (w0, h0), (x, y), sigma, size in [
        ((128, 96), (50.3, 40.7), 5.0, (64, 64)),
        ((200, 120), (120.4, 60.2), 8.0, (96, 64)),
        ((48, 48), (20.5, 20.5), 2.0, (96, 96)),
    ]:
        frame = _dot_frame(w0, h0, x, y, sigma)
        with torch.inference_mode():
            mean, cov, _ = summarize_frames(net, frame, size)
            inner = soft_argmax(net(normalize_images(resize_frames(torch.from_numpy(frame), size))), 4)
        # exactly the network's own answer, mapped back about pixel edges, covariance scaled alike
        scale = np.array([w0 / size[0], h0 / size[1]])
        np.testing.assert_allclose(
            mean[0, 0], unscale_points(inner.mean[0, 0].numpy(), (w0, h0), size), atol=1e-4
        )
        np.testing.assert_allclose(cov[0, 0], inner.cov[0, 0].numpy() * np.outer(scale, scale), rtol=1e-5)
        # and, end to end, near the dot itself (the soft-argmax of a pooled blob is within a pixel)
        np.testing.assert_allclose(mean[0, 0], [x, y], atol=1.0)


def test_an_offset_head_refines_the_predictions():
    """Location-refinement offsets reach the prediction: a head that says "3 px to the right"
    everywhere moves every mean by 3 training pixels (times the resize factor), and no further."""
    net = HeatmapNet(2, "resnet18", 8, offset_head=True, seed=0).eval()
    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 128, 3), dtype=np.uint8)
    size = (64, 64)
    with torch.inference_mode():
        net.offset_conv.weight.zero_()
        net.offset_conv.bias.zero_()
        still, cov, _ = summarize_frames(net, frames, size)
        net.offset_conv.bias.view(2, 2)[:, 0] = 3.0 / net.stride  # raw units are cells
        moved, cov_moved, _ = summarize_frames(net, frames, size)
    np.testing.assert_allclose(moved[..., 0] - still[..., 0], 3.0 * 128 / 64, atol=1e-4)
    np.testing.assert_allclose(moved[..., 1], still[..., 1], atol=1e-6)
    np.testing.assert_allclose(cov_moved, cov)


def test_summaries_to_table_and_files(tmp_path):
    cov = np.zeros((3, 2, 2, 2))
    cov[..., 0, 0], cov[..., 1, 1], cov[..., 0, 1] = 4.0, 9.0, 1.0
    cov[..., 1, 0] = 1.0
    summaries = NetworkSummaries(
        mean=np.arange(12, dtype=float).reshape(3, 2, 2),
        cov=cov,
        confidence=np.full((3, 2), 0.5),
        frame_index=np.array([10, 11, 12]),
    )
    extra = {"x_lo90": np.zeros((3, 2))}
    table = summaries_to_table(summaries, ["a", "b"], "DGPpyro_test", extras=extra)
    assert list(table.extras) == ["x_std", "y_std", "x_lo90"]
    np.testing.assert_allclose(table.extras["x_std"], 2.0)
    np.testing.assert_allclose(table.extras["y_std"], 3.0)
    paths = write_prediction_files(table, tmp_path, "video_DGPpyro_test")
    assert [p.name for p in paths] == ["video_DGPpyro_test.h5", "video_DGPpyro_test.csv"]
    for path in paths:
        back = read_predictions(path)
        assert back.scorer == "DGPpyro_test" and back.keypoints == ["a", "b"]
        assert back.frame_index.tolist() == [10, 11, 12]
        np.testing.assert_allclose(back.xy, summaries.mean)
        np.testing.assert_allclose(back.extras["y_std"], 3.0)


def test_cli_predict_writes_deeplabcut_files(synth, video, tmp_path):
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.run import RunConfig, load_run

    run_dir = tmp_path / "run"
    config = RunConfig(
        project=str(synth), backbone="resnet18", size=[64, 64], steps=1, batch_size=2, holdout=0.0
    )
    fit_run(config, run_dir, progress=False)
    out = tmp_path / "pred"
    code, stdout, stderr = cli("predict", run_dir, "--out", out, "--batch-size", 9, "--quiet")  # all videos
    assert code == 0, stderr
    assert "session0.mp4: 40 frames" in stdout
    h5, csv = out / "session0_DGPpyro_supervised.h5", out / "session0_DGPpyro_supervised.csv"
    assert h5.is_file() and csv.is_file()
    table = read_predictions(h5)
    run = load_run(run_dir)
    assert table.keypoints == run.config.keypoints
    levels = ("50", "90", "95")
    intervals = [f"{a}_{side}{lv}" for lv in levels for a in "xy" for side in ("lo", "hi")]
    assert list(table.extras) == ["x_std", "y_std", *intervals]
    # the supervised posterior is the Gaussian form of each heatmap, up to the prior's ridge, which
    # shrinks a mean by eps / precision relative: up to ~1e-4 for the flat heatmaps of a 1-step
    # network, whose covariances are inflated 100x
    expected = predict_video(run.network(), video, run.size)
    np.testing.assert_allclose(table.xy, expected.mean, rtol=1e-4, atol=1e-2)  # ridge: eps / precision
    np.testing.assert_allclose(table.likelihood, expected.confidence, atol=1e-6)
    np.testing.assert_allclose(table.extras["x_std"], expected.std[..., 0], rtol=1e-4)
    assert np.all(table.extras["x_lo90"] < table.xy[..., 0])
    assert np.all(table.xy[..., 0] < table.extras["x_hi90"])
    assert read_predictions(csv).xy.shape == (40, 13, 2)
    # default output folder: RUN/predictions; --nwb adds the same posterior as an NWB file
    code, _, stderr = cli("predict", run_dir, video, "--quiet", "--nwb")
    assert code == 0, stderr
    assert (run_dir / "predictions" / "session0_DGPpyro_supervised.h5").is_file()
    if importlib.util.find_spec("pynwb") and importlib.util.find_spec("ndx_pose"):
        from dgp_pyro.export.nwb_read import read_nwb_posterior

        nwb = read_nwb_posterior(run_dir / "predictions" / "session0_DGPpyro_supervised.nwb")
        same = read_predictions(run_dir / "predictions" / "session0_DGPpyro_supervised.h5")
        np.testing.assert_array_equal(nwb["mean"], same.xy)
        np.testing.assert_array_equal(nwb["lower"][0.9][..., 0], same.extras["x_lo90"])


def test_truncated_video_names_file_and_frame(network, tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(24)]  # incompressible
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=30, keyframe_interval=4)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])  # the header still promises 24 frames
    for prefetch in (True, False):
        with pytest.raises(DGPError, match=r"frame (\d+)") as info:
            predict_video(network, path, (64, 64), batch_size=4, prefetch=prefetch)
        assert "clip.mp4" in str(info.value)
        frame = int(re.search(r"frame (\d+)", str(info.value)).group(1))
        assert 0 < frame < 24  # halfway through


def test_missing_video(network, tmp_path):
    with pytest.raises(DGPError, match="not found"):
        predict_video(network, tmp_path / "absent.mp4", (64, 64))
