"""Network summaries over whole videos and labeled images, streamed in batches.

For every frame and keypoint the heatmap network gives a Gaussian summary
(:func:`~dgp_pyro.nets.soft_argmax`): a mean position, a 2 x 2 covariance and a confidence
(the heatmap's peak probability, DeepLabCut's *likelihood*). :func:`predict_video` streams a
video through the network ``batch_size`` frames at a time: decode, resize to the training
size, normalise, forward, soft-argmax, and map the results back to the video's own pixel
coordinates (:func:`~dgp_pyro.data.augment.unscale_points`, exact, no half-pixel shift). The
next batch is decoded in a background thread while the network works on the current one
(double buffering), so at most two batches of frames are alive at any time and memory stays
flat in the video's length; the outputs are ``(T, K, ...)`` float arrays (about 60 bytes per
keypoint and frame).

:func:`summaries_to_table` turns summaries into a
:class:`~dgp_pyro.data.predictions.PredictionTable` (x, y, likelihood plus ``x_std``,
``y_std``) and :func:`write_prediction_files` writes it as DeepLabCut ``.h5`` and ``.csv``;
the Deep Graph Pose posterior reuses both with its own columns (``extras``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import nn

from dgp_pyro.data.augment import resize_frames
from dgp_pyro.data.dataset import read_image
from dgp_pyro.data.predictions import PredictionTable, write_predictions
from dgp_pyro.data.video import VideoReader
from dgp_pyro.errors import DGPError
from dgp_pyro.nets.heatmap_net import normalize_images
from dgp_pyro.nets.heatmaps import second_mode, soft_argmax

__all__ = [
    "NetworkSummaries",
    "summarize_frames",
    "predict_video",
    "predict_images",
    "image_heatmaps",
    "summaries_to_table",
    "write_prediction_files",
    "prediction_stem",
]

#: Frames per forward pass by default (fits any GPU and keeps CPU memory small).
DEFAULT_BATCH_SIZE = 16


@dataclass
class NetworkSummaries:
    """Per-frame Gaussian summaries of the heatmaps, in the frames' own pixel coordinates.

    Attributes:
        mean: ``(T, K, 2)`` soft-argmax position (x, y), pixels.
        cov: ``(T, K, 2, 2)`` covariance, pixels squared.
        confidence: ``(T, K)`` peak probability of the heatmap in [0, 1].
        frame_index: ``(T,)`` video frame numbers (0..T-1 for images).
        second: the same summaries of each heatmap's second mode
            (:func:`~dgp_pyro.nets.heatmaps.second_mode`), where asked for (``second_mode=True``),
            else None; the 3D posterior picks between the modes across views.
    """

    mean: Float[np.ndarray, "t k 2"]
    cov: Float[np.ndarray, "t k 2 2"]
    confidence: Float[np.ndarray, "t k"]
    frame_index: np.ndarray
    second: NetworkSummaries | None = None

    @property
    def std(self) -> Float[np.ndarray, "t k 2"]:
        """Marginal standard deviations ``(x_std, y_std)``: square roots of the covariance diagonal."""
        return np.sqrt(np.stack([self.cov[..., 0, 0], self.cov[..., 1, 1]], axis=-1))

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def empty(cls, n: int, k: int, second: bool = False) -> NetworkSummaries:
        return cls(
            mean=np.full((n, k, 2), np.nan),
            cov=np.full((n, k, 2, 2), np.nan),
            confidence=np.full((n, k), np.nan),
            frame_index=np.arange(n, dtype=np.int64),
            second=cls.empty(n, k) if second else None,
        )

    def set_rows(self, rows: np.ndarray, summaries: tuple[np.ndarray, ...]) -> None:
        """Fill ``rows`` from :func:`summarize_frames`' arrays (three, or six with the second mode)."""
        self.mean[rows], self.cov[rows], self.confidence[rows] = summaries[:3]
        if self.second is not None:
            self.second.set_rows(rows, summaries[3:])

    def select(self, rows: np.ndarray | list[int]) -> NetworkSummaries:
        """The summaries of ``rows`` (frame numbers kept), the second mode's too."""
        return NetworkSummaries(
            self.mean[rows],
            self.cov[rows],
            self.confidence[rows],
            self.frame_index[rows],
            None if self.second is None else self.second.select(rows),
        )


def _device_of(network: nn.Module) -> torch.device:
    try:
        return next(network.parameters()).device
    except StopIteration:  # pragma: no cover - a network always has parameters
        return torch.device("cpu")


def summarize_frames(
    network: nn.Module,
    frames: np.ndarray | torch.Tensor,
    size: Sequence[int],
    temperature: float = 1.0,
    second: bool = False,
) -> tuple[np.ndarray, ...]:
    """Summaries of one batch of uint8 frames ``(B, H, W, 3)``, in the frames' pixel coordinates.

    The network must be in eval mode; call under ``torch.inference_mode()``.

    A network with an offset head (``RunConfig.offset_head``) refines each mean with its
    location-refinement offsets (:func:`~dgp_pyro.nets.soft_argmax`); the second mode keeps the
    heatmap's own.

    Returns:
        ``(mean (B, K, 2), cov (B, K, 2, 2), confidence (B, K))`` as float64 arrays; with
        ``second``, followed by the same three of each heatmap's second mode.
    """
    device = _device_of(network)
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    b, h0, w0, _ = x.shape
    x = resize_frames(x.to(device, non_blocking=True), size)
    inputs, offsets = normalize_images(x), None
    if getattr(network, "has_offsets", False):
        logits, offsets = network.forward_with_offsets(inputs)
        logits, offsets = logits.float(), offsets.float()
    else:
        logits = network(inputs).float()
    # Back to the frame's own pixels: x0 = (x + 0.5) * W0 / W - 0.5, covariance scaled alike.
    factor = torch.tensor([w0 / size[0], h0 / size[1]], dtype=torch.float64)
    modes = [soft_argmax(logits, int(network.stride), temperature=temperature, offsets=offsets)]
    if second:
        modes.append(second_mode(logits, int(network.stride), temperature=temperature))
    out: list[np.ndarray] = []
    for summary in modes:
        mean = (summary.mean.double().cpu() + 0.5) * factor - 0.5
        cov = summary.cov.double().cpu() * (factor[:, None] * factor[None, :])
        out += [mean.numpy(), cov.numpy(), summary.confidence.double().cpu().numpy()]
    return tuple(out)


def _batches_checked(reader, path: Path, batch_size: int, start: int, stop: int) -> Iterator:
    """The reader's batches; a decoding failure becomes a DGPError naming the file and frame."""
    expected = start
    iterator = reader.iter_batches(batch_size, start=start, stop=stop)
    while True:
        try:
            frames, index = next(iterator)
        except StopIteration:
            break
        except DGPError as error:
            if "frame" in error.problem:  # the reader already names the frame
                raise
            raise DGPError(
                f"cannot decode frame {expected}: {error.problem}", path, hint=error.hint
            ) from error
        except Exception as error:  # PyAV/FFmpeg raise many types for a damaged stream
            raise DGPError(
                f"cannot decode frame {expected} ({type(error).__name__}: {error})".replace("\n", " "),
                path,
                hint="the video file is damaged or truncated; re-encode or re-copy it",
            ) from error
        index = np.asarray(index, dtype=np.int64)
        yield frames, index
        del frames  # drop this batch before the next one is decoded
        expected = int(index[-1]) + 1 if len(index) else expected
    if expected < stop:
        raise DGPError(
            f"the video ended at frame {expected}, its header says {stop} frames",
            path,
            hint="the video file is damaged or truncated; re-encode or re-copy it",
        )


class _Prefetcher:
    """Decode the next batch in a background thread while the current one is computed.

    Double buffering: at most two batches exist at a time (the one being computed and the one
    decoded ahead), so memory stays flat in the video's length. PyAV and PyTorch release the
    GIL while they work, so decoding overlaps the network (a large gain on a GPU, and on a CPU
    whenever the network does not keep every core busy). Errors raised while decoding are
    re-raised in the caller at the batch where they happened.
    """

    _DONE = object()

    def __init__(self, iterator: Iterator, depth: int = 1):
        self._iterator = iterator
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth + 1)
        self._stop = threading.Event()
        self._held = False
        self._thread = threading.Thread(target=self._work, name="dgp-pyro-decode", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while True:
                while not self._slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    item = next(self._iterator)
                except StopIteration:
                    self._queue.put(self._DONE)
                    return
                except BaseException as error:  # re-raised in the consumer
                    self._queue.put(_Failure(error))
                    return
                self._queue.put(item)
                del item
        finally:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> _Prefetcher:
        return self

    def __next__(self):
        if self._held:  # the caller is done with the previous batch
            self._held = False
            self._slots.release()
        item = self._queue.get()
        if item is self._DONE:
            raise StopIteration
        if isinstance(item, _Failure):
            raise item.error
        self._held = True
        return item

    def close(self) -> None:
        self._stop.set()
        self._slots.release()
        self._thread.join(timeout=10)


@dataclass
class _Failure:
    error: BaseException


def predict_video(
    network: nn.Module,
    video_path: str | Path,
    size: Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    start: int = 0,
    stop: int | None = None,
    temperature: float = 1.0,
    progress: bool = False,
    prefetch: bool = True,
    second_mode: bool = False,
) -> NetworkSummaries:
    """Stream a video through the network and summarise every frame's heatmaps.

    Args:
        network: a heatmap network (``forward(images) -> logits``, attribute ``stride``), on the
            device to run on; it is put in eval mode for the call and restored after.
        video_path: the video file.
        size: the network's input size ``(W, H)`` (the run's training size).
        batch_size: frames per forward pass (memory: one batch of frames at a time).
        start, stop: the frame range (default: the whole video).
        temperature: soft-argmax temperature.
        progress: show a progress bar (on a terminal only).
        prefetch: decode the next batch in a background thread while the network runs
            (at most two batches of frames in memory); ``False``: one batch, no thread.
        second_mode: also summarise each heatmap's second mode (``NetworkSummaries.second``).

    Returns:
        :class:`NetworkSummaries` of frames ``start .. stop - 1`` in the video's pixels.

    Raises:
        DGPError: the video cannot be opened, or a frame fails to decode (named).
    """
    path = Path(video_path)
    was_training = network.training
    network.eval()
    try:
        with VideoReader(path) as reader, torch.inference_mode():
            stop = reader.n_frames if stop is None else min(int(stop), reader.n_frames)
            start = int(start)
            n = max(0, stop - start)
            out = NetworkSummaries.empty(n, int(network.num_keypoints), second=second_mode)
            out.frame_index = np.arange(start, start + n, dtype=np.int64)
            if out.second is not None:
                out.second.frame_index = out.frame_index
            bar = _bar(n, progress, path.name)
            batches = _batches_checked(reader, path, batch_size, start, stop)
            if prefetch:
                batches = _Prefetcher(batches)
            try:
                for frames, index in batches:
                    rows = index - start
                    out.set_rows(rows, summarize_frames(network, frames, size, temperature, second_mode))
                    bar.update(len(rows))
                    del frames  # drop this batch before asking for the next
            finally:
                if prefetch:
                    batches.close()
                bar.close()
    finally:
        network.train(was_training)
    return out


def predict_images(
    network: nn.Module,
    image_paths: Sequence[str | Path],
    size: Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    temperature: float = 1.0,
    second_mode: bool = False,
) -> NetworkSummaries:
    """Summaries of labeled images (each in its own pixel coordinates), batched by image size.

    ``second_mode``: also each heatmap's second mode (``NetworkSummaries.second``)."""
    paths = [Path(p) for p in image_paths]
    was_training = network.training
    network.eval()
    out = NetworkSummaries.empty(len(paths), int(network.num_keypoints), second=second_mode)
    try:
        with torch.inference_mode():
            i = 0
            while i < len(paths):
                first = read_image(paths[i])
                batch, rows = [first], [i]
                j = i + 1
                while j < len(paths) and len(batch) < batch_size:
                    image = read_image(paths[j])
                    if image.shape != first.shape:
                        break
                    batch.append(image)
                    rows.append(j)
                    j += 1
                out.set_rows(rows, summarize_frames(network, np.stack(batch), size, temperature, second_mode))
                i = j
    finally:
        network.train(was_training)
    return out


def image_heatmaps(
    network: nn.Module, image_paths: Sequence[str | Path], size: Sequence[int]
) -> Float[np.ndarray, "n k h w"]:
    """The network's heatmaps (sigmoid probabilities) of images resized to the training ``size``.

    Cell ``(i, j)`` is centred at training pixel ``(j s + (s - 1) / 2, i s + (s - 1) / 2)``,
    ``s`` the network's stride (:func:`~dgp_pyro.nets.heatmaps.heatmap_grid`).
    """
    device = _device_of(network)
    was_training = network.training
    network.eval()
    maps = []
    try:
        with torch.inference_mode():
            for path in image_paths:
                x = torch.from_numpy(np.ascontiguousarray(read_image(Path(path))))[None]
                logits = network(normalize_images(resize_frames(x.to(device), size)))
                maps.append(torch.sigmoid(logits.float())[0].cpu().numpy())
    finally:
        network.train(was_training)
    return np.stack(maps) if maps else np.zeros((0, int(network.num_keypoints), 0, 0), np.float32)


def _bar(total: int, enabled: bool, name: str):
    import sys

    from tqdm import tqdm  # not tqdm.auto: it warns in a notebook kernel without ipywidgets

    return tqdm(total=total, desc=name, unit="frame", disable=not (enabled and sys.stderr.isatty()))


# --------------------------------------------------------------------------- files


def summaries_to_table(
    summaries: NetworkSummaries,
    keypoints: Sequence[str],
    scorer: str,
    image_keys: Sequence[str] | None = None,
    extras: dict[str, np.ndarray] | None = None,
) -> PredictionTable:
    """A DeepLabCut prediction table: x, y, likelihood (= confidence), ``x_std``, ``y_std``, extras.

    Args:
        summaries: the network (or posterior) summaries.
        keypoints: column names, one per keypoint.
        scorer: the scorer written in the header (``DGPpyro_<model>``).
        image_keys: row keys for predictions on labeled images (default: frame numbers).
        extras: more ``(T, K)`` columns appended after ``y_std`` (e.g. credible intervals).
    """
    std = summaries.std
    columns = {"x_std": std[..., 0], "y_std": std[..., 1]}
    columns.update(extras or {})
    return PredictionTable(
        scorer=scorer,
        keypoints=list(keypoints),
        xy=summaries.mean,
        likelihood=summaries.confidence,
        extras=columns,
        frame_index=summaries.frame_index,
        image_keys=None if image_keys is None else list(image_keys),
    )


def prediction_stem(video: str | Path, scorer: str) -> str:
    """``<video stem>_<scorer>``, the DeepLabCut naming of a video's prediction file."""
    return f"{Path(video).stem}_{scorer}"


def write_prediction_files(
    table: PredictionTable, out_dir: str | Path, stem: str, formats: Sequence[str] = ("h5", "csv")
) -> list[Path]:
    """Write ``table`` as ``out_dir/<stem>.h5`` and ``.csv`` (atomically); return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        write_predictions(path, table)
        paths.append(path)
    return paths
