"""Semi-supervised training of multi-view 3D Deep Graph Pose (:mod:`dgp_pyro.model.dgp3d`).

:func:`train_dgp3d` trains the 3D variants ``dgp3d``, ``dgp3d_temporal``, ``dgp3d_skeletal``
and ``dgp3d_bones`` into a run folder that looks and resumes exactly like every other run
(same config, split, ``loss.csv``, checkpoints; :mod:`dgp_pyro.train.supervised`), plus
``elbo.csv`` with the parts of the ELBO per step.

The project must be multi-view, in either layout, with an Anipose ``calibration.toml`` (or
``--calibration FILE``, e.g. written by ``dgp-pyro calibrate``) whose camera names are the
view names (:meth:`~dgp_pyro.geometry.cameras.CameraGroup.match_views`):

- *folders*: one video per camera and session (``videos/<session>_<view>.mp4``); the videos
  of a session must have the same number of frames (synchronised cameras);
- *suffix* (a mirror: one image holds every view, keypoint columns ``<bodypart>_<view>``):
  one video per session holds every view, so its frames are trivially synchronous; each
  camera is calibrated in the pixels of the whole image (``dgp-pyro calibrate`` writes it so).

One heatmap network is shared by all views. Its supervised part trains on the labeled images
exactly as a 2D run of the project does (one image per view, or the whole mirror image with its
``J V`` channels). The windows hold ``window`` synchronous frames of a session (windows around
each labeled frame found in a video, holding its training labels in every view, and windows
at seeded random places); every image of every frame goes through the network once, batched,
and :class:`~dgp_pyro.model.dgp3d.ViewChannels` splits the output channels into the views'
``(V, J)`` heatmaps the model takes (an identity in the folders layout).

Schedule (``RunConfig.model_options``, defaults in :data:`DEFAULT_OPTIONS_3D`):

1. warm-up on labeled images only for the first ``dgp_start`` fraction of the steps;
2. at the switch, the temporal weights (1 / world units^2) are set from the (trimmed) mean
   squared steps of the network's own triangulated soft-argmax trajectories over the pool's
   windows (:func:`estimate_temporal_weights3d`); the skeletal weights were set at the start from
   the bones of the triangulated training labels (:func:`skeleton_weights3d`: the inverse
   mean squared bone length for ``dgp3d``; mean length and inverse variance, floored at
   ``bone_sigma_floor`` of the length, for ``dgp3d_bones``), scaled by the strengths; and the
   guide's precision scales start calibrated on the labeled windows
   (:func:`calibrate_precision_scale`: the soft-argmax spread is the heatmap's width, not
   the error of its mean, which is many times smaller for a trained network);
3. joint phase: the negative ELBO of :func:`~dgp_pyro.model.dgp3d.dgp3d_model` under
   :func:`~dgp_pyro.model.dgp3d.dgp3d_guide`, one gradient step per batch (guide corrections,
   with ``learn_weights`` the quadratic weights, and with ``windows_train_network`` the
   network). The guide's parameters have their own learning rate ``guide_lr`` (the network's
   ``lr`` would move a log precision scale by about ``lr`` per step, far too slowly), same
   schedule, no weight decay.

**Why the windows do not train the network by default** (``bench_dgp3d_accuracy``, 3 cameras,
600 frames, 20 training labels, 600 steps, seed 0; 3D RMSE in mm, all points / points hidden in
a view). The network's 3D pseudo-labels helped a network that never learned what hidden looks
like (``absent_weight`` 0): dgp3d 7.15 / 8.61 against 7.81 / 9.35 for per-view networks plus
DLT, more weight on them hurt (7.30 at ``unlabeled_weight`` 0.3, 7.92 at 1). Teaching the
network empty maps for hidden parts (``absent_weight`` 0.3, the 3D default) helps far more, since
a hidden view then drops out of the triangulation (per-view networks plus DLT: 6.72 / 7.50), but
then the windows' bumps in hidden views fight the labels (7.55 / 8.53). With the network on
labels alone and the guide fitted on the windows: 6.29 / 7.05.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor, nn

from dgp_pyro.data.augment import resize_frames
from dgp_pyro.data.video import VideoReader, video_info
from dgp_pyro.data.windows import to_training_pixels, video_frame_of_image
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.cameras import CameraGroup, triangulate_torch
from dgp_pyro.model.dgp import LabeledBatch
from dgp_pyro.model.dgp3d import (
    DEFAULT_ROBUST,
    VARIANTS_3D,
    GuideCorrection3D,
    Model3DSettings,
    PotentialWeights3D,
    ViewCameras,
    ViewChannels,
    ViewWindowBatch,
    dgp3d_guide,
    dgp3d_model,
    triangulation_observations,
)
from dgp_pyro.model.potentials import default_skeletal_weights
from dgp_pyro.model.registry import MODELS_3D
from dgp_pyro.nets import normalize_images, soft_argmax
from dgp_pyro.run import Run, RunConfig
from dgp_pyro.train.dgp import (
    check_option_values,
    join_windows,
    trace_elbo,
    train_jointly,
)
from dgp_pyro.train.supervised import (
    build_network_seeded,
    prepare_training,
    seed_everything,
)

__all__ = [
    "DEFAULT_OPTIONS_3D",
    "MODELS_3D",
    "SessionVideos",
    "SyncWindowPool",
    "build_sync_window_pool",
    "calibrate_precision_scale",
    "check_frame_sizes",
    "elbo_loss3d",
    "estimate_temporal_weights3d",
    "mean_square_temporal_weights",
    "load_calibration",
    "model_settings3d",
    "resolve_options3d",
    "session_videos",
    "synchronous_videos",
    "skeleton_weights3d",
    "train_dgp3d",
    "triangulate_labels",
    "view_summaries",
]

#: Settings of the 3D schedule (``--option NAME=VALUE``).
DEFAULT_OPTIONS_3D: dict[str, Any] = {
    "window": 8,  # synchronous frames per window (each frame counts V images)
    "windows_per_step": 1,  # windows in each step's unlabeled batch
    "random_windows": 48,  # unlabeled windows in the pool (besides those around labels)
    "dgp_start": 0.6,  # fraction of the steps trained on labels only (as in 2D, measured there)
    # multiplies the data-driven temporal weights: a random walk with the measured mean squared
    # step is too stiff for gait (oscillating paws); 0.1 measured best on the synthetic rig
    "temporal_strength": 0.1,
    "skeletal_strength": 1.0,  # multiplies the triangulated-label skeletal (or bone) weights
    "bone_sigma_floor": 0.05,  # dgp3d_bones: bone-length std at least this fraction of the length
    "label_sigma": 1.0,  # labeling noise, training pixels
    "unlabeled_weight": 0.1,  # windows' ELBO per keypoint, frame and view, against the labeled loss
    "robust": DEFAULT_ROBUST,  # robust view weights: k in heatmap spreads (0: plain confidence weighting)
    "learn_weights": False,  # fit w_t and w_s by SVI as well
    # False: the windows fit only the guide; the network learns from the labels alone (clipped
    # apart from the guide, so the windows cannot touch its step). False by default: with the empty
    # maps of hidden parts (RunConfig.absent_weight) the windows' pseudo-labels, which put a
    # bump at the reprojection in every view, contradict the labels (measured in the module doc)
    "windows_train_network": False,
    "guide_lr": 0.02,  # peak lr of the guide corrections (and learned weights); null: the network's
    "calibrate_precision": True,  # start the precision scales from the labeled windows
    "calibration": None,  # an Anipose calibration.toml (default: the project's), --calibration
}

ELBO_LOG = "elbo.csv"
ELBO_PARTS = ("labeled_heatmaps", "neural", "bones", "keypoints", "labels", "entropy", "loss")


# --------------------------------------------------------------------------- settings


def resolve_options3d(config: RunConfig) -> dict[str, Any]:
    """The model options with defaults filled in; unknown names or bad values raise :class:`DGPError`."""
    unknown = sorted(set(config.model_options) - set(DEFAULT_OPTIONS_3D))
    if unknown:
        raise DGPError(
            f"unknown model option(s) {', '.join(unknown)}",
            hint=f"known options: {', '.join(DEFAULT_OPTIONS_3D)}",
        )
    options = {**DEFAULT_OPTIONS_3D, **config.model_options}
    check_option_values(options)
    return options


def model_settings3d(
    config: RunConfig, options: dict[str, Any] | None = None, channels: ViewChannels | None = None
) -> Model3DSettings:
    """The :class:`Model3DSettings` of a run (a ``supervised`` run gives the potential-free variant).

    ``channels``: the run's network channels (default: one per keypoint, the folders layout); the
    skeleton edges between channels (per view in the suffix layout) become edges between the
    3D keypoints, each once.
    """
    options = {**DEFAULT_OPTIONS_3D, **(options if options is not None else config.model_options)}
    if config.model not in VARIANTS_3D:
        raise DGPError(
            f"model {config.model!r} has no 3D form",
            hint=f"3D models: {', '.join(m for m in VARIANTS_3D)}",
        )
    if channels is None:
        index = {name: k for k, name in enumerate(config.keypoints)}
        edges = [(index[a], index[b]) for a, b in config.skeleton]
    else:
        edges = []
        for a, b in config.skeleton:
            edge = (channels.keypoint_of(a), channels.keypoint_of(b))
            if edge[0] != edge[1] and edge not in edges and edge[::-1] not in edges:
                edges.append(edge)
    robust = options.get("robust")
    return Model3DSettings(
        variant=config.model,
        stride=int(config.stride),
        heatmap_sigma=float(config.sigma if config.sigma is not None else config.stride),
        edges=edges,
        label_sigma=float(options["label_sigma"]),
        unlabeled_weight=float(options["unlabeled_weight"]),
        absent_weight=float(config.absent_weight),
        robust=float(robust) if robust else None,
    )


# --------------------------------------------------------------------------- calibration and videos


def load_calibration(project, path: str | Path | None = None) -> CameraGroup:
    """The calibration at ``path`` (default: the project's), cameras in the project's view order.

    Either layout: in the suffix (mirror) layout the camera names are the column suffixes
    (``top``, ``bot``) and every camera works in the pixels of the whole image.

    Raises:
        DGPError: no ``calibration.toml``, a single-view project, or cameras that do not match
            the views (fewer cameras, other names), naming the file.
    """
    if len(project.views) < 2:
        raise DGPError(
            f"3D models need at least 2 views; the project has {len(project.views)}",
            project.root,
            hint="name the views with --views, or set multiview: {views: [...]} in config.yaml",
        )
    if path is not None:
        if not Path(path).is_file():
            raise DGPError("calibration file not found", path)
        return CameraGroup.from_toml(path).match_views(list(project.views))
    if project.calibration is None:
        raise DGPError(
            "the project has no calibration.toml",
            project.root / "calibration.toml",
            hint="add an Anipose calibration (camera names = view names), pass --calibration FILE, "
            "or run `dgp-pyro calibrate`",
        )
    return CameraGroup.from_toml(project.calibration).match_views(list(project.views))


@dataclass
class SessionVideos:
    """One session's synchronous videos: ``videos[v]`` per view, their frame count and sizes.

    In the suffix layout every view's entry is the one video that holds them all
    (:meth:`ViewChannels.image_sources` gives the distinct ones).
    """

    name: str
    videos: list[Path]
    n_frames: int
    frame_sizes: list[tuple[int, int]]


def synchronous_videos(name: str, videos: list[Path], labels: list[str]) -> SessionVideos:
    """One session's videos (one per view), checked to have the same number of frames and frame rate.

    Raises:
        DGPError: videos of different lengths or frame rates, naming each (by ``labels``) with
            its length or rate.
    """
    infos = [video_info(p) for p in videos]
    lengths = [int(i["n_frames"]) for i in infos]
    if len(set(lengths)) > 1:
        detail = ", ".join(f"{label} {n} frames" for label, n in zip(labels, lengths, strict=True))
        raise DGPError(
            f"the videos of session {name!r} have different lengths ({detail})",
            videos[int(np.argmin(lengths))],
            hint="the cameras must be synchronised: trim the videos to the same frames",
        )
    rates = [float(i["fps"]) for i in infos]
    # containers round their time base: a relative 0.1 % is the same rate
    if max(rates) - min(rates) > 1e-3 * max(rates):
        detail = ", ".join(f"{label} {fps:g} fps" for label, fps in zip(labels, rates, strict=True))
        odd = int(np.argmax([abs(r - float(np.median(rates))) for r in rates]))
        raise DGPError(
            f"the videos of session {name!r} have different frame rates ({detail})",
            videos[odd],
            hint="synchronous cameras share one frame rate: re-encode the odd one at the others' rate",
        )
    sizes = [(int(i["width"]), int(i["height"])) for i in infos]
    return SessionVideos(name, list(videos), lengths[0], sizes)


def session_videos(project) -> list[SessionVideos]:
    """Every session with a video for every view, checked to have equally long videos.

    Raises:
        DGPError: a session lacking a view's video, videos of different lengths in one session
            (naming the session and each view's length), or no session at all.
    """
    sessions = []
    for name in sorted(project.sessions):
        by_view = project.sessions[name]
        missing = [v for v in project.views if v not in by_view]
        if missing:
            raise DGPError(
                f"session {name!r} has no video for view(s) {', '.join(missing)}",
                project.root / "videos",
                hint="each session needs one video per view, named <session>_<view>.mp4",
            )
        videos = [Path(by_view[v]) for v in project.views]
        sessions.append(synchronous_videos(name, videos, list(project.views)))
    if not sessions:
        raise DGPError(
            "the project has no session with a video for every view",
            project.root / "videos",
            hint="add videos/<session>_<view>.mp4 for every view",
        )
    sizes = sessions[0].frame_sizes
    for session in sessions[1:]:
        if session.frame_sizes != sizes:
            raise DGPError(
                f"session {session.name!r} has frame sizes {session.frame_sizes}, "
                f"session {sessions[0].name!r} {sizes}",
                project.root / "videos",
                hint="every session of a view must have the frame size of the calibration",
            )
    return sessions


def check_frame_sizes(group: CameraGroup, sessions: list[SessionVideos]) -> None:
    """Raise :class:`DGPError` where a view's videos are not the size its camera was calibrated at.

    In the suffix layout (one video holds every view) each camera must be calibrated in the
    pixels of the whole image.
    """
    for session in sessions:
        shared = len(set(session.videos)) < len(session.videos)
        for camera, video, size in zip(group.cameras, session.videos, session.frame_sizes, strict=True):
            if tuple(camera.size) != tuple(size):
                raise DGPError(
                    f"video {video.name} is {size[0]}x{size[1]} but camera {camera.name!r} was calibrated "
                    f"at {camera.size[0]}x{camera.size[1]}",
                    video,
                    hint=(
                        "one image holds every view here: calibrate each camera in the pixels of the whole "
                        "image (its principal point shifted to its view), as `dgp-pyro calibrate` does"
                        if shared
                        else "use the videos the calibration was made for (same resolution and crop)"
                    ),
                )


def triangulate_labels(project, group: CameraGroup, frames: np.ndarray | None = None) -> np.ndarray:
    """Triangulated labels ``(N, J, 3)`` of labeled frames (NaN where fewer than 2 views are labeled)."""
    labels = project.labels if frames is None else project.labels[np.asarray(frames, dtype=np.int64)]
    if labels.shape[0] == 0:
        return np.zeros((0, labels.shape[2], 3))
    return group.triangulate(np.moveaxis(labels, 1, 0))


def skeleton_weights3d(
    points_3d: Float[np.ndarray, "n keypoints 3"],
    edges: list[tuple[int, int]],
    variant: str,
    strength: float,
    sigma_floor: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (E,), bone lengths (E,))`` from triangulated labels.

    ``dgp3d`` and ``dgp3d_skeletal``: :func:`~dgp_pyro.model.potentials.default_skeletal_weights`
    (``strength`` over the mean squared bone vector). ``dgp3d_bones``: the mean length
    :math:`L_b` and ``strength`` over the variance of the length, the standard deviation
    floored at ``sigma_floor`` :math:`L_b`; a bone never triangulated gets weight 0.
    """
    E = len(edges)
    if E == 0:
        return np.zeros(0), np.zeros(0)
    if variant != "dgp3d_bones":
        return default_skeletal_weights(points_3d, edges, strength), np.zeros(E)
    lengths = np.full(E, np.nan)
    weights = np.zeros(E)
    for k, (i, j) in enumerate(edges):
        values = np.linalg.norm(points_3d[:, i] - points_3d[:, j], axis=-1)
        values = values[np.isfinite(values)]
        if values.size:
            lengths[k] = float(np.mean(values))
            variance = float(np.var(values)) if values.size > 1 else 0.0
            weights[k] = strength / max(variance, (sigma_floor * lengths[k]) ** 2, 1e-12)
    return weights, np.nan_to_num(lengths, nan=0.0)


# --------------------------------------------------------------------------- synchronous windows


@dataclass
class SyncWindowPool:
    """Decoded windows of synchronous frames, at training size.

    Attributes:
        frames: ``(P, T, I, H, W, 3)`` uint8, the ``I`` images of each frame (one per view in
            the folders layout, the one image holding every view in the suffix layout).
        labels: ``(P, T, V, J, 2)`` training labels in training pixels, NaN where missing.
        sources: ``P`` (session, first frame) pairs.
    """

    frames: UInt8[Tensor, "pool time images height width 3"]
    labels: Float[Tensor, "pool time views keypoints 2"]
    sources: list[tuple[str, int]]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def mask(self) -> Bool[Tensor, "pool time views keypoints"]:
        return torch.isfinite(self.labels).all(-1)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``count`` windows drawn uniformly with replacement: frames, labels, mask."""
        index = torch.randint(len(self), (count,), generator=generator)
        return self.frames[index], self.labels[index], self.mask[index]


def build_sync_window_pool(
    sessions: list[SessionVideos],
    size: tuple[int, int],
    window: int,
    num_random: int,
    seed: int,
    num_keypoints: int,
    labeled: list[tuple[str, int, int, np.ndarray]] = (),
    channels: ViewChannels | None = None,
) -> SyncWindowPool:
    """Choose and decode the windows of a 3D run.

    Args:
        sessions: the sessions (:func:`session_videos`).
        size: training size ``(W, H)``.
        window: frames per window.
        num_random: random windows, spread over the sessions in proportion to their length.
        seed: seeds the placement.
        num_keypoints: ``J``.
        labeled: ``(session, frame, view index, labels (J, 2) frame pixels)`` of the training
            samples; one window is centred (with a seeded jitter) on each labeled frame and
            holds that frame's labels in every view.
        channels: which image of a frame holds each view (default: one per view); each image
            (video) is decoded once.
    """
    rng = np.random.default_rng(seed)
    by_name = {s.name: s for s in sessions}
    V = len(sessions[0].videos) if sessions else 0
    image_of = list(range(V)) if channels is None else list(channels.image)
    n_images = max(image_of, default=-1) + 1
    grouped: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)
    for session, frame, view, points in labeled:
        if session in by_name and 0 <= frame < by_name[session].n_frames:
            grouped[(session, frame)][view] = points
    plan: list[tuple[SessionVideos, int, dict[int, dict[int, np.ndarray]]]] = []
    for (name, frame), views in sorted(grouped.items()):
        session = by_name[name]
        if session.n_frames < window:
            continue
        start = int(np.clip(frame - rng.integers(0, window), 0, session.n_frames - window))
        plan.append((session, start, {frame - start: views}))
    usable = [s for s in sessions if s.n_frames >= window]
    if usable and num_random > 0:
        weights = np.array([s.n_frames - window + 1 for s in usable], dtype=float)
        for c in rng.choice(len(usable), size=num_random, p=weights / weights.sum()):
            session = usable[c]
            plan.append((session, int(rng.integers(0, session.n_frames - window + 1)), {}))
    W, H = int(size[0]), int(size[1])
    frames = torch.zeros(len(plan), window, n_images, H, W, 3, dtype=torch.uint8)
    labels = torch.full((len(plan), window, V, num_keypoints, 2), float("nan"), dtype=torch.float32)
    readers: dict[Path, VideoReader] = {}
    order = sorted(range(len(plan)), key=lambda i: (plan[i][0].name, plan[i][1]))
    try:
        for i in order:
            session, start, window_labels = plan[i]
            for image in range(n_images):
                video = session.videos[image_of.index(image)]
                reader = readers.get(video) or readers.setdefault(video, VideoReader(video))
                decoded = [b for b, _ in reader.iter_batches(window, start=start, stop=start + window)]
                frames[i, :, image] = resize_frames(torch.from_numpy(np.concatenate(decoded)), (W, H))
            for offset, views in window_labels.items():
                for v, points in views.items():
                    pixels = to_training_pixels(points, session.frame_sizes[v], (W, H))
                    labels[i, offset, v] = torch.from_numpy(pixels).float()
    finally:
        for reader in readers.values():
            reader.close()
    return SyncWindowPool(frames, labels, [(plan[i][0].name, plan[i][1]) for i in range(len(plan))])


def _training_samples(
    setup, sessions: list[SessionVideos], channels: ViewChannels
) -> list[tuple[str, int, int, np.ndarray]]:
    """``(session, frame, view, labels (J, 2) in frame pixels)`` of the training samples found in a video.

    A sample is one image; it gives labels in every view it holds (all of them in the suffix layout).
    """
    project = setup.project
    samples = project.network_samples()
    video_of = {
        video: (s.name, image)
        for s in sessions
        for image, video in enumerate(channels.image_sources(s.videos))
    }
    videos = list(video_of)
    out = []
    for i in setup.train_index:
        found = video_frame_of_image(samples.image_keys[i], videos)
        if found is None:
            continue
        session, image = video_of[found[0]]
        for view in channels.views_of_image(image):
            out.append((session, int(found[1]), view, project.labels[samples.frame_index[i], view]))
    return out


# --------------------------------------------------------------------------- weights and ELBO


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _pool_channels(pool: SyncWindowPool, channels: ViewChannels | None) -> ViewChannels:
    if channels is not None:
        return channels
    V, J = pool.labels.shape[2], pool.labels.shape[3]
    return ViewChannels.per_camera([f"view{v}" for v in range(V)], [f"keypoint{j}" for j in range(J)])


def view_summaries(
    network: nn.Module,
    frames: UInt8[Tensor, "... images height width 3"],
    channels: ViewChannels,
    stride: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-argmax ``mean (..., V, J, 2)``, ``cov (..., V, J, 2, 2)``, ``confidence (..., V, J)`` of frames.

    Every image goes through ``network`` once (training pixels); :meth:`ViewChannels.summaries`
    splits the channels into views.
    """
    batch = frames.shape[:-3]  # (..., I)
    logits = network(normalize_images(frames.flatten(0, -4).to(_device(network))))
    summary = soft_argmax(logits.float(), stride)
    K = logits.shape[1]
    return channels.summaries(
        summary.mean.reshape(*batch, K, 2),
        summary.cov.reshape(*batch, K, 2, 2),
        summary.confidence.reshape(*batch, K),
    )


def mean_square_temporal_weights(
    trajectory: Float[np.ndarray, "time keypoints 3"],
    confidence: Float[np.ndarray, "time keypoints"],
    strength: float = 1.0,
    min_confidence: float = 0.5,
    trim: float = 0.02,
) -> np.ndarray:
    r"""``strength`` over the per-axis mean squared step of each keypoint (largest ``trim`` dropped).

    The maximum-likelihood step variance of a Gaussian random walk is the mean squared step.
    Animal steps are heavy-tailed (a paw rests, then swings), so the median-based estimate of
    :func:`~dgp_pyro.model.potentials.default_temporal_weights` makes the 3D prior several
    times too stiff for fast keypoints (measured on the synthetic animal: 0.4-2.3 against the
    true 0.15-0.3 mm^-2 for the paws), which drags fast moves. Only steps between two
    confident frames count; the largest ``trim`` of them are dropped as detection glitches.
    """
    step = trajectory[1:] - trajectory[:-1]
    squared = np.sum(step**2, axis=-1)
    ok = (confidence[1:] >= min_confidence) & (confidence[:-1] >= min_confidence) & np.isfinite(squared)
    dim = trajectory.shape[-1]
    weights = np.full(trajectory.shape[1], np.nan)
    for j in range(trajectory.shape[1]):
        values = np.sort(squared[:, j][ok[:, j]])
        if values.size < 5:
            continue
        keep = values[: max(1, int(np.ceil((1.0 - trim) * values.size)))]
        weights[j] = strength / max(float(np.mean(keep)) / dim, 1e-2)
    if np.isnan(weights).all():
        return np.full(trajectory.shape[1], strength)
    weights[np.isnan(weights)] = np.nanmedian(weights)
    return weights


@torch.no_grad()
def estimate_temporal_weights3d(
    network: nn.Module,
    pool: SyncWindowPool,
    cameras: ViewCameras,
    settings: Model3DSettings,
    strength: float,
    batch: int = 48,
    channels: ViewChannels | None = None,
) -> np.ndarray:
    """Data-driven 3D :math:`w_t`: mean squared steps of the network's triangulated soft-argmax.

    See :func:`mean_square_temporal_weights`. A 3D point counts as confident where its second
    most confident view has a heatmap peak of at least 0.5 (two views see it); steps never
    span two windows. ``channels``: the views in the network's output (default: one image per view).
    """
    channels = _pool_channels(pool, channels)
    was_training = network.training
    network.eval()
    _, T, n_images = pool.frames.shape[:3]
    per_chunk = max(1, batch // (T * n_images))
    trajectories, confidences = [], []
    for start in range(0, len(pool), per_chunk):
        frames = pool.frames[start : start + per_chunk]
        mean, cov, confidence = view_summaries(network, frames, channels, settings.stride)
        obs = triangulation_observations(
            cameras, mean, cov, confidence, robust=settings.robust, iterations=settings.gauss_newton
        )
        points = obs.point.cpu().numpy()  # (w, T, J, 3)
        conf = confidence.double().sort(dim=2, descending=True).values[:, :, 1]
        trajectories.append(join_windows(points, np.nan))
        confidences.append(join_windows(conf.cpu().numpy(), 0.0))
    network.train(was_training)
    return mean_square_temporal_weights(np.concatenate(trajectories), np.concatenate(confidences), strength)


@torch.no_grad()
def calibrate_precision_scale(
    network: nn.Module,
    pool: SyncWindowPool,
    cameras: ViewCameras,
    settings: Model3DSettings,
    bounds: tuple[float, float] = (0.1, 1e4),
    channels: ViewChannels | None = None,
) -> np.ndarray:
    r"""Per-keypoint precision scales that calibrate the 3D pseudo-observations on the labeled frames.

    The Gaussian form's :math:`\Sigma_v` is the heatmap's spatial spread, not the error of its
    mean, so the pseudo-observation precision :math:`P` is off by a factor. On the pool's
    frames labeled in at least two views, the triangulated label :math:`Y` and the heatmaps'
    pseudo-observation :math:`(m, P)` give :math:`s_j = 3 / \overline{(m - Y)^\top P (m - Y)}`
    (a calibrated 3D Gaussian has a mean squared Mahalanobis distance of 3), clipped to
    ``bounds``; SVI refines it. Keypoints with fewer than 3 such frames get the median scale
    (1 when there is none). The labels are training labels, so the scale errs on the confident
    side. ``channels``: the views in the network's output (default: one image per view).
    """
    channels = _pool_channels(pool, channels)
    was_training = network.training
    network.eval()
    mask = pool.mask  # (P, T, V, J)
    rows = (mask.sum(2) >= 2).any(-1).nonzero()  # (n, 2): (window, frame) with a 2-view label
    J = mask.shape[-1]
    sums, counts = np.zeros(J), np.zeros(J)
    for start in range(0, len(rows), 16):
        p, t = rows[start : start + 16].unbind(-1)
        frames = pool.frames[p, t]  # (n, I, H, W, 3)
        mean, cov, confidence = view_summaries(network, frames, channels, settings.stride)
        obs = triangulation_observations(
            cameras, mean, cov, confidence, robust=settings.robust, iterations=settings.gauss_newton
        )
        labels = pool.labels[p, t].to(torch.float64)  # (n, V, J, 2)
        weight = (mask[p, t]).to(torch.float64).movedim(1, 0)  # (V, n, J)
        truth = triangulate_torch(
            labels.movedim(1, 0).to(obs.mean.device),
            confidence=weight.to(obs.mean.device),
            **cameras.params(),
        )  # (n, J, 3)
        error = obs.mean - truth
        d2 = torch.einsum("nji,njik,njk->nj", error, obs.precision, error)
        ok = torch.isfinite(d2) & obs.observed
        sums += torch.where(ok, d2, torch.zeros_like(d2)).sum(0).cpu().numpy()
        counts += ok.sum(0).cpu().numpy()
    network.train(was_training)
    scale = np.full(J, np.nan)
    enough = counts >= 3
    scale[enough] = 3.0 * counts[enough] / np.maximum(sums[enough], 1e-12)
    fill = float(np.nanmedian(scale)) if enough.any() else 1.0
    return np.clip(np.where(np.isnan(scale), fill, scale), *bounds)


def elbo_loss3d(*args: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO of :func:`dgp3d_model` under :func:`dgp3d_guide` and its parts (one sample)."""
    return trace_elbo(dgp3d_model, dgp3d_guide, *args)


# --------------------------------------------------------------------------- the trainer


def train_dgp3d(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """Train a 3D variant (one of :data:`MODELS_3D`) into ``out_dir``.

    ``on_step(step, loss)`` is called after every step (tests, monitoring).

    Raises:
        DGPError: besides :func:`~dgp_pyro.train.supervised.prepare_training`'s checks, a
            single-view project, a missing or mismatched calibration (camera names, frame
            sizes), videos of different lengths in a session, no window of video.
    """
    if config.model not in MODELS_3D:
        raise DGPError(f"train_dgp3d trains {', '.join(MODELS_3D)}, not {config.model!r}")
    options = resolve_options3d(config)
    config.model_options = options
    setup = prepare_training(config, out_dir, resume)
    config, device = setup.config, setup.device
    project = setup.project
    group = load_calibration(project, options["calibration"])
    sessions = session_videos(project)
    check_frame_sizes(group, sessions)
    channels = ViewChannels.from_project(project)
    settings = model_settings3d(config, options, channels)
    size = tuple(config.size)
    cameras = ViewCameras.from_group(group, sessions[0].frame_sizes, size, device=device)

    generator = seed_everything(config.seed)
    network = build_network_seeded(config).to(device)
    keypoints = len(channels.keypoints)
    samples = project.network_samples()
    train_frames = np.unique(samples.frame_index[setup.train_index])
    group.check_geometry()  # before triangulating: coinciding camera centres
    labels_3d = triangulate_labels(project, group, train_frames)
    group.check_geometry(labels_3d)  # centres on a line with the animal: depth unobservable
    skeletal, lengths = skeleton_weights3d(
        labels_3d,
        settings.edges,
        config.model,
        float(options["skeletal_strength"]),
        float(options["bone_sigma_floor"]),
    )
    learn = bool(options["learn_weights"]) and not settings.bones
    weights = PotentialWeights3D(
        torch.ones(keypoints), torch.as_tensor(skeletal), torch.as_tensor(lengths), learn=learn
    )
    correction = GuideCorrection3D(keypoints)
    weights.to(device)
    correction.to(device)
    pool = build_sync_window_pool(
        sessions,
        size,
        int(options["window"]),
        int(options["random_windows"]),
        config.seed,
        keypoints,
        labeled=_training_samples(setup, sessions, channels),
        channels=channels,
    )
    if len(pool) == 0:
        raise DGPError(
            f"model {config.model!r} needs video: no session has {options['window']} frames",
            project.root / "videos",
            hint="use a shorter window (--option window=N)",
        )

    def window_batch(logits: Tensor, labels: Tensor, mask: Tensor) -> ViewWindowBatch:
        w, t = mask.shape[:2]  # the logits of every image of every frame: (w t images, ...)
        return ViewWindowBatch(
            channels.select(logits.reshape(w, t, channels.num_images, *logits.shape[1:]), tail=2),
            labels.to(device),
            mask.to(device),
            channels.present(device),
        )

    def loss(labeled: LabeledBatch, windows: ViewWindowBatch | None) -> tuple[Tensor, dict[str, float]]:
        return elbo_loss3d(network, settings, weights, correction, cameras, labeled, windows)

    return train_jointly(
        setup, network, weights, correction, pool, generator, resume,
        settings=settings,
        temporal_weights=lambda strength: estimate_temporal_weights3d(
            network, pool, cameras, settings, strength, channels=channels
        ),
        precision_scale=lambda: calibrate_precision_scale(
            network, pool, cameras, settings, channels=channels
        ),
        window_batch=window_batch,
        loss=loss,
        elbo_parts=ELBO_PARTS,
        extra_state={"frame_sizes": [list(size) for size in sessions[0].frame_sizes]},
        progress=progress,
        on_step=on_step,
    )  # fmt: skip
