"""Video reading with exact random access, and video writing, through PyAV.

Why PyAV: it is maintained, its wheels bundle FFmpeg (h264 decoding and the ``libx264``
encoder included), so nothing depends on a system FFmpeg, and it exposes packets, timestamps
and keyframe seeking, which is what exact frame-level random access needs. OpenCV's
``CAP_PROP_POS_FRAMES`` seeking is inexact for some codecs and containers (it can land a few
frames off after a seek), which would silently misalign labels and frames.

Frame ``k`` of a video is the ``k``-th frame the decoder outputs when decoding from the start.
:meth:`VideoReader.read` finds it by its presentation timestamp: the timestamps of all frames
are the sorted timestamps of the stream's packets (one demuxing pass, no decoding), the reader
seeks to the keyframe at or before frame ``k``'s timestamp and decodes forward until that
timestamp comes out, so random access returns the same pixels as sequential decoding.

Frame count: MP4/MOV files store one sample-table entry per coded frame, so the stream's frame
count (``nb_frames``) is exact and is trusted; other containers (AVI, MKV, ...) are counted by
demuxing every packet (fast: nothing is decoded). A file whose header promises more frames
than its data holds (a truncated MP4 with its index at the front) raises
``DGPError("video could not be decoded at frame k")`` when frame ``k`` is reached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from jaxtyping import Int, UInt8

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

__all__ = ["VideoReader", "video_info", "write_video"]

#: A read() this many frames ahead of the decoder's position decodes forward instead of seeking.
FORWARD_DECODE_LIMIT = 64
#: Container suffixes write_video accepts, and their default codec.
DEFAULT_CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4"}
_TRUNCATED_HINT = "the file may be truncated or corrupt; re-encode or re-copy it"


def _open(path: Path) -> tuple[Any, Any]:
    """Open ``path`` and return (container, first video stream), or raise DGPError."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DGPError(f"cannot open the video ({exc})", path, hint="is this a video file?") from None
    if not container.streams.video:
        container.close()
        raise DGPError("the file has no video stream", path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _is_mp4(container: Any) -> bool:
    return "mp4" in container.format.name.split(",") or "mov" in container.format.name.split(",")


class VideoReader:
    """Read frames of a video as RGB arrays, sequentially or at random, exactly.

    Use as a context manager (``with VideoReader(path) as video: ...``) or call
    :meth:`close`.

    Attributes:
        path: the video file.
        n_frames: number of frames (see the module docstring for how it is counted).
        frame_count_source: ``"header"`` (MP4/MOV sample table) or ``"demux"`` (packets
            counted).
        fps: average frame rate (NaN if the file gives none).
        width, height: frame size in pixels.

    Raises:
        DGPError: the file is missing, unreadable, has no video stream or no frames.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise DGPError("is a folder, not a video file", self.path)
        if not self.path.is_file():
            raise DGPError("video file not found", self.path)
        if self.path.stat().st_size == 0:
            raise DGPError("the video file is empty", self.path, hint=_TRUNCATED_HINT)
        self._container, self._stream = _open(self.path)
        try:
            self._setup()
        except BaseException:
            self._container.close()
            raise
        self._decoder: Iterator[Any] | None = None
        self._next: int | None = None  # index of the frame the decoder gives next, if known

    def _setup(self) -> None:
        stream = self._stream
        ctx = stream.codec_context
        self.width: int = int(ctx.width)
        self.height: int = int(ctx.height)
        if self.width <= 0 or self.height <= 0:
            raise DGPError("the video stream has no frame size", self.path, hint=_TRUNCATED_HINT)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps: float = float(rate) if rate else math.nan
        self._pts: np.ndarray | None = None  # presentation timestamp of every frame, sorted
        self._pts_index: dict[int, int] = {}
        if _is_mp4(self._container) and stream.frames > 0:
            self.n_frames: int = int(stream.frames)
            self.frame_count_source = "header"
        else:
            self._build_index()
            self.n_frames = len(self._pts)
            self.frame_count_source = "demux"
        if self.n_frames == 0:
            raise DGPError("the video has no frames", self.path)

    def _build_index(self) -> None:
        """Timestamps of all frames, from one demuxing pass in a separate container."""
        pts = []
        missing_pts = False
        try:
            container, stream = _open(self.path)
        except DGPError:
            container = None
        if container is not None:
            with container:
                try:
                    for packet in container.demux(stream):
                        if packet.size == 0 or packet.is_discard:
                            continue  # the flush packet at the end, or dropped by an edit list
                        if packet.pts is None:
                            missing_pts = True
                        else:
                            pts.append(int(packet.pts))
                except av.FFmpegError:
                    pass  # a truncated file: frames past this point cannot be read
        if missing_pts:
            raise DGPError(
                "the video has frames without timestamps, so frames cannot be located exactly",
                self.path,
                hint="remux it into an MP4 (ffmpeg -i in -c copy out.mp4)",
            )
        self._pts = np.sort(np.asarray(pts, dtype=np.int64))
        self._pts_index = {int(p): i for i, p in enumerate(self._pts)}

    # -- protocol ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_frames

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}"
        return f"VideoReader({str(self.path)!r}, {self.n_frames} frames, {size}, {self.fps:g} fps)"

    def close(self) -> None:
        """Release the file. Reading afterwards is an error."""
        self._decoder = None
        self._container.close()

    # -- random access ----------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"frame index must be an integer, got {index!r}")
        index = int(index)
        if index < 0:
            raise DGPError(f"frame {index} is negative (frames are numbered from 0)", self.path)
        if index >= self.n_frames:
            raise DGPError(f"frame {index} is past the end (video has {self.n_frames} frames)", self.path)
        return index

    def _undecodable(self, index: int) -> DGPError:
        return DGPError(f"video could not be decoded at frame {index}", self.path, hint=_TRUNCATED_HINT)

    def _to_rgb(self, frame: Any, index: int) -> UInt8[np.ndarray, "height width 3"]:
        array = frame.to_ndarray(format="rgb24")
        if array.shape != (self.height, self.width, 3):
            raise DGPError(
                f"frame {index} is {array.shape[1]}x{array.shape[0]}, the video is "
                f"{self.width}x{self.height}: the frame size changes mid-stream",
                self.path,
                hint="re-encode the video at one size",
            )
        return array

    def read(self, index: int) -> UInt8[np.ndarray, "height width 3"]:
        """Frame ``index`` as an ``(H, W, 3)`` uint8 RGB array.

        Seeks to the keyframe at or before the frame's timestamp and decodes forward until that
        timestamp; reading frames in increasing order close together decodes forward without
        seeking again.
        """
        index = self._check_index(index)
        return self._to_rgb(self._read_frame(index), index)

    def _read_frame(self, index: int) -> Any:
        """The decoded (PyAV) frame ``index``; the decoder then continues at ``index + 1``."""
        if self._pts is None:
            self._build_index()
        if index >= len(self._pts):
            raise self._undecodable(index)
        ahead = self._next is not None and self._next <= index <= self._next + FORWARD_DECODE_LIMIT
        if ahead:
            frame, overshot = self._decode_to(index)
            if frame is not None:
                return frame
        # Seek to a keyframe at or before the target. Seeking works on decode timestamps in
        # some containers, so with B-frames a seek can land after the target: step back.
        back = 0
        while True:
            seek_index = max(0, index - back)
            self._seek(int(self._pts[seek_index]) if seek_index > 0 else None)
            frame, overshot = self._decode_to(index)
            if frame is not None:
                return frame
            if not overshot or seek_index == 0:
                raise self._undecodable(index)
            back = max(2 * back, 16)

    def _seek(self, pts: int | None) -> None:
        """Seek the decoder to the keyframe at or before ``pts`` (None: the very start)."""
        if pts is None:
            start = self._stream.start_time
            offset = int(start) if start is not None else 0
            pts = min(offset, int(self._pts[0])) if len(self._pts) else offset
        self._decoder, self._next = None, None
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError:
            try:
                self._container.seek(0)
            except av.FFmpegError:
                return  # no decoder: the caller reports the frame as undecodable
        self._decoder = self._container.decode(self._stream)

    def _decode_to(self, index: int) -> tuple[Any | None, bool]:
        """Decode forward to frame ``index`` (found by its timestamp): (frame, overshot)."""
        if self._decoder is None:
            return None, False
        try:
            for frame in self._decoder:
                i = self._pts_index.get(frame.pts) if frame.pts is not None else None
                if i is None:
                    continue
                self._next = i + 1
                if i == index:
                    return frame, False
                if i > index:
                    return None, True
        except av.FFmpegError:
            pass
        self._decoder = None
        self._next = None
        return None, False

    # -- streaming --------------------------------------------------------------------------

    def iter_batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[UInt8[np.ndarray, "batch height width 3"], Int[np.ndarray, " batch"]]]:
        """Frames ``start .. stop - 1`` in order, as ``(frames (B, H, W, 3), indices (B,))``.

        Decodes sequentially with its own file handle (independent of :meth:`read`), so memory
        stays flat in the video length: one batch at a time. The last batch may be shorter.

        Raises:
            DGPError: when a frame cannot be decoded (a truncated file), naming its index.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stop = self.n_frames if stop is None else stop
        if not 0 <= start <= stop:
            raise DGPError(f"frame range {start}:{stop} is invalid", self.path)
        if stop > self.n_frames:
            raise DGPError(f"frame {stop - 1} is past the end (video has {self.n_frames} frames)", self.path)
        if start > 0 and self._pts is None:
            self._build_index()
        return self._batches(batch_size, start, stop)

    def _batches(
        self, batch_size: int, start: int, stop: int
    ) -> Iterator[tuple[UInt8[np.ndarray, "batch height width 3"], Int[np.ndarray, " batch"]]]:
        if start == stop:
            return
        sub = VideoReader.__new__(VideoReader)
        sub.__dict__.update(self.__dict__)  # same metadata and index, its own container
        sub._container, sub._stream = _open(self.path)
        sub._decoder = sub._container.decode(sub._stream)
        sub._next = 0
        try:
            frames = iter(sub._frames_from(start))
            index = start
            while index < stop:
                n = min(batch_size, stop - index)
                batch = np.empty((n, self.height, self.width, 3), dtype=np.uint8)
                for j in range(n):
                    frame = next(frames, None)
                    if frame is None:
                        raise sub._undecodable(index + j)
                    batch[j] = sub._to_rgb(frame, index + j)
                yield batch, np.arange(index, index + n, dtype=np.int64)
                del batch  # let the consumer's copy be the last one
                index += n
        finally:
            sub.close()

    def _frames_from(self, start: int) -> Iterator[Any]:
        """Decoded frames from frame ``start`` on (the first found by timestamp, then in order)."""
        if start > 0:
            if start >= len(self._pts):
                return
            yield self._read_frame(start)  # found by timestamp; the decoder goes on at start + 1
        decoder = self._decoder
        if decoder is None:
            return
        try:
            yield from decoder
        except av.FFmpegError:
            return


def video_info(path: str | Path) -> dict[str, Any]:
    """``{"n_frames", "fps", "width", "height"}`` of a video (see :class:`VideoReader`)."""
    with VideoReader(path) as video:
        return {"n_frames": video.n_frames, "fps": video.fps, "width": video.width, "height": video.height}


def write_video(
    path: str | Path,
    frames: Iterable[UInt8[np.ndarray, "height width 3"]],
    fps: float,
    codec: str | None = None,
    crf: int = 18,
    pad: bool = False,
    keyframe_interval: int | None = None,
) -> int:
    """Write RGB frames to a video file, atomically; return the number of frames written.

    Args:
        path: ``.mp4``/``.mov``/``.mkv`` (default codec ``libx264``) or ``.avi`` (default
            ``mpeg4``). MP4/MOV get their index at the front (``faststart``).
        frames: ``(H, W, 3)`` uint8 RGB arrays, all the same size; consumed one at a time.
        fps: frame rate (stored as a fraction, e.g. 29.97 -> 30000/1001).
        codec: FFmpeg encoder name; None picks the default for the suffix.
        crf: quality for ``libx264`` (0 lossless .. 51; 18 is visually lossless). For
            ``mpeg4``, a fixed quantiser ``q = clip(round(crf / 9), 1, 31)`` (crf 18 -> q 2).
        pad: the ``yuv420p`` pixel format needs even width and height; with ``pad=True`` an
            odd-sized frame gets one edge-replicated column (right) and/or row (bottom), which
            keeps pixel coordinates unchanged. Otherwise an odd size raises :class:`DGPError`.
        keyframe_interval: at most this many frames between keyframes (FFmpeg's GOP size);
            None keeps the encoder's default (250 for ``libx264``, 12 for ``mpeg4``). Shorter
            makes random access faster and the file larger.

    The file is written under a temporary name beside ``path`` and renamed at the end, so an
    interrupted write leaves no partial video.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DEFAULT_CODECS:
        raise DGPError(
            f"cannot write {suffix or 'a file without suffix'} videos",
            path,
            hint=f"use one of {', '.join(DEFAULT_CODECS)}",
        )
    codec = DEFAULT_CODECS[suffix] if codec is None else codec
    if codec not in av.codecs_available:
        raise DGPError(f"the video encoder {codec!r} is not available in this PyAV build", path)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_path(path) as tmp:
        options = {"movflags": "+faststart"} if suffix in (".mp4", ".mov") else {}
        with av.open(str(tmp), mode="w", options=options) as container:
            stream = None
            shape: tuple[int, ...] = ()
            for frame in frames:
                array = np.asarray(frame)
                if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                    raise ValueError(f"frame {count}: need (H, W, 3) uint8, got {array.shape} {array.dtype}")
                if stream is None:
                    shape = array.shape
                    stream = _add_stream(container, path, codec, rate, crf, shape, pad)
                    if keyframe_interval is not None:
                        stream.codec_context.gop_size = int(keyframe_interval)
                elif array.shape != shape:
                    raise ValueError(f"frame {count} is {array.shape}, the first frame was {shape}")
                if array.shape[:2] != (stream.height, stream.width):  # odd size, pad=True
                    extra = ((0, stream.height - shape[0]), (0, stream.width - shape[1]), (0, 0))
                    array = np.pad(array, extra, mode="edge")
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                for packet in stream.encode(video_frame):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise DGPError("no frames to write", path)
            for packet in stream.encode():
                container.mux(packet)
    return count


def _add_stream(
    container: Any, path: Path, codec: str, rate: Fraction, crf: int, shape: tuple[int, ...], pad: bool
) -> Any:
    """The video stream of ``write_video``, sized from the first frame."""
    height, width = shape[0], shape[1]
    if (height % 2 or width % 2) and not pad:
        raise DGPError(
            f"frames are {width}x{height}; the yuv420p video format needs an even width and height",
            path,
            hint="crop or pad the frames, or pass pad=True",
        )
    stream = container.add_stream(codec, rate=rate)
    stream.width = width + width % 2
    stream.height = height + height % 2
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"crf": str(int(crf))}
    elif codec == "mpeg4":
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = 118 * int(np.clip(round(crf / 9), 1, 31))  # FF_QP2LAMBDA
    return stream
