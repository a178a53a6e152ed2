"""Multi-view 3D Deep Graph Pose on mirror (suffix-layout) projects: one image holds every view.

A synthetic mirror rig (two cameras of the synthetic animal rendered side by side in one frame,
its calibration in the pixels of the whole frame), the adapter that splits one frame's network
channels into views (:class:`~dgp_pyro.model.views3d.ViewChannels`), a tiny ``dgp3d`` run on it
(train, predict, evaluate), the real mirror mouse with cameras from ``dgp-pyro calibrate``, and
calibrations that do not fit the views. Tiny sizes and a handful of steps throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dgp_pyro.cli.main import main
from dgp_pyro.data.project import load_project
from dgp_pyro.data.sessions import check_frame_sizes, load_calibration, session_videos
from dgp_pyro.data.synthetic import (
    KEYPOINTS,
    SKELETON_INDEX,
    make_cameras,
    simulate_motion,
    write_synthetic_project,
)
from dgp_pyro.data.synthetic.project import side_by_side_cameras
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.model.dgp3d import (
    Model3DSettings,
    PotentialWeights3D,
    ViewWindowBatch,
    window_observations,
)
from dgp_pyro.model.structured_guide import GuideCorrection3D
from dgp_pyro.model.views3d import ViewCameras, ViewChannels
from dgp_pyro.nets import heatmap_grid, soft_argmax
from dgp_pyro.posterior.files3d import read_points3d
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.posterior.posterior3d import PosteriorModel3D, session_posterior3d
from dgp_pyro.run import RunConfig, load_run
from dgp_pyro.train.dgp3d import elbo_loss3d
from dgp_pyro.train.supervised import build_network_seeded

VIEW = (64, 64)  # each view's image; the mirror frame holds two side by side
STRIDE = 4
EDGES = [(int(i), int(j)) for i, j in SKELETON_INDEX]
VIEWS = ["cam0", "cam1"]
CHANNELS = [f"{kp}_{view}" for view in VIEWS for kp in KEYPOINTS]  # view by view, as in the labels


def rmse3d(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(np.sum((a - b) ** 2, axis=-1))))


@pytest.fixture(scope="module")
def mirror_synth(tmp_path_factory) -> Path:
    # seed 6: every <keypoint>_<view> column is labeled in at least 4 of the 16 frames
    return write_synthetic_project(
        tmp_path_factory.mktemp("mirror") / "p",
        views=2,
        frames=48,
        labeled=16,
        seed=6,
        size=VIEW,
        layout="suffix",
    )


# --------------------------------------------------------------------------- the synthetic mirror rig


def test_suffix_project_labels_are_the_projections_of_the_truth(mirror_synth):
    project = load_project(mirror_synth)
    assert project.view_layout == "suffix" and project.views == VIEWS and project.bodyparts == list(KEYPOINTS)
    assert project.network_keypoints() == CHANNELS
    (session,) = session_videos(project)
    assert session.videos[0] == session.videos[1] and session.frame_sizes == [(128, 64), (128, 64)]
    group = load_calibration(project)
    # each camera is the view's own camera, in the pixels of the whole frame
    for v, (camera, own) in enumerate(zip(group.cameras, make_cameras(2, VIEW, seed=6).cameras, strict=True)):
        assert tuple(camera.size) == (128, 64)
        shift = np.zeros((3, 3))
        shift[0, 2] = v * VIEW[0]
        np.testing.assert_array_equal(camera.matrix, own.matrix + shift)
    truth = np.load(mirror_synth / "ground_truth.npz")
    frames = truth["labeled_frames"]
    projected = np.moveaxis(group.project(truth["points_3d"]), 0, 1)  # (T, V, J, 2)
    labels = project.labels  # (N, V, J, 2), NaN where the view does not see the keypoint
    seen = np.isfinite(labels)
    assert seen.mean() > 0.6
    np.testing.assert_array_equal(labels[seen], projected[frames][seen])  # exact, through CSV and TOML
    np.testing.assert_array_equal(truth["points_2d"], projected)
    for v in range(2):  # each view's labels lie in its half of the frame
        x = labels[:, v, :, 0][np.isfinite(labels[:, v, :, 0])]
        assert (x >= v * VIEW[0] - 0.5).all() and (x <= (v + 1) * VIEW[0] - 0.5).all()


# --------------------------------------------------------------------------- the adapter


def composite_logits(points_2d: torch.Tensor, size: tuple[int, int], peak: float = 0.95) -> torch.Tensor:
    """Logits of Gaussian bumps at ``points_2d (..., 2)`` on a heatmap of an image of ``size``."""
    xs, ys = heatmap_grid(size[1] // STRIDE, size[0] // STRIDE, STRIDE, dtype=torch.float64)
    gx = torch.exp(-((xs - points_2d[..., 0:1]) ** 2) / (2 * STRIDE**2))
    gy = torch.exp(-((ys - points_2d[..., 1:2]) ** 2) / (2 * STRIDE**2))
    p = (peak * gy[..., :, None] * gx[..., None, :]).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p)).float()


def test_channels_of_a_mirror_frame_are_split_into_views():
    cameras = ViewCameras.from_group(side_by_side_cameras(make_cameras(2, VIEW, seed=6)))
    truth = torch.tensor(simulate_motion(24, seed=2), dtype=torch.float64)  # (T, J, 3)
    J, T = len(KEYPOINTS), truth.shape[0]
    views_2d = cameras.project(truth)  # (V, T, J, 2) in the mirror frame's pixels
    # what a network sees: one image per frame, its channels view by view
    logits = composite_logits(views_2d.permute(1, 0, 2, 3).reshape(T, 1, 2 * J, 2), (128, 64))
    channels = ViewChannels.suffix(VIEWS, list(KEYPOINTS), CHANNELS)
    assert channels.num_images == 1 and not channels.identity and bool(channels.present().all())
    per_view = channels.select(logits, tail=2)  # (T, V, J, h, w)
    assert per_view.shape == (T, 2, J, 16, 32)
    torch.testing.assert_close(per_view[:, 1, 3], logits[:, 0, J + 3])
    s = soft_argmax(logits, STRIDE)
    mean, cov, confidence = channels.summaries(s.mean, s.cov, s.confidence)
    settings = Model3DSettings("dgp3d", STRIDE, float(STRIDE), EDGES)
    weights = PotentialWeights3D(torch.full((J,), 1e-3), torch.full((len(EDGES),), 1e-4))
    model = PosteriorModel3D(settings, weights, GuideCorrection3D(J), cameras, list(KEYPOINTS), VIEWS)
    recovered = model.posterior(mean.double().numpy(), cov.double().numpy(), confidence.double().numpy())
    error = rmse3d(recovered.mean, truth.numpy())
    assert error < 2.0, error  # mm; the animal spans ~100 mm
    np.testing.assert_allclose(recovered.mean_2d, views_2d.movedim(0, 1).numpy(), atol=1.0)
    # the same channels read as the wrong views: a regression in the split would look like this
    swapped = ViewChannels.suffix(VIEWS[::-1], list(KEYPOINTS), CHANNELS)
    wrong = model.posterior(*(x.double().numpy() for x in swapped.summaries(s.mean, s.cov, s.confidence)))
    assert rmse3d(wrong.mean, truth.numpy()) > 20 * error

    # a body part one view does not have (the mirror mouse's obstacles): no heatmap, no pull
    partial = ViewChannels.suffix(VIEWS, list(KEYPOINTS), CHANNELS[: J + 4] + CHANNELS[J + 5 :])
    kept = logits[:, :, [k for k in range(2 * J) if k != J + 4]].requires_grad_()
    present = partial.present()
    assert not present[1, 4] and int(present.sum()) == 2 * J - 1
    batch = ViewWindowBatch(
        partial.select(kept, tail=2)[None, :6],
        torch.full((1, 6, 2, J, 2), float("nan")),
        torch.zeros(1, 6, 2, J, dtype=torch.bool),
        present,
    )
    obs = window_observations(settings, cameras, batch)
    assert (obs.view_weight[..., 1, 4] == 0).all() and (obs.view_weight[..., 0, 4] > 0).all()
    assert torch.isfinite(obs.mean).all()
    loss, parts = elbo_loss3d(
        torch.nn.Linear(1, 1), settings, weights, GuideCorrection3D(J), cameras, None, batch
    )
    loss.backward()
    assert torch.isfinite(loss) and set(parts) >= {"neural", "keypoints", "entropy"}
    assert torch.isfinite(kept.grad).all() and kept.grad.abs().sum() > 0


# --------------------------------------------------------------------------- end to end, synthetic


def test_train_predict_evaluate_a_synthetic_mirror_run(mirror_synth, tmp_path, capsys):
    keys = load_project(mirror_synth).network_samples().image_keys
    split = tmp_path / "split.json"  # one held-out mirror frame: its posterior needs a window of video
    split.write_text(json.dumps({"train": keys[:8] + keys[9:], "test": [keys[8]]}))
    config = RunConfig(
        project=str(mirror_synth),
        model="dgp3d",
        backbone="resnet18",
        size=[128, 64],
        steps=10,
        batch_size=4,
        checkpoint_every=100,
        holdout=str(split),
        model_options={"window": 4, "random_windows": 4, "dgp_start": 0.5},
    )
    run = fit_run(config, tmp_path / "run", progress=False)
    state = run.checkpoint()
    assert state["step"] == 10 and state["temporal_ready"]
    assert state["guide_correction"]["offset"].shape == (len(KEYPOINTS), 3)  # 3D keypoints, not channels
    assert run.config.keypoints == CHANNELS and run.split["test"] == [keys[8]]

    assert (
        main(["predict", str(tmp_path / "run"), "--quiet"]) == 0
    )  # into RUN/predictions: evaluate reuses it
    out = run.predictions_dir
    table = read_points3d(out / "session0_DGPpyro_dgp3d_3d.h5")
    assert table["keypoints"] == list(KEYPOINTS) and table["mean"].shape == (48, len(KEYPOINTS), 3)
    assert np.isfinite(table["mean"]).all() and (table["std"] > 0).all()
    from dgp_pyro.data.predictions import read_predictions

    cam1 = read_predictions(out / "session0_cam1_DGPpyro_dgp3d.csv")
    both = read_predictions(out / "session0_DGPpyro_dgp3d.h5")
    assert cam1.keypoints == list(KEYPOINTS) and both.keypoints == CHANNELS
    np.testing.assert_allclose(both.xy[:, len(KEYPOINTS) :], cam1.xy)
    assert (cam1.xy[..., 0] > 40).mean() > 0.9  # cam1's reprojections sit in its (right) half

    # closer to the truth than the same posterior model with an untrained network
    truth = np.load(mirror_synth / "ground_truth.npz")["points_3d"][:16]
    untrained = build_network_seeded(run.config).eval()
    baseline = session_posterior3d(run, network=untrained, stop=16, model=PosteriorModel3D.from_run(run))
    trained, wrong = rmse3d(table["mean"][:16], truth), rmse3d(baseline.mean, truth)
    assert trained < 0.5 * wrong, (trained, wrong)

    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--truth", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_view"]) == set(VIEWS) and report["n_test_images"] == 1
    for view in VIEWS:
        assert report["per_view"][view]["n"] > 0 and np.isfinite(report["per_view"][view]["rmse_px"])
    assert report["n"] == sum(report["per_view"][v]["n"] for v in VIEWS)
    assert np.isfinite(report["truth_3d_rmse"]) and np.isfinite(report["truth_rmse_px"])


# --------------------------------------------------------------------------- the real mirror mouse


def test_mirror_mouse_calibrate_train_predict_evaluate(mirror_project, tmp_path, capsys):
    from dgp_pyro.data.video import VideoReader, write_video

    project = str(mirror_project)
    cams = tmp_path / "cams.toml"
    assert main(["calibrate", project, "--views", "top", "bot", "--out", str(cams), "--json"]) == 0
    calibration = json.loads(capsys.readouterr().out)
    assert np.isfinite(calibration["heldout_reprojection_rmse_px"])
    assert CameraGroup.from_toml(cams).names == ["top", "bot"]

    run = tmp_path / "run"
    common = ["--backbone", "resnet18", "--size", "128x128", "--steps", "4", "--batch-size", "2", "--quiet"]
    options = ["--option", "window=4", "--option", "random_windows=2", "--option", "dgp_start=0.5"]
    code = main(["train", project, "--views", "top", "bot", "--model", "dgp3d", "--calibration", str(cams),
                 "--out", str(run), *common, *options])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert load_run(run).config.views == ["top", "bot"] and load_run(run).checkpoint()["step"] == 4

    # predict has no frame range: a 20-frame clip of the project's video stands in for it
    clip = tmp_path / "clip.mp4"
    with VideoReader(mirror_project / "videos" / "test_vid.mp4") as reader:
        write_video(clip, [reader.read(i) for i in range(20)], fps=reader.fps)
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(clip), "--out", str(out), "--quiet"]) == 0
    points = read_points3d(out / "clip_DGPpyro_dgp3d_3d.csv")
    assert points["mean"].shape == (20, 10, 3) and np.isfinite(points["mean"]).all()
    assert "obsHigh" in points["keypoints"] and "obs" in points["keypoints"]
    from dgp_pyro.data.predictions import read_predictions

    top = read_predictions(out / "clip_top_DGPpyro_dgp3d.h5")
    bot = read_predictions(out / "clip_bot_DGPpyro_dgp3d.h5")
    assert "obs" in top.keypoints and "obs" not in bot.keypoints and "obsLow" in bot.keypoints
    assert len(top.keypoints) == 8 and len(bot.keypoints) == 9 and np.isfinite(top.xy).all()
    assert read_predictions(out / "clip_DGPpyro_dgp3d.h5").keypoints == load_run(run).config.keypoints

    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_test_frames"] == 9  # labeled images that are no video frames: single-frame posteriors
    for view in ("top", "bot"):
        stats = report["per_view"][view]
        assert stats["n"] > 0 and np.isfinite(stats["rmse_px"]) and stats["rmse_px"] > 0


# --------------------------------------------------------------------------- bad calibrations


def test_calibration_must_fit_a_mirror_project(mirror_synth, tmp_path, capsys):
    project = load_project(mirror_synth)
    group = CameraGroup.from_toml(mirror_synth / "calibration.toml")
    renamed = tmp_path / "top_bot.toml"
    cameras = [
        Camera(name, tuple(c.size), c.matrix, c.dist, c.rvec, c.tvec)
        for name, c in zip(["top", "bot"], group.cameras, strict=True)
    ]
    CameraGroup(cameras).to_toml(renamed)
    with pytest.raises(DGPError, match="no camera for view\\(s\\) 'cam0', 'cam1'") as info:
        load_calibration(project, renamed)
    assert info.value.path == renamed and "camera(s) 'top', 'bot' match no view" in info.value.problem
    code = main(["train", str(mirror_synth), "--model", "dgp3d", "--calibration", str(renamed),
                 "--out", str(tmp_path / "run"), "--backbone", "resnet18", "--size", "128x64", "--steps", "2",
                 "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert str(renamed) in err and "no camera for view(s) 'cam0', 'cam1'" in err and err.count("\n") == 1

    # the cameras of the views' own images, not of the whole mirror frame
    per_view = make_cameras(2, VIEW, seed=6)
    with pytest.raises(
        DGPError, match="session0.mp4 is 128x64 but camera 'cam0' was calibrated at 64x64"
    ) as info:
        check_frame_sizes(per_view.match_views(VIEWS), session_videos(project))
    assert "whole image" in info.value.hint
