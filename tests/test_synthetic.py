"""The synthetic animal: skeleton and motion, cameras, renderer, visibility and the project writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgp_pyro.data.labels import read_labels
from dgp_pyro.data.synthetic import (
    ARENA,
    BONE_LENGTHS,
    KEYPOINTS,
    SKELETON,
    SKELETON_INDEX,
    Arena,
    Scene,
    bone_lengths,
    keypoint_visibility,
    make_cameras,
    make_scene,
    render_views,
    simulate_motion,
    write_synthetic_project,
)
from dgp_pyro.data.synthetic.body import KEYPOINT_PARTS, LEG_FRONT_LEFT, LEG_FRONT_RIGHT, PART_COLOURS
from dgp_pyro.data.synthetic.camera_rays import pixel_rays
from dgp_pyro.data.synthetic.nuisances import HARD, Nuisances, part_colours
from dgp_pyro.data.synthetic.render import iter_view
from dgp_pyro.data.video import VideoReader
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_group import CameraGroup

FPS = 30.0
SIZE = (96, 80)


@pytest.fixture(scope="module")
def motion() -> np.ndarray:
    return simulate_motion(240, FPS, seed=3)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "proj"
    return write_synthetic_project(out, views=2, frames=40, labeled=6, seed=5, size=SIZE, fps=FPS)


# ---- skeleton and motion --------------------------------------------------------------------


def test_skeleton_is_a_tree_over_the_named_keypoints():
    assert KEYPOINTS[:3] == ("snout", "ear_left", "ear_right") and len(KEYPOINTS) == 13
    assert len(SKELETON) == len(KEYPOINTS) - 1 == len(BONE_LENGTHS)
    children = [b for _, b in SKELETON]
    assert sorted(children + ["hip"]) == sorted(KEYPOINTS)  # every keypoint but the root has one parent
    assert [(KEYPOINTS[a], KEYPOINTS[b]) for a, b in SKELETON_INDEX] == list(SKELETON)


def test_bone_lengths_are_constant(motion):
    lengths = bone_lengths(motion)
    np.testing.assert_allclose(lengths, np.broadcast_to(BONE_LENGTHS, lengths.shape), rtol=0, atol=1e-9)


def test_motion_is_smooth_and_inside_the_arena(motion):
    assert motion.shape == (240, len(KEYPOINTS), 3) and np.isfinite(motion).all()
    # second differences in mm per frame^2: the body moves smoothly, paws swing faster
    accel = np.linalg.norm(np.diff(motion, 2, axis=0), axis=-1).max(axis=0)
    body = [KEYPOINTS.index(k) for k in ("hip", "spine_mid", "neck", "snout", "tail_base")]
    assert accel[body].max() < 3.0
    assert accel.max() < 25.0
    # the body stays inside the box and above the floor, and out of the pillar
    assert (motion[..., :2] > 0).all() and (motion[..., :2] < ARENA.size).all()
    assert (motion[..., 2] > 0).all()
    for px, py, pr, _ in ARENA.pillars:
        assert np.hypot(motion[..., 0] - px, motion[..., 1] - py).min() > pr
    # it moves about
    hip = motion[:, KEYPOINTS.index("hip"), :2]
    assert np.linalg.norm(np.diff(hip, axis=0), axis=-1).sum() > 100.0


def test_gait_and_behaviours():
    points, states = simulate_motion(900, FPS, seed=1, return_states=True)
    assert set(np.unique(states)) >= {0, 1, 2}  # walking, turning and rearing happen
    z = points[..., 2]
    # paws touch the floor (stance) and are lifted (swing); rearing lifts the neck
    paws = [KEYPOINTS.index(k) for k in ("paw_front_left", "paw_hind_right")]
    assert z[:, paws].min() < 4.0 and z[:, paws].max() > 7.0
    assert z[:, KEYPOINTS.index("neck")].max() > 45.0
    # diagonal pairs move together: front-left with hind-right, against front-right
    walking = states == 0
    lifted = {k: z[walking, KEYPOINTS.index(k)] > z[:, KEYPOINTS.index(k)].min() + 1.0
              for k in ("paw_front_left", "paw_front_right", "paw_hind_left", "paw_hind_right")}  # fmt: skip
    together = (lifted["paw_front_left"] & lifted["paw_hind_right"]).sum()
    assert together > 50
    assert together > 3 * (lifted["paw_front_left"] & lifted["paw_front_right"]).sum()
    assert (lifted["paw_front_right"] & lifted["paw_hind_left"]).sum() > 3 * (
        lifted["paw_hind_left"] & lifted["paw_hind_right"]
    ).sum()


def test_motion_is_deterministic_for_a_seed(motion):
    np.testing.assert_array_equal(motion, simulate_motion(240, FPS, seed=3))
    assert not np.allclose(motion, simulate_motion(240, FPS, seed=4))


# ---- cameras, visibility, rendering ----------------------------------------------------------


def test_cameras_see_the_arena():
    cams = make_cameras(3, SIZE, seed=0)
    assert cams.names == ["cam0", "cam1", "cam2"]
    centre = ARENA.centre
    for cam in cams.cameras:
        assert cam.size == SIZE
        u, v = cam.project(centre[None])[0]
        assert 0 < u < SIZE[0] and 0 < v < SIZE[1]
        assert cam.center()[2] > 200 and np.abs(cam.dist[0]) > 0  # above, with some distortion
    assert make_cameras(1, SIZE).names == ["cam0"]


def test_pixel_rays_invert_the_projection():
    cam = make_cameras(2, SIZE, seed=0).cameras[1]
    rays = pixel_rays(cam)
    pts = cam.center() + 500.0 * rays
    uv = cam.project(pts)
    ys, xs = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    np.testing.assert_allclose(uv, np.stack([xs, ys], -1), atol=1e-4)


def test_some_keypoints_are_hidden_some_of_the_time(motion):
    cams = make_cameras(3, SIZE, seed=3)
    scene = make_scene(cams, len(motion), seed=3, points_3d=motion)
    points_2d, visible = keypoint_visibility(motion, cams, scene)
    assert points_2d.shape == (240, 3, len(KEYPOINTS), 2) and visible.shape == (240, 3, len(KEYPOINTS))
    np.testing.assert_allclose(points_2d[:, 1], cams.cameras[1].project(motion))
    assert 0.5 < visible.mean() < 0.98
    # paws are hidden more often than the ears
    per_keypoint = visible.mean(axis=(0, 1))
    assert per_keypoint[KEYPOINTS.index("paw_hind_left")] < per_keypoint[KEYPOINTS.index("ear_left")]


def test_a_keypoint_behind_the_pillar_is_hidden(motion):
    cams = make_cameras(1, SIZE, seed=0)
    cam = cams.cameras[0]
    px, py, pr, ph = ARENA.pillars[0]
    # move the pose so its hip sits right behind the pillar as this camera sees it
    hip = KEYPOINTS.index("hip")
    away = np.array([px, py]) - cam.center()[:2]
    away /= np.linalg.norm(away)
    goal = np.array([px, py]) + (pr + 40.0) * away  # 40 mm behind the pillar, seen from the camera
    pose = motion[:1].copy()
    pose[..., :2] += goal - pose[0, hip, :2]
    _, with_pillar = keypoint_visibility(pose, cams, Scene(arena=ARENA))
    _, without = keypoint_visibility(pose, cams, Scene(arena=Arena(pillars=())))
    assert without[0, 0, hip] and not with_pillar[0, 0, hip]


def test_rendered_keypoints_sit_on_their_body_part(motion):
    cams = make_cameras(2, SIZE, seed=3)
    scene = make_scene(cams, len(motion), seed=3, points_3d=motion)
    frames_idx = np.arange(0, 240, 12)
    pts = motion[frames_idx]
    frames, parts = render_views(pts, cams, scene, seed=3, noise_std=0.0, return_parts=True,
                                 frame_index=frames_idx)  # fmt: skip
    assert frames.shape == (len(frames_idx), 2, SIZE[1], SIZE[0], 3) and frames.dtype == np.uint8
    points_2d, visible = keypoint_visibility(pts, cams, scene, frame_index=frames_idx)
    on_part, same_colour, total = 0, 0, 0
    for t, v, j in zip(*np.nonzero(visible), strict=True):
        x, y = np.round(points_2d[t, v, j]).astype(int)
        if not (0 <= x < SIZE[0] and 0 <= y < SIZE[1]):
            continue
        total += 1
        pid = parts[t, v, y, x]
        if pid in KEYPOINT_PARTS[j]:
            on_part += 1
            rgb = frames[t, v, y, x].astype(float)
            base = PART_COLOURS[pid]
            cos = rgb @ base / (np.linalg.norm(rgb) * np.linalg.norm(base) + 1e-9)
            same_colour += cos > 0.95
    assert total > 100
    assert on_part / total > 0.75
    assert same_colour / on_part > 0.9
    # the body is drawn: some pixels of every frame belong to it, and the noise is seeded
    assert (parts > 0).reshape(len(frames_idx), 2, -1).any(-1).all()
    noisy1 = render_views(pts[:2], cams, scene, seed=3, frame_index=frames_idx[:2])
    noisy2 = render_views(pts[:2], cams, scene, seed=3, frame_index=frames_idx[:2])
    np.testing.assert_array_equal(noisy1, noisy2)
    assert np.abs(noisy1.astype(int) - frames[:2].astype(int)).mean() > 0.5


# ---- the project ---------------------------------------------------------------------------------


def test_project_layout(project):
    import yaml

    config = yaml.safe_load((project / "config.yaml").read_text())
    assert config["scorer"] == "synthetic" and config["bodyparts"] == list(KEYPOINTS)
    assert config["skeleton"] == [list(e) for e in SKELETON]
    assert config["multiview"] == {"views": ["cam0", "cam1"], "layout": "folders"}
    assert sorted(config["video_sets"]) == ["videos/session0_cam0.mp4", "videos/session0_cam1.mp4"]
    for view in ("cam0", "cam1"):
        assert (project / "videos" / f"session0_{view}.mp4").is_file()
        folder = project / "labeled-data" / f"session0_{view}"
        assert (folder / "CollectedData_synthetic.csv").is_file()
        assert (folder / "CollectedData_synthetic.h5").is_file()
        assert len(list(folder.glob("img*.png"))) == 6
    assert (project / "README.md").read_text().count("seed=5") == 1
    assert not [p for p in project.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_project_labels_are_the_visible_truth(project):
    truth = np.load(project / "ground_truth.npz")
    assert list(truth["keypoints"]) == list(KEYPOINTS) and list(truth["views"]) == ["cam0", "cam1"]
    np.testing.assert_array_equal(truth["skeleton"], SKELETON_INDEX)
    T, V, J = truth["visible"].shape
    assert (T, V, J) == (40, 2, len(KEYPOINTS)) and truth["points_3d"].shape == (T, J, 3)
    assert float(truth["fps"]) == FPS
    frames = truth["labeled_frames"]
    assert len(frames) == 6 and (np.diff(frames) > 0).all() and frames[-1] - frames[0] > 20
    cams = CameraGroup.from_toml(project / "calibration.toml")
    assert cams.names == ["cam0", "cam1"]
    for v, view in enumerate(cams.names):
        np.testing.assert_allclose(cams.cameras[v].project(truth["points_3d"]), truth["points_2d"][:, v])
        folder = project / "labeled-data" / f"session0_{view}"
        table = read_labels(folder / "CollectedData_synthetic.csv")
        assert table.scorer == "synthetic" and table.keypoints == list(KEYPOINTS)
        assert table.image_keys == [f"labeled-data/session0_{view}/img{t:05d}.png" for t in frames]
        hidden = ~truth["visible"][frames, v]
        assert np.isnan(table.coords).all(-1)[hidden].all()
        assert not np.isnan(table.coords).any(-1)[~hidden].any()
        np.testing.assert_allclose(table.coords[~hidden], truth["points_2d"][frames, v][~hidden])
        h5 = read_labels(folder / "CollectedData_synthetic.h5")
        np.testing.assert_array_equal(h5.coords, table.coords)
        # the labeled images are the video's frames, up to the codec (which also smooths away
        # part of the sensor noise: about 2.5 grey levels of the mean difference)
        with VideoReader(project / "videos" / f"session0_{view}.mp4") as video:
            assert len(video) == T
            for t in frames:
                png = np.asarray(Image.open(folder / f"img{t:05d}.png").convert("RGB")).astype(int)
                assert png.shape == (SIZE[1], SIZE[0], 3)
                diff = np.abs(png - video.read(int(t)).astype(int))
                assert diff.mean() < 6.0 and np.percentile(diff, 99) < 30


def test_project_is_deterministic(project, tmp_path):
    again = write_synthetic_project(
        tmp_path / "again", views=2, frames=40, labeled=6, seed=5, size=SIZE, fps=FPS
    )
    names = ["ground_truth.npz", "calibration.toml", "config.yaml", "README.md"]
    names += [f"labeled-data/session0_{v}/CollectedData_synthetic.csv" for v in ("cam0", "cam1")]
    for name in names:
        assert (again / name).read_bytes() == (project / name).read_bytes(), name
    for png in (project / "labeled-data" / "session0_cam0").glob("*.png"):
        assert (again / "labeled-data" / "session0_cam0" / png.name).read_bytes() == png.read_bytes()


def test_single_view_and_sessions(tmp_path):
    import yaml

    out = write_synthetic_project(tmp_path / "one", views=1, frames=12, labeled=2, seed=1, size=(64, 48),
                                  sessions=2)  # fmt: skip
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert "multiview" not in config
    assert sorted(config["video_sets"]) == ["videos/session0.mp4", "videos/session1.mp4"]
    assert (out / "labeled-data" / "session1" / "CollectedData_synthetic.csv").is_file()
    truth = np.load(out / "ground_truth.npz")
    assert truth["session1/points_3d"].shape == (12, len(KEYPOINTS), 3)
    assert truth["session0/visible"].shape == (12, 1, len(KEYPOINTS))
    assert not np.allclose(truth["session0/points_3d"], truth["session1/points_3d"])
    assert list(truth["sessions"]) == ["session0", "session1"]


def test_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DGPError, match="not empty"):
        write_synthetic_project(out, views=1, frames=4, labeled=1, size=(32, 32))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]  # no temporary folder left behind
    with pytest.raises(DGPError):
        write_synthetic_project(tmp_path / "odd", views=1, frames=4, labeled=1, size=(33, 32))
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_synthetic_project(empty, views=1, frames=3, labeled=1, size=(32, 32)) == empty.absolute()


def test_load_project_reads_the_synthetic_project(project):
    loader = pytest.importorskip("dgp_pyro.data.project", reason="dgp_pyro.data.project is not there yet")
    if not hasattr(loader, "load_project"):
        pytest.skip("dgp_pyro.data.project has no load_project yet")
    loaded = loader.load_project(project)
    assert loaded.views == ["cam0", "cam1"] and loaded.view_layout == "folders"
    assert loaded.bodyparts == list(KEYPOINTS)
    assert loaded.labels.shape == (6, 2, len(KEYPOINTS), 2)
    assert loaded.calibration == project / "calibration.toml"
    assert loaded.ground_truth == project / "ground_truth.npz"
    truth = np.load(project / "ground_truth.npz")
    frames = truth["labeled_frames"]
    expected = np.where(truth["visible"][frames][..., None], truth["points_2d"][frames], np.nan)
    np.testing.assert_allclose(loaded.labels, expected)


def test_an_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import dgp_pyro.data.synthetic.project as writer

    def broken(path, frames, fps, **kwargs):
        next(iter(frames))
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "write_video", broken)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_project(tmp_path / "proj", views=1, frames=4, labeled=1, size=(32, 32))
    assert list(tmp_path.iterdir()) == []


# ---- the hard renderer -----------------------------------------------------------------------


def test_hard_renderer_adds_each_nuisance_and_stays_seeded(motion):

    cams = make_cameras(1, SIZE, seed=3)
    scene = make_scene(cams, len(motion), seed=3, points_3d=motion)
    cam = cams.cameras[0]
    # fast frames, where the motion blur shows
    speed = np.linalg.norm(np.diff(motion[:, 4], axis=0), axis=-1)
    fast = np.sort(np.argsort(speed)[-6:] + 1)

    def render(nuisances, chunk=24, noise=0.0):
        items = iter_view(motion, cam, scene, seed=3, noise_std=noise, chunk=chunk, return_parts=True,
                          frame_index=np.arange(len(motion)), nuisances=nuisances)  # fmt: skip
        return [item for t, item in enumerate(items) if t in set(fast.tolist())]

    plain, hard = render(None), render(HARD)
    # look-alike limbs: the right legs wear the left legs' colour
    colours = part_colours(HARD)
    assert np.allclose(colours[LEG_FRONT_RIGHT], colours[LEG_FRONT_LEFT])
    assert not np.allclose(PART_COLOURS[LEG_FRONT_RIGHT], PART_COLOURS[LEG_FRONT_LEFT])
    # texture and distractors: the background off the body changes, with paw-coloured pixels in it
    frame_plain, parts = plain[0]
    frame_hard, _ = hard[0]
    background = parts == 0
    assert np.abs(frame_hard[background].astype(int) - frame_plain[background].astype(int)).mean() > 5
    # motion blur: on fast frames the body smears over pixels that the sharp body leaves bare
    only_blur = render(Nuisances(motion_blur=HARD.motion_blur))
    changed = [
        int(((blurred.astype(int) - sharp.astype(int)).__abs__().sum(-1) > 30)[p == 0].sum())
        for (sharp, p), (blurred, _) in zip(plain, only_blur, strict=True)
    ]
    assert max(changed) > 10
    # lighting: the mean brightness of the same scene varies from frame to frame
    only_light = render(Nuisances(lighting=HARD.lighting))
    ratios = [f.mean() / g.mean() for (f, _), (g, _) in zip(only_light, plain, strict=True)]
    assert np.ptp(ratios) > 0.02
    # seeded, and the same frames whatever the chunking
    again = render(HARD, chunk=5, noise=3.0)
    for (a, _), (b, _) in zip(render(HARD, noise=3.0), again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_hard_project_has_the_same_labels(tmp_path):
    easy = write_synthetic_project(tmp_path / "easy", views=1, frames=20, labeled=4, seed=2, size=SIZE)
    hard = write_synthetic_project(
        tmp_path / "hard", views=1, frames=20, labeled=4, seed=2, size=SIZE, hard=True
    )
    for name in ("labeled-data",):
        a = sorted(p.relative_to(easy) for p in (easy / name).rglob("*.csv"))
        assert a == sorted(p.relative_to(hard) for p in (hard / name).rglob("*.csv"))
        for rel in a:
            assert (easy / rel).read_text() == (hard / rel).read_text()
    image = sorted((easy / "labeled-data").rglob("*.png"))[0]
    other = hard / image.relative_to(easy)
    assert np.abs(np.asarray(Image.open(image), int) - np.asarray(Image.open(other), int)).mean() > 3
