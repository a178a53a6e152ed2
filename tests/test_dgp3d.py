"""Multi-view 3D Deep Graph Pose: projection, 3D pseudo-observations, guide, training, outputs, bad input.

Synthetic heatmaps throughout (logits of Gaussian bumps at known projections of a simulated
trajectory seen by the synthetic 3-camera rig), a dense Gaussian posterior as the exact
reference of the guide, and one tiny end-to-end run (resnet18, 64 x 64, a few steps).
Torch runs single-threaded (a shared 2-core machine).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dgp_pyro.data.sessions import load_calibration, session_videos
from dgp_pyro.data.synthetic import (
    KEYPOINTS,
    SKELETON_INDEX,
    make_cameras,
    simulate_motion,
    write_synthetic_project,
)
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.model.dgp import LabeledBatch
from dgp_pyro.model.dgp3d import (
    Model3DSettings,
    PotentialWeights3D,
    ViewWindowBatch,
    guide3d_from_observations,
)
from dgp_pyro.model.potentials import PRIOR_RIDGE, default_skeletal_weights, default_temporal_weights
from dgp_pyro.model.pseudo_observations3d import DEFAULT_ROBUST, triangulation_observations
from dgp_pyro.model.registry import DEFAULT_ABSENT_WEIGHT
from dgp_pyro.model.structured_guide import GuideCorrection3D
from dgp_pyro.model.views3d import ViewCameras
from dgp_pyro.nets import heatmap_grid, soft_argmax
from dgp_pyro.posterior.files3d import predict_run3d, read_points3d
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.posterior.marginals import interval_coverage3d
from dgp_pyro.posterior.posterior3d import PosteriorModel3D
from dgp_pyro.run import RunConfig, load_run
from dgp_pyro.train.dgp3d import elbo_loss3d

EDGES = [(int(i), int(j)) for i, j in SKELETON_INDEX]
STRIDE = 4
SIZE = (160, 128)


@pytest.fixture(scope="module")
def rig():
    group = make_cameras(3, SIZE, seed=0)
    truth = torch.tensor(simulate_motion(40, seed=1), dtype=torch.float64)  # (T, J, 3) mm
    cameras = ViewCameras.from_group(group)
    points_2d = cameras.project(truth).movedim(0, 1)  # (T, V, J, 2)
    return SimpleNamespace(group=group, cameras=cameras, truth=truth, points_2d=points_2d)


def bump_logits(points_2d: torch.Tensor, peak: float = 0.95, sigma: float = STRIDE) -> torch.Tensor:
    """Logits of Gaussian bumps of height ``peak`` at ``points_2d (..., 2)``: ``(..., h, w)``."""
    w, h = SIZE[0] // STRIDE, SIZE[1] // STRIDE
    xs, ys = heatmap_grid(h, w, STRIDE, dtype=torch.float64)
    gx = torch.exp(-((xs - points_2d[..., 0:1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((ys - points_2d[..., 1:2]) ** 2) / (2 * sigma**2))
    p = (peak * gy[..., :, None] * gx[..., None, :]).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p)).float()


def posterior_model(
    rig, variant: str, precision_scale: float = 1.0, robust: float | None = DEFAULT_ROBUST
) -> PosteriorModel3D:
    truth = rig.truth.numpy()
    settings = Model3DSettings(variant, STRIDE, float(STRIDE), EDGES, robust=robust)
    lengths = np.array([np.linalg.norm(truth[:, i] - truth[:, j], axis=-1).mean() for i, j in EDGES])
    skeletal = (
        1.0 / (0.05 * lengths) ** 2 if variant == "dgp3d_bones" else default_skeletal_weights(truth, EDGES)
    )
    weights = PotentialWeights3D(
        torch.as_tensor(default_temporal_weights(truth)), torch.as_tensor(skeletal), torch.as_tensor(lengths)
    )
    correction = GuideCorrection3D(len(KEYPOINTS))
    with torch.no_grad():
        correction.log_precision_scale.fill_(float(np.log(precision_scale)))
    return PosteriorModel3D(
        settings, weights, correction, rig.cameras, list(KEYPOINTS), list(rig.group.names)
    )


def summaries(logits: torch.Tensor):
    s = soft_argmax(logits, STRIDE)
    return s.mean.double().numpy(), s.cov.double().numpy(), s.confidence.double().numpy()


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum((a - b) ** 2, axis=-1))))


# --------------------------------------------------------------------------- cameras


def test_projection_jacobian_matches_autograd_and_training_pixels(rig):
    uv, jac = rig.cameras.project_jacobian(rig.truth[:3])
    np.testing.assert_allclose(uv.numpy(), rig.group.project(rig.truth[:3].numpy()), atol=1e-9)
    auto = torch.autograd.functional.jacobian(rig.cameras.project, rig.truth[1, 4])  # (V, 2, 3)
    torch.testing.assert_close(jac[:, 1, 4], auto, atol=1e-12, rtol=1e-10)
    # the resize to the training size folded into K: x_t = (x_f + 0.5) W / W0 - 0.5
    scaled = ViewCameras.from_group(rig.group, [SIZE] * 3, (96, 64)).project(rig.truth[:3])
    factor = torch.tensor([96 / SIZE[0], 64 / SIZE[1]], dtype=torch.float64)
    torch.testing.assert_close(scaled, (uv + 0.5) * factor - 0.5, atol=1e-9, rtol=0)


# --------------------------------------------------------------------------- recovery from clean heatmaps


def test_clean_heatmaps_recover_the_trajectory_and_intervals_cover_it(rig):
    # exact bumps: per-frame robust triangulation recovers the truth
    post = posterior_model(rig, "supervised").posterior(*summaries(bump_logits(rig.points_2d)))
    assert rmse(post.mean, rig.truth.numpy()) < 0.05
    assert interval_coverage3d(post, rig.truth.numpy())["coverage_90"] == 1.0
    np.testing.assert_allclose(post.mean_2d, rig.points_2d.numpy(), atol=0.05)

    # bumps jittered by 0.3 px, and the Gaussian form calibrated to that jitter (the precision
    # scale SVI learns; uncalibrated, the heatmap's 4 px spread would let the prior dominate):
    # the potentials' posterior beats per-frame triangulation and its intervals are calibrated
    generator = torch.Generator().manual_seed(0)
    jitter = 0.3 * torch.randn(rig.points_2d.shape, generator=generator, dtype=torch.float64)
    mean, cov, conf = summaries(bump_logits(rig.points_2d + jitter))
    scale = float(np.mean(np.trace(cov, axis1=-2, axis2=-1) / 2)) / 0.3**2
    per_frame = posterior_model(rig, "supervised", scale).posterior(mean, cov, conf)
    for variant in ("dgp3d", "dgp3d_bones"):
        post = posterior_model(rig, variant, scale).posterior(mean, cov, conf)
        error = rmse(post.mean, rig.truth.numpy())
        assert error < 1.0, variant
        assert error < rmse(per_frame.mean, rig.truth.numpy()), variant
        coverage = interval_coverage3d(post, rig.truth.numpy())
        assert coverage["coverage_90"] > 0.85 and coverage["coverage_50"] > 0.4, (variant, coverage)
        assert post.mean_2d.shape == (40, 3, len(KEYPOINTS), 2) and np.isfinite(post.cov_2d).all()

    # a recalibrated run: one variance scale on cov, a factor per level on the intervals
    model = posterior_model(rig, "dgp3d", scale)
    plain = model.posterior(mean, cov, conf)
    model.variance_scale, model.interval_scales = 4.0, {0.5: 1.5, 0.95: 3.0}
    fitted = model.posterior(mean, cov, conf)
    np.testing.assert_allclose(fitted.mean, plain.mean, rtol=1e-12)
    np.testing.assert_allclose(fitted.cov, 4.0 * plain.cov, rtol=1e-12)
    for level, k in ((0.5, 1.5), (0.9, 1.5 + 0.4 / 0.45 * 1.5), (0.95, 3.0)):  # 0.9 interpolates
        for lower, upper, centre in (
            (fitted.lower, plain.upper, plain.mean),
            (fitted.lower_2d, plain.upper_2d, plain.mean_2d),
        ):
            np.testing.assert_allclose(
                centre - lower[level], k * (upper[level] - centre), rtol=1e-9, atol=1e-9
            )
    # fitted in 3D as well (on triangulated labels): the 3D posterior takes those, its
    # reprojection keeps the 2D ones
    model.variance_scale_3d, model.interval_scales_3d = 9.0, {0.5: 2.0, 0.95: 2.5}
    both = model.posterior(mean, cov, conf)
    np.testing.assert_allclose(both.cov, 9.0 * plain.cov, rtol=1e-12)
    np.testing.assert_allclose(both.cov_2d, 4.0 * plain.cov_2d, rtol=1e-12)
    np.testing.assert_allclose(both.lower_2d[0.5], fitted.lower_2d[0.5], rtol=1e-12)
    for level, k in ((0.5, 2.0), (0.9, 2.0 + 0.4 / 0.45 * 0.5), (0.95, 2.5)):
        np.testing.assert_allclose(
            plain.mean - both.lower[level], k * (plain.upper[level] - plain.mean), rtol=1e-9, atol=1e-9
        )


def test_a_wrong_view_with_a_weak_peak_does_not_pull(rig):
    wrong = rig.points_2d.clone()
    wrong[:, 2] += torch.tensor([30.0, -20.0], dtype=torch.float64)  # view 2 points elsewhere
    clean = bump_logits(rig.points_2d)
    truth = rig.truth.numpy()
    model = posterior_model(rig, "dgp3d", precision_scale=64.0)
    reference = rmse(model.posterior(*summaries(clean)).mean, truth)

    weak = clean.clone()
    weak[:, 2] = bump_logits(wrong[:, 2], peak=0.05)  # low confidence: occluded
    post = model.posterior(*summaries(weak))
    assert rmse(post.mean, truth) < reference + 0.5
    assert post.view_weight[:, 2].max() < 0.1 < post.view_weight[:, :2].min()
    # the same with plain confidence weighting (no robust weights): still held by the confidence
    plain = posterior_model(rig, "dgp3d", precision_scale=64.0, robust=None)
    assert rmse(plain.posterior(*summaries(weak)).mean, truth) < reference + 0.5

    # The same wrong bump at HIGH confidence. Plain confidence weighting is dragged by
    # centimetres. The robust weights drop the view for most keypoints; where the wrong point
    # is nearly consistent with one good view (close to their epipolar line) three views cannot
    # tell which of the two disagreeing views is wrong, and a minority flips.
    strong = clean.clone()
    strong[:, 2] = bump_logits(wrong[:, 2], peak=0.95)
    dragged = np.linalg.norm(plain.posterior(*summaries(strong)).mean - truth, axis=-1)
    robust = np.linalg.norm(model.posterior(*summaries(strong)).mean - truth, axis=-1)
    assert np.median(dragged) > 10.0
    assert np.median(robust) < 1.0 and np.mean(robust < 2.0) > 0.7


# --------------------------------------------------------------------------- the guide is exact


def dense_linearised_posterior(cameras, obs, m, s_inv, settings, weights, correction):
    """The posterior of the linearised problem, assembled term by term as one dense (T J 3) matrix."""
    Vt, T, J = m.shape[0], m.shape[1], m.shape[2]
    D = T * J * 3
    precision, information = np.zeros((D, D)), np.zeros(D)

    def index(t, k):
        return slice((t * J + k) * 3, (t * J + k) * 3 + 3)

    eye = np.eye(3)
    scale = correction.log_precision_scale.detach().exp().numpy()
    offset = correction.offset.detach().numpy()
    for t in range(T):
        for k in range(J):
            x0 = obs.point[t, k]
            if not torch.isfinite(x0).all():
                continue
            jac = torch.autograd.functional.jacobian(cameras.project, x0).numpy()  # (Vt, 2, 3)
            uv = cameras.project(x0).numpy()
            P, h = np.zeros((3, 3)), np.zeros(3)
            for v in range(Vt):
                w = float(obs.view_weight[t, v, k])
                r = m[v, t, k] - uv[v]
                P += jac[v].T @ (w * s_inv[v, t, k]) @ jac[v]
                h += jac[v].T @ (w * s_inv[v, t, k]) @ (r + jac[v] @ x0.numpy())
            precision[index(t, k), index(t, k)] += scale[k] * P
            information[index(t, k)] += scale[k] * (h + P @ offset[k])
            if t + 1 < T:
                w = float(weights.temporal()[k])
                for a, b, sign in ((t, t, 1), (t + 1, t + 1, 1), (t, t + 1, -1), (t + 1, t, -1)):
                    precision[index(a, k), index(b, k)] += sign * w * eye
        for e, (i, j) in enumerate(settings.edges):
            w = float(weights.skeletal()[e])
            for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                precision[index(t, a), index(t, b)] += sign * w * eye
    precision += PRIOR_RIDGE * np.eye(D)
    covariance = np.linalg.inv(precision)
    return (covariance @ information).reshape(T, J, 3), covariance


def test_guide_equals_dense_posterior_of_the_linearised_problem(rig):
    generator = torch.Generator().manual_seed(5)
    T, J = 5, 3
    edges = [(0, 1), (1, 2)]
    truth = rig.truth[:T, :J]
    pts = rig.points_2d[:T, :, :J] + 2.0 * torch.randn(T, 3, J, 2, generator=generator, dtype=torch.float64)
    root = torch.randn(T, 3, J, 2, 2, generator=generator, dtype=torch.float64)
    cov = root @ root.mT + 4.0 * torch.eye(2, dtype=torch.float64)
    conf = 0.2 + 0.8 * torch.rand(T, 3, J, generator=generator, dtype=torch.float64)
    conf[1, 0, 2] = 0.0  # a view that does not see a keypoint
    labels = rig.points_2d[:T, :, :J] + 0.3 * torch.randn(
        T, 3, J, 2, generator=generator, dtype=torch.float64
    )
    mask = torch.zeros(T, 3, J, dtype=torch.bool)
    mask[2, 0, 1] = mask[2, 1, 1] = mask[4, 2, 0] = True
    settings = Model3DSettings("dgp3d", STRIDE, 4.0, edges, label_sigma=0.7)
    weights = PotentialWeights3D(torch.tensor([0.3, 0.1, 0.5]), torch.tensor([0.02, 0.05]))
    correction = GuideCorrection3D(J)
    with torch.no_grad():
        correction.log_precision_scale.copy_(torch.tensor([0.3, -0.2, 0.1]))
        correction.offset.copy_(torch.randn(J, 3, generator=generator, dtype=torch.float64))
    obs = triangulation_observations(rig.cameras, pts, cov, conf, labels, mask, settings.label_sigma)
    assert (obs.point - truth).norm(dim=-1).max() < 15  # near the truth (2 px of noise)
    q = guide3d_from_observations(settings, weights, correction, obs)

    m = torch.cat([pts.movedim(1, 0), labels.movedim(1, 0)]).numpy()  # (2V, T, J, 2)
    s_inv = torch.cat(
        [torch.linalg.inv(cov).movedim(1, 0), (torch.eye(2) / 0.7**2).expand(3, T, J, 2, 2).double()]
    )
    mean, covariance = dense_linearised_posterior(
        rig.cameras.tile(2), obs, m, s_inv.numpy(), settings, weights, correction
    )
    np.testing.assert_allclose(q.mean.detach().numpy(), mean, rtol=1e-5, atol=1e-5)
    blocks = np.stack([covariance[t * 9 : (t + 1) * 9, t * 9 : (t + 1) * 9] for t in range(T)])
    np.testing.assert_allclose(q.marginal_covariance.detach().numpy(), blocks, rtol=1e-5, atol=1e-8)
    # the occluded view carries no weight; labels enter at full weight
    assert obs.view_weight[1, 0, 2] == 0 and obs.view_weight[2, 3, 1] == 1


def test_model_and_guide_give_a_finite_elbo_with_gradients(rig):
    generator = torch.Generator().manual_seed(1)
    W, T, V, J = 2, 4, 3, len(KEYPOINTS)
    logits = bump_logits(rig.points_2d[:T].expand(W, T, V, J, 2)).requires_grad_()
    labels = torch.full((W, T, V, J, 2), float("nan"))
    labels[0, 1] = rig.points_2d[1].float()
    mask = torch.isfinite(labels).all(-1)
    labeled = LabeledBatch(logits[0, 0], rig.points_2d[0].float(), torch.ones(V, J, dtype=torch.bool))
    for variant in ("dgp3d", "dgp3d_bones"):
        settings = Model3DSettings(variant, STRIDE, float(STRIDE), EDGES)
        weights = PotentialWeights3D(
            torch.ones(J), torch.full((len(EDGES),), 0.01), torch.full((len(EDGES),), 20.0)
        )
        correction = GuideCorrection3D(J)
        torch.manual_seed(int(torch.randint(100, (1,), generator=generator)))
        loss, parts = elbo_loss3d(
            torch.nn.Linear(1, 1),
            settings,
            weights,
            correction,
            rig.cameras,
            labeled,
            ViewWindowBatch(logits, labels, mask),
        )
        loss.backward()
        assert torch.isfinite(loss) and set(parts) >= {"neural", "keypoints", "labels", "entropy"}
        assert (variant == "dgp3d_bones") == ("bones" in parts)
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
        assert torch.isfinite(correction.offset.grad).all() and correction.offset.grad.abs().sum() > 0
        logits.grad = None


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def project3(tmp_path_factory) -> Path:
    return write_synthetic_project(
        tmp_path_factory.mktemp("p3") / "p", views=3, frames=40, labeled=6, seed=0, size=(64, 64)
    )


def tiny_config(project: Path, **overrides) -> RunConfig:
    settings = dict(
        project=str(project),
        model="dgp3d",
        backbone="resnet18",
        size=[64, 64],
        steps=5,
        batch_size=2,
        checkpoint_every=2,
        holdout=0.0,
        model_options={"window": 4, "random_windows": 3, "dgp_start": 0.4},
    )
    settings.update(overrides)
    return RunConfig(**settings)


def test_train_resume_and_outputs(project3, tmp_path):
    straight = fit_run(tiny_config(project3), tmp_path / "straight", progress=False)

    def interrupt(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_run(tiny_config(project3), tmp_path / "resumed", progress=False, on_step=interrupt)
    resumed = fit_run(tiny_config(project3), tmp_path / "resumed", resume=True, progress=False)
    a, b = straight.checkpoint(), resumed.checkpoint()
    assert a["step"] == b["step"] == 5
    assert straight.config.absent_weight == DEFAULT_ABSENT_WEIGHT["3d"] > 0  # hidden views drop out
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, value in a["guide_correction"].items():
        assert torch.equal(value, b["guide_correction"][key]), key
    assert a["temporal_ready"] and torch.isfinite(a["potential_weights"]["log_temporal"]).all()
    elbo = (tmp_path / "straight" / "elbo.csv").read_text().splitlines()
    assert len(elbo) == 6 and elbo[0].startswith("step,labeled_heatmaps,neural")

    written = predict_run3d(load_run(tmp_path / "straight"), tmp_path / "out")["session0"]
    names = sorted(p.name for p in written)
    assert "session0_DGPpyro_dgp3d_3d.csv" in names and "session0_cam2_DGPpyro_dgp3d.h5" in names
    table = read_points3d(tmp_path / "out" / "session0_DGPpyro_dgp3d_3d.h5")
    again = read_points3d(tmp_path / "out" / "session0_DGPpyro_dgp3d_3d.csv")
    assert table["mean"].shape == (40, len(KEYPOINTS), 3) and table["keypoints"] == list(KEYPOINTS)
    np.testing.assert_allclose(table["mean"], again["mean"])
    assert np.isfinite(table["mean"]).all() and (table["std"] > 0).all()
    from dgp_pyro.data.predictions import read_predictions

    view = read_predictions(tmp_path / "out" / "session0_cam1_DGPpyro_dgp3d.csv")
    assert view.xy.shape == (40, len(KEYPOINTS), 2) and "x_lo90" in view.extras


def test_windows_train_the_network_only_when_asked(project3, tmp_path):
    """``windows_train_network=false``: the windows fit the guide, the network learns from labels."""

    def network_after(name: str, **options) -> dict[str, torch.Tensor]:
        options = {"window": 4, "random_windows": 3, "dgp_start": 0.2, **options}
        # default clipping: per parameter group, so the guide's gradients cannot scale the network's
        config = tiny_config(project3, steps=4, model_options=options)
        return fit_run(config, tmp_path / name, progress=False).checkpoint()["model"]

    light = network_after("light", windows_train_network=False, unlabeled_weight=0.1)
    heavy = network_after("heavy", windows_train_network=False, unlabeled_weight=10.0)
    trained = network_after("trained", windows_train_network=True, unlabeled_weight=10.0)
    for key, value in light.items():
        assert torch.equal(value, heavy[key]), key  # how much the windows weigh cannot matter
    assert any(not torch.equal(value, trained[key]) for key, value in light.items())


# --------------------------------------------------------------------------- bad input


def test_calibration_must_match_the_views(project3, tmp_path):
    project = SimpleNamespace(
        views=["cam0", "cam1", "cam2"], view_layout="folders", root=tmp_path, calibration=None
    )
    with pytest.raises(DGPError, match="no calibration.toml"):
        load_calibration(project)
    group = CameraGroup.from_toml(project3 / "calibration.toml")
    project.calibration = tmp_path / "two.toml"
    CameraGroup(group.cameras[:2]).to_toml(project.calibration)
    with pytest.raises(DGPError, match="3 views, the calibration 2 cameras") as info:
        load_calibration(project)
    assert "'cam2'" in info.value.problem
    text = (project3 / "calibration.toml").read_text().replace('"cam1"', '"side"')
    project.calibration.write_text(text)
    with pytest.raises(DGPError, match="camera\\(s\\) 'side' match no view"):
        load_calibration(project)
    project.views, project.view_layout = ["main"], "single"
    with pytest.raises(DGPError, match="at least 2 views"):
        load_calibration(project)


def test_videos_of_different_lengths_in_a_session(project3, tmp_path):
    from dgp_pyro.data.project import load_project
    from dgp_pyro.data.video import VideoReader, write_video

    copy = tmp_path / "p"
    shutil.copytree(project3, copy)
    video = copy / "videos" / "session0_cam1.mp4"
    with VideoReader(video) as reader:
        frames = [reader.read(i) for i in range(30)]
    video.unlink()
    write_video(video, frames, fps=30.0)
    with pytest.raises(DGPError, match="session 'session0' have different lengths") as info:
        session_videos(load_project(copy))
    assert "cam0 40 frames, cam1 30 frames, cam2 40 frames" in info.value.problem


def test_videos_of_different_frame_rates_in_a_session(project3, tmp_path):
    from dgp_pyro.data.project import load_project
    from dgp_pyro.data.video import VideoReader, write_video

    copy = tmp_path / "p"
    shutil.copytree(project3, copy)
    video = copy / "videos" / "session0_cam2.mp4"
    with VideoReader(video) as reader:
        frames = [reader.read(i) for i in range(len(reader))]
    video.unlink()
    write_video(video, frames, fps=25.0)
    with pytest.raises(DGPError, match="session 'session0' have different frame rates") as info:
        session_videos(load_project(copy))
    assert "cam2 25 fps" in info.value.problem and "cam0 30 fps" in info.value.problem
    assert info.value.path == video


def test_model_options_out_of_range_are_refused(project3):
    from dgp_pyro.model.options import resolve_options

    assert resolve_options(tiny_config(project3, model_options={"robust": None}))["robust"] is None
    bad = [("bone_sigma_floor", 0.0), ("robust", -1.0), ("skeletal_strength", 0), ("guide_lr", "x")]
    for option, value in bad:
        with pytest.raises(DGPError, match=f"{option}.* must be"):
            resolve_options(tiny_config(project3, model_options={option: value}))


def test_videos_must_have_the_calibrated_frame_size(project3):
    from dgp_pyro.data.project import load_project
    from dgp_pyro.data.sessions import check_frame_sizes
    from dgp_pyro.geometry.camera import Camera

    sessions = session_videos(load_project(project3))
    group = CameraGroup.from_toml(project3 / "calibration.toml")
    check_frame_sizes(group, sessions)  # as written
    cameras = list(group.cameras)
    d = cameras[1].to_dict()
    cameras[1] = Camera(d["name"], (128, 128), d["matrix"], d["distortions"], d["rotation"], d["translation"])
    with pytest.raises(DGPError, match="cam1.mp4 is 64x64 but camera 'cam1' was calibrated at 128x128"):
        check_frame_sizes(CameraGroup(cameras), sessions)


def test_degenerate_cameras_are_refused(project3, tmp_path):
    from dgp_pyro.geometry.camera import Camera

    group = CameraGroup.from_toml(project3 / "calibration.toml")
    first = group.cameras[0]
    same_place = [
        Camera(c.name, tuple(c.size), c.matrix, c.dist, first.rvec, first.tvec) for c in group.cameras
    ]
    path = tmp_path / "degenerate.toml"
    CameraGroup(same_place).to_toml(path)
    config = tiny_config(project3, model_options={"window": 4, "random_windows": 3, "calibration": str(path)})
    with pytest.raises(DGPError, match="camera centres coincide"):
        fit_run(config, tmp_path / "run", progress=False)


# --------------------------------------------------------------------------- command line


def test_command_line_train_predict_evaluate_3d(project3, tmp_path, capsys):
    import json

    from dgp_pyro.cli.main import main

    run = tmp_path / "run"
    common = ["--backbone", "resnet18", "--size", "64x64", "--steps", "4", "--batch-size", "2", "--quiet"]
    options = ["--option", "window=4", "--option", "random_windows=3", "--holdout", "0.34"]
    calibration = str(project3 / "calibration.toml")
    code = main(["train", str(project3), "--model", "dgp3d", "--out", str(run), "--calibration", calibration,
                 *common, *options])  # fmt: skip
    assert code == 0
    assert load_run(run).config.model_options["calibration"] == calibration
    # the 3D posterior is recalibrated in 3D, on the held-out labels triangulated, and the
    # posterior model takes those scales
    fitted = json.loads((run / "posterior_calibration.json").read_text())
    assert fitted["n_coordinates_3d"] > 0 and fitted["variance_scale_3d"] > 0
    assert set(fitted["coverage_leave_one_out_3d"]) == set(fitted["coverage_leave_one_out_3d_se"])
    model = PosteriorModel3D.from_run(load_run(run))
    assert model.variance_scale_3d == fitted["variance_scale_3d"]
    assert model.interval_scales_3d == {float(k): v for k, v in fitted["interval_scales_3d"].items()}
    assert PosteriorModel3D.from_run(load_run(run), calibrated=False).variance_scale_3d is None
    capsys.readouterr()
    videos = sorted(str(p) for p in (project3 / "videos").glob("*.mp4"))
    assert main(["predict", str(run), *videos, "--out", str(tmp_path / "pred"), "--quiet", "--nwb"]) == 0
    table = read_points3d(tmp_path / "pred" / "session0_cam0_DGPpyro_dgp3d_3d.h5")
    assert main(["predict", str(run), *videos[:2], "--out", str(tmp_path / "pred"), "--quiet"]) == 2
    assert "2 videos for a 3-view run" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--truth", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "dgp3d" and report["n_test_images"] > 0 and report["rmse_px"] > 0
    for key in ("truth_3d_rmse", "truth_3d_hidden_rmse", "truth_3d_coverage_90", "truth_coverage_90"):
        assert np.isfinite(report[key]), key
    assert report["coverage_loo_3d_90"] == fitted["coverage_leave_one_out_3d"]["0.9"]
    assert report["coverage_loo_3d_se_90"] == fitted["coverage_leave_one_out_3d_se"]["0.9"]
    # 2D models do not take a calibration
    assert main(["train", str(project3), "--model", "dgp", "--out", str(tmp_path / "x"),
                 "--calibration", calibration, *common]) == 2  # fmt: skip
    assert "--calibration is for the 3D models" in capsys.readouterr().err
    # the NWB file of the 3D posterior holds exactly what the 3D table holds
    pytest.importorskip("pynwb")
    from dgp_pyro.export.nwb_read import read_nwb_posterior

    nwb = read_nwb_posterior(tmp_path / "pred" / "session0_cam0_DGPpyro_dgp3d_3d.nwb")
    np.testing.assert_array_equal(nwb["mean"], table["mean"])
    np.testing.assert_array_equal(nwb["std"], table["std"])
