"""Video I/O: exact counts, random access equal to sequential decoding, batches, bad files."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from dgp_pyro.data import video as video_module
from dgp_pyro.data.video import VideoReader, video_info, write_video
from dgp_pyro.errors import DGPError

N_FRAMES, HEIGHT, WIDTH = 40, 48, 64
BITS = 6  # frame number as 6 blocks of 10 x 24 pixels, black or white


def block_frames(n: int = N_FRAMES, seed: int = 0) -> list[np.ndarray]:
    """Frames with their number in big black/white blocks (top) above random texture (bottom)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for b in range(BITS):
            if (i >> b) & 1:
                frame[:24, b * 10 : (b + 1) * 10] = 255
        frame[24:] = rng.integers(0, 256, size=(HEIGHT - 24, WIDTH, 3), dtype=np.uint8)
        frames.append(frame)
    return frames


def frame_number(frame: np.ndarray) -> int:
    """Read back the number ``block_frames`` drew."""
    return sum(int(frame[2:22, b * 10 + 2 : b * 10 + 8].mean() > 127) << b for b in range(BITS))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """An MP4 (h264 with B-frames, a keyframe every 8 frames) and an AVI (mpeg4)."""
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for suffix in ("mp4", "avi"):
        path = root / f"blocks.{suffix}"
        assert write_video(path, iter(block_frames()), fps=30, keyframe_interval=8) == N_FRAMES
        out[suffix] = path
    return out


def decode_all(path: Path) -> np.ndarray:
    with VideoReader(path) as video:
        return np.concatenate([frames for frames, _ in video.iter_batches(16)])


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_count_fps_size_and_content(videos, suffix):
    path = videos[suffix]
    info = video_info(path)
    assert info == {"n_frames": N_FRAMES, "fps": 30.0, "width": WIDTH, "height": HEIGHT}
    with VideoReader(path) as video:
        assert len(video) == N_FRAMES
        assert video.frame_count_source == ("header" if suffix == "mp4" else "demux")
    frames = decode_all(path)
    assert frames.shape == (N_FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert [frame_number(f) for f in frames] == list(range(N_FRAMES))
    # lossy but close to what was written
    source = np.stack(block_frames())
    assert np.abs(frames[:, :24].astype(int) - source[:, :24]).mean() < 3


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_random_access_equals_sequential(videos, suffix):
    path = videos[suffix]
    sequential = decode_all(path)
    order = np.random.default_rng(1).permutation(N_FRAMES)
    with VideoReader(path) as video:
        for k in [*order, N_FRAMES - 1, 0, 17, 18, 19, 3]:
            frame = video.read(k)
            assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
            assert np.array_equal(frame, sequential[k]), k
    for k in (0, 9, 39):  # a fresh reader, first access
        with VideoReader(path) as video:
            assert np.array_equal(video.read(np.int64(k)), sequential[k])


def test_seek_that_lands_after_the_target_steps_back(videos, monkeypatch):
    """Some demuxers seek by decode time; a seek past the target must be recovered from."""
    path = videos["mp4"]
    sequential = decode_all(path)
    real_seek = VideoReader._seek
    calls = []

    def late_seek(self, pts):
        calls.append(pts)
        if len(calls) == 1:  # first seek: land at the last keyframe instead
            pts = int(self._pts[-1])
        real_seek(self, pts)

    monkeypatch.setattr(VideoReader, "_seek", late_seek)
    with VideoReader(path) as video:
        assert np.array_equal(video.read(20), sequential[20])
    assert len(calls) >= 2


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_batches_cover_all_frames_in_order(videos, suffix):
    path = videos[suffix]
    sequential = decode_all(path)
    with VideoReader(path) as video:
        batches = list(video.iter_batches(7))
        assert [len(i) for _, i in batches] == [7, 7, 7, 7, 7, 5]
        assert np.array_equal(np.concatenate([i for _, i in batches]), np.arange(N_FRAMES))
        assert all(f.shape[0] == len(i) for f, i in batches)
        for start, stop in [(13, 31), (1, 2), (35, None), (39, 40), (0, 5)]:
            frames = np.concatenate([f for f, _ in video.iter_batches(4, start=start, stop=stop)])
            assert np.array_equal(frames, sequential[start:stop])
        assert list(video.iter_batches(4, start=10, stop=10)) == []
        # streaming and random access do not disturb each other
        stream = video.iter_batches(10)
        first, _ = next(stream)
        assert np.array_equal(video.read(33), sequential[33])
        second, idx = next(stream)
        assert np.array_equal(second, sequential[10:20]) and idx[0] == 10
        stream.close()


def test_index_errors(videos):
    with VideoReader(videos["mp4"]) as video:
        with pytest.raises(DGPError, match=r"frame 40 is past the end \(video has 40 frames\)") as info:
            video.read(40)
        assert info.value.path == videos["mp4"]
        with pytest.raises(DGPError, match="frame -1 is negative"):
            video.read(-1)
        with pytest.raises(TypeError):
            video.read(1.5)
        with pytest.raises(DGPError, match="frame 40 is past the end"):
            video.iter_batches(4, start=0, stop=41)
        with pytest.raises(DGPError, match="invalid"):
            video.iter_batches(4, start=5, stop=2)
        with pytest.raises(ValueError):
            video.iter_batches(0)


def test_truncated_file_fails_when_the_missing_frame_is_reached(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(40)]  # incompressible
    path = tmp_path / "noise.mp4"
    write_video(path, frames, fps=25)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(cut) as video:
        assert video.n_frames == 40  # the header still promises 40 (index at the front)
        assert video.read(2).shape == (HEIGHT, WIDTH, 3)
        seen = []
        with pytest.raises(DGPError, match=r"video could not be decoded at frame (\d+)") as info:
            for _, idx in video.iter_batches(4):
                seen.extend(idx.tolist())
        assert info.value.path == cut
        failed = int(re.search(r"frame (\d+)", str(info.value)).group(1))
        assert 0 < failed < 40 and seen == list(range(len(seen))) and len(seen) <= failed
        with pytest.raises(DGPError, match="video could not be decoded at frame 39"):
            video.read(39)


def test_bad_files(tmp_path):
    with pytest.raises(DGPError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(DGPError, match="folder"):
        VideoReader(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(DGPError, match="empty"):
        VideoReader(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(DGPError, match="cannot open the video") as info:
        VideoReader(text)
    assert info.value.path == text
    # an audio-only file
    audio = tmp_path / "sound.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(DGPError, match="no video stream"):
        VideoReader(audio)
    # a video stream without frames
    hollow = tmp_path / "hollow.avi"
    with av.open(str(hollow), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(DGPError, match="no frames"):
        VideoReader(hollow)


# ----------------------------------------------------------------------------- writing


def test_write_is_atomic(tmp_path):
    path = tmp_path / "out.mp4"

    def broken():
        yield from block_frames(5)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(path, broken(), fps=30)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DGPError, match="no frames to write"):
        write_video(path, [], fps=30)
    assert list(tmp_path.iterdir()) == []


def test_write_odd_size_and_bad_frames(tmp_path):
    odd = [np.full((47, 63, 3), 100 + i, np.uint8) for i in range(3)]
    with pytest.raises(DGPError, match="63x47.*even width and height"):
        write_video(tmp_path / "odd.mp4", odd, fps=10)
    assert write_video(tmp_path / "odd.mp4", odd, fps=10, pad=True) == 3
    info = video_info(tmp_path / "odd.mp4")
    assert (info["width"], info["height"]) == (64, 48)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", [np.zeros((48, 64, 3), np.float32)], fps=10)
    with pytest.raises(ValueError, match="first frame"):
        sizes = [np.zeros((48, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
        write_video(tmp_path / "f.mp4", sizes, fps=10)
    with pytest.raises(DGPError, match="cannot write .gif"):
        write_video(tmp_path / "f.gif", odd, fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_fractional_fps(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, block_frames(6), fps=30000 / 1001)
    assert video_info(path)["fps"] == pytest.approx(30000 / 1001, rel=1e-9)


# ----------------------------------------------------------------------------- real video


def test_real_video(mirror_project, tmp_path):
    source = mirror_project / "videos" / "test_vid.mp4"
    if not source.exists():
        pytest.skip(f"{source} not found")
    with VideoReader(source) as video:
        assert (video.n_frames, video.height, video.width) == (994, 406, 396)
        assert video.fps == pytest.approx(250.0)
        # frames around the keyframes at 192 and 432, decoded sequentially then at random
        wanted = [0, 5, 191, 192, 193, 250, 431, 432, 433]
        sequential = {}
        for frames, idx in video.iter_batches(64, stop=434):
            for frame, i in zip(frames, idx, strict=True):
                if i in wanted:
                    sequential[int(i)] = frame
        for k in [433, 5, 192, 191, 0, 432, 250, 193, 431]:
            assert np.array_equal(video.read(k), sequential[k]), k
        last = next(video.iter_batches(1, start=993))[0][0]
        assert np.array_equal(video.read(993), last)
    # a copy in another container round-trips the frame count
    copy = tmp_path / "copy.avi"
    with VideoReader(source) as video:
        frames = (f for batch, _ in video.iter_batches(32, stop=50) for f in batch)
        assert write_video(copy, frames, fps=video.fps) == 50
    assert video_info(copy)["n_frames"] == 50


def test_module_documents_why_pyav():
    assert "PyAV" in video_module.__doc__ and "CAP_PROP_POS_FRAMES" in video_module.__doc__
