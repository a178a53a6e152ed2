"""Calibrated cameras: projection, undistortion, triangulation, Anipose TOML, validation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.geometry.projection import project_torch, rodrigues_torch, undistort_points_torch
from dgp_pyro.geometry.triangulation import triangulate_torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Realistic lens distortion (magnitudes of a calibrated machine-vision lens).
DISTORTIONS = [
    [-0.21, 0.08, 1.2e-3, -8e-4, -0.015],
    [0.12, -0.25, -6e-4, 1.1e-3, 0.09],
    [-0.05, 0.02, 3e-4, 4e-4, 0.0],
    [-0.3, 0.11, -1.5e-3, 9e-4, -0.02],
]


def make_rig(n_views: int, distorted: bool = True) -> CameraGroup:
    """Cameras on a circle of radius 3 looking at the origin, skewed intrinsics for realism."""
    cams = []
    for i in range(n_views):
        angle = 2 * np.pi * i / n_views + 0.3
        position = [3 * np.cos(angle), 3 * np.sin(angle), 1.2 + 0.3 * i]
        cam = Camera.look_at(
            f"cam{i}", (640, 480), 520.0 + 10 * i, position, [0.05, -0.02, 0.2],
            dist=DISTORTIONS[i] if distorted else None,
        )
        cam.matrix[0, 2] += 7.5 * i  # principal point off centre, fx != fy
        cam.matrix[1, 1] *= 1.01
        cams.append(cam)
    return CameraGroup(cams)


def random_points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.6, 0.6, size=(n, 3)) + [0, 0, 0.2]


# ----------------------------------------------------------------------------- projection


def test_project_matches_hand_computation():
    k1, k2, p1, p2, k3 = DISTORTIONS[0]
    cam = Camera("a", (100, 80), [[200.0, 0.5, 49.5], [0, 210.0, 39.5], [0, 0, 1]], DISTORTIONS[0])
    x, y = 0.2, -0.1
    point = np.array([x * 4.0, y * 4.0, 4.0])
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    expected = [200.0 * xd + 0.5 * yd + 49.5, 210.0 * yd + 39.5]
    np.testing.assert_allclose(cam.project(point), expected, rtol=0, atol=1e-12)
    # The optical axis lands on the principal point (centre of the top-left pixel is (0, 0)).
    np.testing.assert_allclose(cam.project([0, 0, 1.0]), [49.5, 39.5], atol=1e-12)


def test_look_at_orientation():
    cam = Camera.look_at("a", (64, 48), 50.0, position=[-5, 0, 0], target=[0, 0, 0])
    np.testing.assert_allclose(cam.project([0, 0, 0]), [31.5, 23.5], atol=1e-12)
    up = cam.project([0, 0, 1.0])
    right = cam.project([0, -1.0, 0])  # looking along +x with z up, -y is to the right
    assert up[1] < 23.5 and abs(up[0] - 31.5) < 1e-9
    assert right[0] > 31.5 and abs(right[1] - 23.5) < 1e-9
    np.testing.assert_allclose(cam.center(), [-5, 0, 0], atol=1e-12)
    rot = cam.rotation_matrix()
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    points = random_points(5)
    homog = np.concatenate([points, np.ones((5, 1))], axis=1)
    np.testing.assert_allclose(homog @ cam.projection_matrix().T, cam.world_to_camera(points), atol=1e-12)
    with pytest.raises(DGPError, match="parallel"):
        Camera.look_at("b", (64, 48), 50.0, position=[0, 0, 5], target=[0, 0, 0])


def test_group_project_shape():
    group = make_rig(3)
    points = random_points(12).reshape(3, 4, 3)
    assert group.project(points).shape == (3, 3, 4, 2)


# ----------------------------------------------------------------------------- undistortion


def test_undistort_inverts_distortion():
    for i, dist in enumerate(DISTORTIONS):
        cam = Camera("a", (640, 480), [[500.0, 0.3, 320], [0, 505.0, 240], [0, 0, 1]], dist)
        normalized = np.random.default_rng(i).uniform(-0.55, 0.55, size=(500, 2))
        distorted = cam.distort(normalized)
        pixels = distorted @ cam.matrix[:2, :2].T + cam.matrix[:2, 2]
        np.testing.assert_allclose(cam.undistort_points(pixels), normalized, rtol=0, atol=1e-11)
        # and through the full projection
        points = np.concatenate([normalized * 2.5, np.full((500, 1), 2.5)], axis=1)
        np.testing.assert_allclose(cam.undistort_points(cam.project(points)), normalized, atol=1e-11)


def test_undistort_nan_and_non_invertible():
    cam = Camera("a", (640, 480), [[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]], [-0.5, 0, 0, 0, 0])
    # distort(r) = r (1 - 0.5 r^2) peaks at r = 0.816 with value 0.544: beyond, no inverse.
    out = cam.undistort_points(np.array([[np.nan, 10.0], [320 + 500 * 0.9, 240], [330.0, 250.0]]))
    assert np.isnan(out[0]).all() and np.isnan(out[1]).all()
    assert np.isfinite(out[2]).all()


def test_undistort_torch_gradients():
    group = make_rig(2)
    params = group.torch_params(dtype=torch.float64)
    pixels = torch.tensor(group.project(random_points(3)), requires_grad=True)
    dist = params["dist"].clone().requires_grad_(True)
    matrix = params["matrix"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, k, d: undistort_points_torch(p, k, d), (pixels, matrix, dist))


# ----------------------------------------------------------------------------- torch


def test_rodrigues_torch_matches_scipy_and_zero_gradient():
    rvecs = np.concatenate([np.random.default_rng(1).normal(size=(20, 3)), [[0, 0, 0], [1e-5, 0, 2e-5]]])
    ours = rodrigues_torch(torch.tensor(rvecs)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rvecs).as_matrix(), atol=1e-14)
    zero = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rodrigues_torch(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    assert torch.autograd.gradcheck(rodrigues_torch, (zero.detach().clone().requires_grad_(True),))


@pytest.mark.parametrize("n_views", [2, 4])
def test_project_torch_matches_numpy(n_views):
    group = make_rig(n_views)
    points = random_points(30).reshape(5, 6, 3)
    ours = project_torch(torch.tensor(points), **group.torch_params(dtype=torch.float64)).numpy()
    assert ours.shape == (n_views, 5, 6, 2)
    np.testing.assert_allclose(ours, group.project(points), rtol=0, atol=1e-9)


def test_project_torch_gradcheck_including_zero_rotation():
    group = make_rig(2)
    params = {k: v.clone().requires_grad_(True) for k, v in group.torch_params(dtype=torch.float64).items()}
    with torch.no_grad():
        params["rvec"][0] = 0.0  # the Rodrigues singularity
        params["tvec"][0] = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    points = torch.tensor(random_points(2), requires_grad=True)
    inputs = (points, params["matrix"], params["dist"], params["rvec"], params["tvec"])
    assert torch.autograd.gradcheck(project_torch, inputs)
    project_torch(*inputs).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)


def test_torch_params_dtype_device():
    params = make_rig(3).torch_params()
    assert set(params) == {"matrix", "dist", "rvec", "tvec"}
    assert params["matrix"].shape == (3, 3, 3) and params["dist"].shape == (3, 5)
    assert params["rvec"].dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------- triangulation


@pytest.mark.parametrize("n_views", [2, 3, 4])
def test_triangulate_recovers_points_with_distortion(n_views):
    group = make_rig(n_views)
    points = random_points(200, seed=n_views)
    recovered = group.triangulate(group.project(points))
    np.testing.assert_allclose(recovered, points, rtol=0, atol=1e-6)
    np.testing.assert_allclose(group.reprojection_error(recovered, group.project(points)), 0, atol=1e-6)


def test_triangulate_keeps_batch_shape():
    group = make_rig(3)
    points = random_points(24).reshape(4, 6, 3)
    pixels = group.project(points)
    assert pixels.shape == (3, 4, 6, 2)
    np.testing.assert_allclose(group.triangulate(pixels), points, atol=1e-6)


def test_triangulate_confidence_downweights_a_corrupted_view():
    group = make_rig(4)
    points = random_points(50)
    pixels = group.project(points)
    pixels[1] += np.random.default_rng(3).normal(scale=80.0, size=pixels[1].shape)  # badly wrong
    confidence = np.ones((4, 50))
    confidence[1] = 1e-9
    np.testing.assert_allclose(group.triangulate(pixels, confidence), points, rtol=0, atol=1e-6)
    # without the confidence the corruption shows
    assert np.abs(group.triangulate(pixels) - points).max() > 1e-3


def test_triangulate_ignores_nan_and_zero_confidence_views():
    group = make_rig(3)
    points = random_points(10)
    pixels = group.project(points)
    pixels[0, :5] = np.nan
    confidence = np.ones((3, 10))
    confidence[2, 5:] = 0.0
    recovered = group.triangulate(pixels, confidence)
    np.testing.assert_allclose(recovered, points, atol=1e-6)
    # one usable view left: NaN
    pixels[1, 0] = np.nan
    confidence[1, 7] = np.nan
    pixels[0, 7] = np.nan
    recovered = group.triangulate(pixels, confidence)
    assert np.isnan(recovered[[0, 7]]).all()
    assert np.isfinite(recovered[[1, 2, 3, 4, 5, 6, 8, 9]]).all()
    assert np.isnan(group.reprojection_error(recovered, pixels)[:, 0]).all()


def test_triangulate_torch_matches_numpy_and_has_gradients():
    group = make_rig(3)
    rng = np.random.default_rng(4)
    points = random_points(4)
    pixels = group.project(points) + rng.normal(scale=2.0, size=(3, 4, 2))
    pixels[0, 3] = np.nan  # still two views
    confidence = rng.uniform(0.2, 1.0, size=(3, 4))
    params = group.torch_params(dtype=torch.float64)
    ours = triangulate_torch(torch.tensor(pixels), confidence=torch.tensor(confidence), **params)
    np.testing.assert_allclose(ours.numpy(), group.triangulate(pixels, confidence), atol=1e-12)
    # gradients with respect to everything, on the noisy points (SVD backward)
    pix = torch.tensor(pixels[:, :3], requires_grad=True)
    conf = torch.tensor(confidence[:, :3], requires_grad=True)
    tvec = params["tvec"].clone().requires_grad_(True)
    rvec = params["rvec"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, c, r, t: triangulate_torch(p, params["matrix"], params["dist"], r, t, confidence=c),
        (pix, conf, rvec, tvec),
    )


def test_triangulate_torch_float32():
    group = make_rig(3)
    points = random_points(100)
    pixels = torch.tensor(group.project(points), dtype=torch.float32)
    out = triangulate_torch(pixels, **group.torch_params(dtype=torch.float32))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), points, atol=2e-5)


def test_triangulate_torch_nan_points_have_zero_gradients():
    group = make_rig(2)
    pixels = torch.tensor(group.project(random_points(3)), requires_grad=True)
    confidence = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    out = triangulate_torch(pixels, confidence=confidence, **group.torch_params(dtype=torch.float64))
    assert torch.isnan(out[2]).all() and torch.isfinite(out[:2]).all()
    torch.where(torch.isfinite(out), out, 0.0).sum().backward()
    assert torch.isfinite(pixels.grad).all()
    assert (pixels.grad[:, 2] == 0).all()


def test_check_geometry():
    make_rig(3).check_geometry(random_points(10))
    cams = [Camera.look_at(f"c{i}", (64, 48), 50.0, [0, -5, 0], [0, 0, 0]) for i in range(2)]
    with pytest.raises(DGPError, match="coincide"):
        CameraGroup(cams).check_geometry()
    # centres on the x axis; a point on that line is ill-posed, one off it is fine
    line = CameraGroup(
        [Camera.look_at(f"c{i}", (64, 48), 50.0, [x, 0, 0], [x + 1, 3, 0]) for i, x in enumerate([0, 1.0, 2])]
    )
    line.check_geometry([[0.5, 3.0, 0.0]])
    with pytest.raises(DGPError, match="ill-posed for 1 of 2 points"):
        line.check_geometry([[0.5, 3.0, 0.0], [5.0, 0.0, 0.0]])
    with pytest.raises(DGPError, match="at least 2 cameras"):
        CameraGroup(cams[:1]).check_geometry()


# ----------------------------------------------------------------------------- TOML

ANIPOSE_TOML = """\
[cam_0]
name = "A"
size = [ 1280, 1024,]
matrix = [ [ 1583.5104, 0.0, 639.5,], [ 0.0, 1583.5104, 511.5,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.2364, 0.1146, 0.0, 0.0, 0.0,]
rotation = [ 1.9452, 0.1283, -0.1739,]
translation = [ -84.1293, 37.6577, 538.1734,]

[cam_1]
name = "B"
size = [ 1280, 1024,]
matrix = [ [ 1540.9, 0.0, 639.5,], [ 0.0, 1540.9, 511.5,], [ 0.0, 0.0, 1.0,],]
distortions = [ -0.2152, 0.0902, 0.0, 0.0,]
rotation = [ 1.3521, 1.2203, -1.0457,]
translation = [ 3.6216, 66.2313, 524.9001,]

[metadata]
adjusted = false
error = 0.5817
"""


def test_reads_anipose_file(tmp_path):
    path = tmp_path / "calibration.toml"
    path.write_text(ANIPOSE_TOML)
    group = CameraGroup.from_toml(path)
    assert group.names == ["A", "B"]
    assert group.cameras[0].size == (1280, 1024)
    assert group.cameras[1].dist.shape == (5,) and group.cameras[1].dist[4] == 0.0  # padded
    assert group.metadata == {"adjusted": False, "error": 0.5817}
    assert group.path == path


def test_toml_round_trip_is_exact_and_anipose_shaped(tmp_path):
    group = make_rig(3)
    rng = np.random.default_rng(5)
    for cam in group.cameras:  # full-precision floats
        cam.tvec += rng.normal(size=3) / 3
        cam.rvec += rng.normal(size=3) * 1e-7
    group.metadata = {"adjusted": True, "error": 0.1 + 0.2}
    path = tmp_path / "sub" / "calibration.toml"
    group.to_toml(path)
    again = CameraGroup.from_toml(path)
    assert again == group
    for a, b in zip(again.cameras, group.cameras, strict=True):
        assert a.tvec.tolist() == b.tvec.tolist()
    raw = tomllib.loads(path.read_text())
    assert list(raw) == ["cam_0", "cam_1", "cam_2", "metadata"]
    cam = raw["cam_1"]
    assert set(cam) == {"name", "size", "matrix", "distortions", "rotation", "translation"}
    assert cam["size"] == [640, 480] and all(isinstance(v, int) for v in cam["size"])
    assert len(cam["matrix"]) == 3 and all(len(row) == 3 for row in cam["matrix"])
    assert len(cam["distortions"]) == 5 and len(cam["rotation"]) == 3 and len(cam["translation"]) == 3
    assert [p.name for p in path.parent.iterdir()] == ["calibration.toml"]  # no temp file left


def test_aniposelib_reads_our_toml_and_agrees(tmp_path):
    """Anipose users can take our calibrations as they are: same projection, same DLT."""
    anipose_cameras = pytest.importorskip("aniposelib.cameras")
    group = make_rig(3)  # with lens distortion
    path = tmp_path / "calibration.toml"
    group.to_toml(path)
    theirs = anipose_cameras.CameraGroup.load(str(path))
    assert theirs.get_names() == group.names
    points = random_points(200)
    np.testing.assert_allclose(theirs.project(points), group.project(points), atol=1e-8)
    observed = group.project(points)  # (V, N, 2)
    np.testing.assert_allclose(
        theirs.triangulate(observed, undistort=True), group.triangulate(observed), atol=1e-6
    )


def test_toml_cameras_sorted_numerically(tmp_path):
    text = ""
    for i in [10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9]:
        text += f'[cam_{i}]\nname = "v{i}"\nsize = [64, 48]\n'
        text += "matrix = [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]\n"
        text += f"distortions = [0, 0, 0, 0, 0]\nrotation = [0, 0, 0]\ntranslation = [{i}, 0, 5]\n\n"
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert CameraGroup.from_toml(path).names == [f"v{i}" for i in range(11)]


def _camera_toml(**overrides) -> str:
    table = {
        "name": '"A"',
        "size": "[64, 48]",
        "matrix": "[[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]",
        "distortions": "[0.1, 0.0, 0.0, 0.0, 0.0]",
        "rotation": "[0.0, 0.0, 0.0]",
        "translation": "[0.0, 0.0, 5.0]",
    }
    table.update(overrides)
    return "[cam_0]\n" + "".join(f"{k} = {v}\n" for k, v in table.items() if v is not None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"matrix": "[[nan, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]"}, "non-finite"),
        ({"matrix": "[[0.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 1.0]]"}, "must be positive"),
        ({"matrix": "[[50.0, 0.0, 31.5], [0.0, -50.0, 23.5], [0.0, 0.0, 1.0]]"}, "must be positive"),
        ({"matrix": "[[1e-9, 0.0, 31.5], [0.0, 1e-9, 23.5], [0.0, 0.0, 1.0]]"}, "singular"),
        ({"matrix": "[[50.0, 0.0, 31.5], [0.0, 50.0, 23.5], [0.0, 0.0, 0.0]]"}, "not of the form"),
        ({"matrix": "[[50.0, 0.0], [0.0, 50.0]]"}, r"shape \(2, 2\)"),
        ({"matrix": None}, "lacks matrix"),
        ({"translation": None, "name": None}, "lacks name, translation"),
        ({"distortions": "[0.1, 0.0, 0.0, 0.0, 0.0, 0.0]"}, "6 distortion coefficients"),
        ({"rotation": "[0.0, 0.0]"}, "rotation has shape"),
        ({"translation": '["a", 0.0, 1.0]'}, "not an array of numbers"),
        ({"size": "[64]"}, "size must be"),
        ({"size": "[64.5, 48]"}, "size must be"),
        ({"fisheye": "true"}, "fisheye"),
    ],
)
def test_bad_camera_tables(tmp_path, overrides, message):
    path = tmp_path / "calibration.toml"
    path.write_text(_camera_toml(**overrides))
    with pytest.raises(DGPError, match=message) as info:
        CameraGroup.from_toml(path)
    assert info.value.path == path
    assert "[cam_0]" in str(info.value)


def test_short_distortions_are_padded(tmp_path):
    path = tmp_path / "calibration.toml"
    path.write_text(_camera_toml(distortions="[0.1, 0.2, 0.003, 0.004]"))
    np.testing.assert_array_equal(CameraGroup.from_toml(path).cameras[0].dist, [0.1, 0.2, 0.003, 0.004, 0.0])


def test_bad_files(tmp_path):
    with pytest.raises(DGPError, match="not found"):
        CameraGroup.from_toml(tmp_path / "missing.toml")
    path = tmp_path / "c.toml"
    path.write_text("[cam_0\nname = ")
    with pytest.raises(DGPError, match="not a valid TOML"):
        CameraGroup.from_toml(path)
    path.write_text("[metadata]\nerror = 1.0\n")
    with pytest.raises(DGPError, match="no cameras"):
        CameraGroup.from_toml(path)
    path.write_text('name = "A"\n')
    with pytest.raises(DGPError, match="unexpected top-level key"):
        CameraGroup.from_toml(path)
    path.write_text(_camera_toml() + _camera_toml().replace("cam_0", "cam_1"))
    with pytest.raises(DGPError, match="not unique: A") as info:
        CameraGroup.from_toml(path)
    assert info.value.path == path


def test_camera_constructor_validates():
    with pytest.raises(DGPError, match="camera 'x'.*singular"):
        Camera("x", (64, 48), np.diag([1e-9, 1e-9, 1.0]))
    with pytest.raises(DGPError, match="non-finite"):
        Camera("x", (64, 48), np.eye(3), tvec=[0, np.inf, 0])


# ----------------------------------------------------------------------------- selection


def test_subset_and_match_views():
    group = make_rig(3)
    sub = group.subset(["cam2", "cam0"])
    assert sub.names == ["cam2", "cam0"]
    assert sub.cameras[0] == group.cameras[2]
    assert group.match_views(["cam1", "cam2", "cam0"]).names == ["cam1", "cam2", "cam0"]
    with pytest.raises(DGPError, match="no camera called 'nope'"):
        group.subset(["nope"])
    with pytest.raises(DGPError) as info:
        group.match_views(["cam1", "cam2", "side"], path=Path("calib.toml"))
    text = str(info.value)
    assert "no camera for view(s) 'side'" in text and "camera(s) 'cam0' match no view" in text
    assert info.value.path == Path("calib.toml")
    with pytest.raises(DGPError, match="2 views, the calibration 3 cameras"):
        group.match_views(["cam1", "cam2"])
