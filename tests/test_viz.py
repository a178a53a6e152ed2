"""Plots and the labeled video: figure structure, ellipse geometry, NaN handling, atomic output."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from scipy.stats import chi2, norm

from dgp_pyro.data.video import VideoReader, write_video
from dgp_pyro.errors import DGPError
from dgp_pyro.viz import (
    credible_ellipse,
    ellipse_polygon,
    keypoint_colors,
    plot_comparison,
    plot_contact_sheet,
    plot_coverage,
    plot_frame,
    plot_skeleton_3d,
    plot_trajectories,
    save_figure,
    write_labeled_video,
)

NAMES = ["snout", "ear", "tail"]
SKELETON = [(0, 1), (0, 2)]


def by_gid(ax, gid: str, kind=None) -> list:
    """The artists of ``ax`` with this gid (lines, collections, patches)."""
    artists = [*ax.lines, *ax.collections, *ax.patches]
    return [a for a in artists if a.get_gid() == gid and (kind is None or isinstance(a, kind))]


def fake_posterior(t: int = 60, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    frames = np.arange(t)
    truth = np.stack(
        [
            np.stack([30 + 10 * np.sin(frames / 9 + j), 20 + 8 * np.cos(frames / 13 + j)], -1)
            for j in range(k)
        ],
        1,
    )
    sd = np.full((t, k, 2), 2.0)
    mean = truth + rng.normal(0, 1, truth.shape)
    lower = {lv: mean - norm.ppf(0.5 + lv / 2) * sd for lv in (0.5, 0.9)}
    upper = {lv: mean + norm.ppf(0.5 + lv / 2) * sd for lv in (0.5, 0.9)}
    return mean, lower, upper, truth


# ------------------------------------------------------------------------------- trajectories


def test_trajectories_rows_bands_and_labeled_frames():
    mean, lower, upper, truth = fake_posterior(t=60)
    frame_index = np.arange(100, 160)
    labeled = [90, 105, 130, 159, 200]  # 90 and 200 are outside the plotted frames
    fig = plot_trajectories(
        mean,
        lower,
        upper,
        NAMES,
        keypoints=["tail", "snout"],
        labeled_frames=labeled,
        truth=truth,
        raw=mean + 1,
        frame_index=frame_index,
        title="t",
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # 2 keypoints x (x, y)
    for ax in fig.axes:
        (vlines,) = by_gid(ax, "labeled_frames", LineCollection)
        xs = sorted(seg[0, 0] for seg in vlines.get_segments())
        assert xs == [105, 130, 159]
        assert len(by_gid(ax, "mean")) == len(by_gid(ax, "truth")) == len(by_gid(ax, "raw")) == 1
        assert len(by_gid(ax, "band_0.5", PolyCollection)) == len(by_gid(ax, "band_0.9", PolyCollection)) == 1
        # the narrower band is darker and drawn over the wider one
        narrow, wide = by_gid(ax, "band_0.5")[0], by_gid(ax, "band_0.9")[0]
        assert narrow.get_facecolor()[0][:3].sum() < wide.get_facecolor()[0][:3].sum()
        assert narrow.get_zorder() >= wide.get_zorder()
    # rows go keypoint by keypoint, x then y: the first row is tail x
    np.testing.assert_allclose(by_gid(fig.axes[0], "mean")[0].get_ydata(), mean[:, 2, 0])
    np.testing.assert_allclose(by_gid(fig.axes[3], "mean")[0].get_ydata(), mean[:, 0, 1])
    assert fig.axes[0].get_xlim() == (100, 159)


def test_trajectories_nan_and_defaults():
    mean, lower, upper, _ = fake_posterior(t=30)
    mean[5:9] = np.nan
    lower[0.9][:, 1] = np.nan
    fig = plot_trajectories(mean, lower, upper, NAMES)  # all keypoints, no labels
    assert len(fig.axes) == 6
    assert not by_gid(fig.axes[0], "labeled_frames")
    fig.canvas.draw()  # rendering with NaN does not fail


def test_trajectories_rejects_unknown_keypoint_and_bad_shapes():
    mean, lower, upper, _ = fake_posterior(t=10)
    with pytest.raises(DGPError, match="no keypoint named 'paw'"):
        plot_trajectories(mean, lower, upper, NAMES, keypoints=["paw"])
    with pytest.raises(ValueError, match="different levels"):
        plot_trajectories(mean, lower, {0.5: upper[0.5]}, NAMES)
    with pytest.raises(ValueError, match="frame_index"):
        plot_trajectories(mean, lower, upper, NAMES, frame_index=np.arange(3))


# ------------------------------------------------------------------------------------- frames


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_frame_ellipse_axes_match_chi_square(level):
    theta = math.radians(30)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    eig = np.array([16.0, 4.0])
    cov0 = rot @ np.diag(eig) @ rot.T
    mean = np.array([[20.0, 15.0], [40.0, 30.0], [np.nan, np.nan]])
    cov = np.stack([cov0, np.diag([9.0, 1.0]), np.eye(2)])
    image = np.zeros((48, 64, 3), np.uint8)
    fig = plot_frame(image, mean, cov, NAMES, SKELETON, level=level, truth=mean + 1, title="f")
    (ax,) = fig.axes
    ellipses = by_gid(ax, "ellipse", Ellipse)
    assert len(ellipses) == 2  # the NaN keypoint has none
    q = chi2.ppf(level, 2)
    first = ellipses[0]
    assert first.center == pytest.approx((20.0, 15.0))
    assert first.width == pytest.approx(2 * math.sqrt(q * 16.0))
    assert first.height == pytest.approx(2 * math.sqrt(q * 4.0))
    assert first.angle % 180 == pytest.approx(30.0)
    assert ellipses[1].width == pytest.approx(2 * math.sqrt(q * 9.0))
    assert ellipses[1].height == pytest.approx(2 * math.sqrt(q * 1.0))
    assert ellipses[1].angle % 180 == pytest.approx(0.0, abs=1e-9)
    # only bones with both ends present, only finite keypoints
    assert len(by_gid(ax, "bone")) == 1  # (0, 2) has a NaN end
    assert len(by_gid(ax, "keypoint")) == 2
    assert len(by_gid(ax, "truth")) == 2
    # image drawn with origin at the upper left and pixel centres on integers
    assert ax.get_ylim() == (47.5, -0.5)
    assert ax.get_xlim() == (-0.5, 63.5)


def test_frame_bones_skip_missing_ends_and_accept_names():
    mean = np.array([[10.0, 10.0], [20.0, 10.0], [np.nan, 5.0]])
    fig = plot_frame(None, mean, None, NAMES, [("snout", "ear"), ("snout", "tail")])
    (ax,) = fig.axes
    assert len(by_gid(ax, "bone")) == 1
    assert not by_gid(ax, "ellipse")
    assert ax.yaxis_inverted()  # y down even without an image
    with pytest.raises(DGPError, match="not one of the keypoints"):
        plot_frame(None, mean, None, NAMES, [("snout", "paw")])


def test_frame_into_given_axes():
    host = Figure()
    ax = host.add_subplot()
    out = plot_frame(np.zeros((8, 8, 3), np.uint8), np.array([[3.0, 4.0]]), np.eye(2)[None], ["a"], ax=ax)
    assert out is host
    assert len(host.axes) == 1


def test_credible_ellipse_and_polygon_agree():
    cov = np.array([[5.0, 2.0], [2.0, 3.0]])
    w, h, angle = credible_ellipse(cov, 0.9)
    poly = ellipse_polygon(np.zeros(2), cov, 0.9, n=720)
    # every polygon point is on the boundary: Mahalanobis distance^2 == chi2 quantile
    d2 = np.einsum("ni,ij,nj->n", poly, np.linalg.inv(cov), poly)
    np.testing.assert_allclose(d2, chi2.ppf(0.9, 2), rtol=1e-9)
    radii = np.linalg.norm(poly, axis=1)
    assert radii.max() == pytest.approx(w / 2, rel=1e-4)
    assert radii.min() == pytest.approx(h / 2, rel=1e-4)
    assert credible_ellipse(np.full((2, 2), np.nan)) is None
    assert ellipse_polygon(np.array([np.nan, 0.0]), cov) is None
    with pytest.raises(ValueError, match="fraction"):
        credible_ellipse(cov, 90)


def test_keypoint_colors_distinct():
    for n in (1, 3, 17, 24, 40):
        colors = keypoint_colors(n)
        assert colors.shape == (n, 4)
        assert len({tuple(np.round(c, 3)) for c in colors}) == n


# ---------------------------------------------------------------------------------------- 3D


def test_skeleton_3d_error_bars_equal_aspect_and_nan():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 50, (3, 3)) * np.array([1.0, 2.0, 0.2])
    std = np.full((3, 3), 1.5)
    points[2] = np.nan
    std[1, 2] = np.nan
    fig = plot_skeleton_3d(points, std, NAMES, SKELETON, truth=points + 1, title="3d", level=0.9, units="mm")
    (ax,) = fig.axes
    assert ax.name == "3d"
    bars = by_gid(ax, "errorbar")
    assert len(bars) == 3 + 2  # keypoint 0: x, y, z; keypoint 1: x, y (NaN z std); keypoint 2 NaN
    half = norm.ppf(0.95) * 1.5
    xs = bars[0].get_data_3d()[0]
    assert xs[1] - xs[0] == pytest.approx(2 * half)
    assert len(by_gid(ax, "bone")) == 1
    # one unit has the same length on every axis: box aspect proportional to the limits
    spans = np.array([np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim()), np.ptp(ax.get_zlim())])
    np.testing.assert_allclose(
        ax.get_box_aspect() / ax.get_box_aspect().max(), spans / spans.max(), rtol=1e-6
    )
    assert ax.get_xlabel() == "x (mm)"
    fig.canvas.draw()
    all_nan = plot_skeleton_3d(np.full((3, 3), np.nan), None, NAMES, SKELETON)
    all_nan.canvas.draw()


# ----------------------------------------------------------------------------------- coverage


def test_coverage_curves_diagonal_and_band():
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    cov = {"full": levels - 0.01, "no prior": np.array([0.3, np.nan, 0.6, 0.7])}
    fig = plot_coverage(levels, cov, n={"full": 500, "no prior": 500}, title="c")
    (ax,) = fig.axes
    assert len(by_gid(ax, "coverage")) == 2
    assert len(by_gid(ax, "diagonal")) == 1
    (band,) = by_gid(ax, "binomial_band")  # one grey band for a common n
    # at p = 0.5 the band's half width is 1.96 * sqrt(0.25 / 500)
    verts = band.get_paths()[0].vertices
    at_half = verts[np.isclose(verts[:, 0], 0.5)][:, 1]
    assert at_half.max() - 0.5 == pytest.approx(1.96 * math.sqrt(0.25 / 500), rel=1e-6)
    assert ax.get_xlim() == ax.get_ylim() == (0, 1)
    fig2 = plot_coverage(levels, cov, n={"full": 500, "no prior": 100})
    assert len(by_gid(fig2.axes[0], "binomial_band")) == 2
    assert not by_gid(plot_coverage(levels, cov).axes[0], "binomial_band")
    with pytest.raises(ValueError, match="fractions"):
        plot_coverage(levels * 100, cov)


# --------------------------------------------------------------------------------- comparison


def test_comparison_columns_and_bands():
    mean, lower, upper, truth = fake_posterior(t=40)
    frames = np.arange(40)
    est = {"dgp": mean[:, 0], "supervised": truth[:, 0] + 2}
    bands = {"dgp": (lower[0.9][:, 0], upper[0.9][:, 0])}
    fig = plot_comparison(
        frames, est, bands, truth[:, 0], labeled_frames=[3, 30, 99], keypoint_name="snout", band_level=0.9
    )
    assert len(fig.axes) == 2
    for c, ax in enumerate(fig.axes):
        lines = by_gid(ax, "estimate")
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_ydata(), mean[:, 0, c])
        assert len(by_gid(ax, "band")) == 1
        assert len(by_gid(ax, "labeled_frames")[0].get_segments()) == 2
    est["supervised"][::3] = np.nan
    plot_comparison(frames, est, None, None).canvas.draw()


# ------------------------------------------------------------------------------ contact sheet


def test_contact_sheet_grid_and_hidden_markers():
    images = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    points = [np.array([[10.0, 10.0], [20.0, 15.0], [np.nan, np.nan]]) for _ in range(5)]
    visible = [np.array([True, False, True])] * 5
    fig = plot_contact_sheet(
        images, points, SKELETON, NAMES, titles=list("abcde"), columns=3, visible=visible
    )
    assert len(fig.axes) == 5  # 2 rows of 3, the unused slot removed
    for ax, title in zip(fig.axes, "abcde", strict=True):
        assert ax.get_title() == title
        (hidden,) = by_gid(ax, "hidden")
        assert hidden.get_markerfacecolor() == "none"
        assert len(by_gid(ax, "keypoint")) == 1  # the NaN keypoint is not drawn
        assert len(by_gid(ax, "bone")) == 1
    with pytest.raises(ValueError, match="titles"):
        plot_contact_sheet(images, points, SKELETON, NAMES, titles=["a"])


# -------------------------------------------------------------------------------------- saving


def test_save_figure_atomic_png(tmp_path: Path):
    fig = plot_coverage([0.5, 0.9], {"a": [0.5, 0.88]})
    out = save_figure(fig, tmp_path / "sub" / "coverage")
    assert out == tmp_path / "sub" / "coverage.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert [p.name for p in out.parent.iterdir()] == ["coverage.png"]  # no temporary left behind
    pdf = save_figure(plot_coverage([0.5], {"a": [0.5]}), tmp_path / "c.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")


def test_save_figure_failure_leaves_nothing(tmp_path: Path):
    fig = plot_coverage([0.5], {"a": [0.5]})
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    fig.savefig = boom
    with pytest.raises(RuntimeError):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_no_pyplot_figures_left():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    mean, lower, upper, _ = fake_posterior(t=10)
    plot_trajectories(mean, lower, upper, NAMES)
    plot_frame(None, mean[0], None, NAMES)
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # nothing above needed a display


# ------------------------------------------------------------------------------ labeled video


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("viz") / "grey.mp4"
    frames = (np.full((48, 64, 3), 90, np.uint8) for _ in range(20))
    assert write_video(path, frames, fps=10) == 20
    return path


def test_labeled_video_draws_keypoints(grey_video: Path, tmp_path: Path):
    t = 20
    mean = np.tile(np.array([[20.0, 15.0], [44.0, 30.0], [np.nan, np.nan]]), (t, 1, 1))
    mean[7, 0] = np.nan  # missing on frame 7 only
    cov = np.tile(np.diag([9.0, 4.0]), (t, 3, 1, 1))
    out = write_labeled_video(grey_video, tmp_path / "labeled.mp4", mean, cov, NAMES, SKELETON)
    assert out == tmp_path / "labeled.mp4"
    with VideoReader(out) as video:
        assert video.n_frames == t
        assert (video.width, video.height) == (64, 48)
        assert video.fps == pytest.approx(10)
        frames = np.concatenate([f for f, _ in video.iter_batches(8)])
    colour = keypoint_colors(3)[0, :3] * 255
    at_snout = frames[:, 15, 20].astype(float)
    # drawn in the keypoint's colour (within codec error) on every frame but the missing one
    assert np.all(np.abs(at_snout[np.arange(t) != 7] - colour).max(axis=1) < 40)
    assert np.abs(at_snout[7] - 90).max() < 12
    assert np.abs(frames[:, 2, 60].astype(float) - 90).max() < 12  # far from everything: unchanged


def test_labeled_video_frame_range_alignment(grey_video: Path, tmp_path: Path):
    frames = range(5, 15, 2)
    mean = np.full((len(frames), 1, 2), np.nan)
    mean[2] = [30.0, 20.0]  # row 2 -> frame 9, the third frame written
    out = write_labeled_video(grey_video, tmp_path / "part.avi", mean, None, ["a"], frames=frames, fps=5)
    with VideoReader(out) as video:
        assert video.n_frames == 5
        written = [video.read(i) for i in range(5)]
    changed = [np.abs(f[20, 30].astype(float) - 90).max() > 40 for f in written]
    assert changed == [False, False, True, False, False]
    whole = np.zeros((20, 1, 2))
    with pytest.raises(DGPError, match=r"pass mean\[5:15:2\]"):
        write_labeled_video(grey_video, tmp_path / "bad.mp4", whole, None, ["a"], frames=frames)
    with pytest.raises(DGPError, match="outside the video"):
        write_labeled_video(grey_video, tmp_path / "bad.mp4", whole, None, ["a"], frames=range(10, 30))
    assert not (tmp_path / "bad.mp4").exists()
