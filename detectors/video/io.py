"""Video decoding: decord first (what the benchmark uses), PyAV when decord cannot read a file.

Every problem with a file is raised as ``MediaError(path, problem)`` naming what is wrong (empty
file, truncated or corrupt data, no video stream, zero frames, absurd resolution), so a dataset can
skip the file and a user can fix it.

Videos stored as frames are accepted wherever a video file is, read as the benchmark reads them
(GASBench v0.8.0 ``dataset/iterator.py`` and ``processing/media.py`` ``process_video_frames_sample``):

- a folder of frame images (:data:`FRAME_EXTENSIONS`, lower or upper case), in name order;
- a video inside a frames parquet shard (the benchmark's newer storage, its ``dev`` branch
  ``_process_frames_parquet``: one row per frame, grouped by ``video_id``, ordered by ``frame_idx``
  when that column exists), named ``<shard>.parquet::<video_id>`` (:func:`frames_parquet_ref`).

Each frame is decoded with ``cv2`` (BGR -> RGB). The benchmark's frame rule for them
(:func:`read_video_frames` with a ``benchmark`` sampler) is the first ``num_frames`` frames, those
that cannot be decoded skipped, the last one repeated to fill the clip; ``frame_rate`` is ignored.
An optional ``fps.txt`` in a frame folder is this project's own: only its other samplers (window,
uniform) read it.

Of several video streams, every path reads the one FFmpeg's ``av_find_best_stream`` picks (what
decord reads), never an attached picture (cover art): see :func:`_video_stream`.

Frames come back as ``torch.uint8 [T, 3, H, W]`` RGB. The decord path is the benchmark's decoder
(GASBench decodes video files with decord; OpenCV only where decord has no wheel) and is left as
decord decodes. The PyAV path is this project's own fallback for files decord cannot read (no
GASBench version decodes with PyAV): each frame converted with its own colour matrix and range, and
turned by the stream's quarter-turn display rotation (phone videos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import av
import cv2
import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from av.video.reformatter import Colorspace
from PIL import Image
from torchvision.transforms import InterpolationMode

from detectors.errors import MediaError, media_access_problem
from detectors.video.sampling import MAX_BENCHMARK_FRAMES, FrameSampler

try:  # decord has wheels for x86-64 only; PyAV decodes everywhere else
    import decord
except ImportError:  # pragma: no cover - depends on the platform
    decord = None

# Anything above 8K UHD (7680 x 4320) is treated as broken metadata or a decompression bomb: one
# 16-frame clip at that size is already 1.6 GB of uint8.
DEFAULT_MAX_PIXELS = 7680 * 4320
MAX_PLAUSIBLE_FPS = 1000.0  # containers write 90000 or 1000 "fps" for variable-rate streams
#: GASBench's ``IMAGE_FILE_EXTENSIONS``: the frame images of a frame folder (each also in upper case)
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp")
FPS_FILE = "fps.txt"
FRAMES_PARQUET_SEPARATOR = "::"
#: How frames stored as images are turned into RGB (cache keys): bump it when that changes.
FRAMES_CONVERSION = "name-order+cv2-imread-bgr2rgb"
# What decoders raise on bad data (decord's DECORDError is not a RuntimeError).
_DECODER_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, av.error.FFmpegError) + (
    (decord.DECORDError,) if decord is not None else ()
)

# How _PyAVSource turns decoded frames into RGB, for cache keys: bump it when that changes.
PYAV_CONVERSION = "frame-matrix-range+quarter-turn-rotation"

Backend = Literal["auto", "decord", "pyav"]
Interpolation = Literal["bicubic", "bilinear"]
_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


@dataclass(frozen=True)
class VideoInfo:
    """What a video offers. ``fps`` is None when the file has no usable frame rate (callers then
    use 30 fps, as the benchmark does)."""

    num_frames: int
    fps: float | None
    width: int
    height: int
    backend: str = ""  # "decord", "pyav" or "frames" (a folder of images)


def _clean_fps(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value <= 0 or value > MAX_PLAUSIBLE_FPS:
        return None
    return value


def _check_resolution(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(path, f"invalid resolution {width}x{height}")
    if width * height > max_pixels:
        raise MediaError(
            path,
            f"absurd resolution {width}x{height} ({width * height} pixels, the cap is {max_pixels})",
        )


def _to_tchw(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8 numpy -> contiguous [T, 3, H, W] uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _check_indices(path: Path, indices: Sequence[int], num_frames: int) -> list[int]:
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices requested")
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise ValueError(f"{path}: frame indices {bad[:5]} out of range for {num_frames} frames")
    return indices


class VideoSource:
    """An open video: ``info`` plus ``frames(indices) -> uint8 [T, 3, H, W]``. Use as a context manager."""

    info: VideoInfo

    def __init__(self, path: Path) -> None:
        self.path = path

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    fps: float | None
    num_frames: int  # from the container header; 0 when unknown
    # FFmpeg's own best-stream choice is an attached picture that _video_stream skipped: decord,
    # which cannot be told which stream to read, may decode the picture instead of the video.
    best_is_picture: bool = False
    # Counter-clockwise quarter turns of the display rotation (phone videos); width/height above are
    # already those of the turned frames. decord does not apply it (and fails on such files).
    quarter_turns: int = 0


def _is_attached_picture(stream: av.stream.Stream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The video stream to read: FFmpeg's best-stream choice (``av_find_best_stream``, what decord
    reads), unless that is an attached picture (cover art: one still frame), then the first real one.

    ``av_find_best_stream`` ranks streams by disposition and by frames seen while probing, and does
    not skip attached pictures: it returns the cover of an audio file, or the cover of a video whose
    real stream is flagged e.g. visual-impaired. A container with only a picture raises MediaError.
    """
    best = container.streams.best("video")
    if best is None:
        kinds = sorted({stream.type for stream in container.streams}) or ["none"]
        raise MediaError(path, f"no video stream (streams found: {', '.join(kinds)})")
    if not _is_attached_picture(best):
        return best
    real = [stream for stream in container.streams.video if not _is_attached_picture(stream)]
    if not real:
        context = best.codec_context
        raise MediaError(
            path,
            f"no video stream, only an attached picture (cover art: {context.name} "
            f"{context.width}x{context.height}, stream #{best.index}); audio files with cover art are not videos",
        )
    return real[0]


def _first_quarter_turns(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The display rotation of the first frame: the display matrix reaches PyAV on decoded frames
    only, so this decodes one. A first frame that cannot be decoded counts as unrotated: the real
    decode reports that error, naming the file."""
    try:
        for frame in container.decode(stream):
            return _quarter_turns(frame)
    except av.error.FFmpegError:
        pass
    return 0


def _read_header(path: Path) -> _Header:
    """Open the container with PyAV (headers only, no decoding) to validate it cheaply."""
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            rate = stream.average_rate or stream.guessed_rate
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            turns = _first_quarter_turns(container, stream)
            return _Header(
                width=height if turns % 2 else width,
                height=width if turns % 2 else height,
                fps=_clean_fps(float(rate)) if rate else None,
                num_frames=int(stream.frames or 0),
                best_is_picture=stream.index != container.streams.best("video").index,
                quarter_turns=turns,
            )
    except av.error.FFmpegError as error:
        raise MediaError(path, f"not a readable video: truncated or corrupt ({error})") from error


class _DecordSource(VideoSource):
    def __init__(self, path: Path, header: _Header, num_threads: int) -> None:
        super().__init__(path)
        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=num_threads)
        self.info = VideoInfo(
            num_frames=len(self._reader),
            fps=_clean_fps(self._reader.get_avg_fps()),
            width=header.width,
            height=header.height,
            backend="decord",
        )

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        indices = _check_indices(self.path, indices, self.info.num_frames)
        # Decode each distinct frame once (padding repeats indices), then expand.
        unique = sorted(set(indices))
        batch = self._reader.get_batch(unique).asnumpy()
        position = {index: row for row, index in enumerate(unique)}
        return _to_tchw(batch[[position[i] for i in indices]])

    def close(self) -> None:
        self._reader = None  # decord releases the file when the reader is collected


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns asked by the frame's display matrix (0 for other angles).

    ``frame.rotation`` is the display matrix's counter-clockwise angle in [-180, 180] (-90 for a
    portrait phone video stored landscape, typically); only exact quarter turns are applied.
    """
    rotation = frame.rotation % 360
    return rotation // 90 if rotation in (90, 180, 270) else 0


def _frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """One decoded frame as ``uint8 [H, W, 3]`` RGB (this project's PyAV fallback).

    The source matrix and range are passed explicitly from the frame's own tags, because some PyAV
    versions skip swscale's colour setup when the source and destination
    colourspaces match (BT.709 then decodes as BT.601); PyAV 18 reads the frame's tags by itself
    and gives the same pixels either way. RGB output has no matrix, so the destination is
    swscale's default. Then the display rotation is applied (PyAV reports it but does not rotate).
    """
    pixels = frame.to_ndarray(
        format="rgb24",
        src_colorspace=frame.colorspace,
        dst_colorspace=Colorspace.DEFAULT,
        src_color_range=frame.color_range,
    )
    turns = _quarter_turns(frame)
    return np.rot90(pixels, turns) if turns else pixels


class _PyAVSource(VideoSource):
    def __init__(self, path: Path, header: _Header) -> None:
        super().__init__(path)
        num_frames = header.num_frames or self._count_frames()
        self.info = VideoInfo(num_frames, header.fps, header.width, header.height, backend="pyav")

    def _count_frames(self) -> int:
        # Containers without a frame count in the header (e.g. some .mkv/.webm): count packets.
        try:
            with av.open(str(self.path)) as container:
                stream = _video_stream(container, self.path)
                return sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as error:
            raise MediaError(self.path, f"truncated or corrupt while counting frames ({error})") from error

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """The frames in order, from one sequential decode; a decoder error names the file."""
        count = 0
        try:
            with av.open(str(self.path)) as container:
                stream = _video_stream(container, self.path)
                # One thread, like decord's default: DataLoader workers parallelise across videos.
                stream.codec_context.thread_count = 1
                for frame in container.decode(stream):
                    yield frame
                    count += 1
        except av.error.FFmpegError as error:
            raise MediaError(
                self.path, f"truncated or corrupt: decoding failed after {count} frames ({error})"
            ) from error

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        indices = _check_indices(self.path, indices, self.info.num_frames)
        wanted, last = set(indices), max(indices)
        decoded: dict[int, np.ndarray] = {}
        count = 0
        for frame in self._decoded():
            if count in wanted:
                decoded[count] = _frame_to_rgb(frame)
            count += 1
            if count > last:
                break
        if count <= last:
            raise MediaError(
                self.path,
                f"truncated: only {count} of {self.info.num_frames} frames could be decoded "
                f"(frame {last} was requested)",
            )
        return _to_tchw(np.stack([decoded[i] for i in indices]))

    def chunks(self, size: int) -> Iterator[torch.Tensor]:
        """Every frame in order, ``size`` at a time, from one sequential decode."""
        batch: list[np.ndarray] = []
        for frame in self._decoded():
            batch.append(_frame_to_rgb(frame))
            if len(batch) == size:
                yield _to_tchw(np.stack(batch))
                batch = []
        if batch:
            yield _to_tchw(np.stack(batch))


def frame_files(folder: str | Path) -> list[Path]:
    """The frame images of a frame folder as the benchmark lists them (``DatasetIterator``): files
    matching ``*<ext>`` or ``*<EXT>`` for each of :data:`FRAME_EXTENSIONS` (pathlib's glob: names
    starting with a dot match too), sorted by name."""
    folder = Path(folder)
    found: set[Path] = set()
    for ext in FRAME_EXTENSIONS:
        found.update(folder.glob(f"*{ext}"))
        found.update(folder.glob(f"*{ext.upper()}"))
    return sorted(found, key=lambda p: p.name)


def frames_parquet_ref(shard: str | Path, video_id: object) -> str:
    """The path this project gives video ``video_id`` of a frames parquet shard."""
    return f"{shard}{FRAMES_PARQUET_SEPARATOR}{video_id}"


def split_frames_parquet_ref(path: str | Path) -> tuple[Path, str] | None:
    """``(shard, video_id)`` of a :func:`frames_parquet_ref` path, else None."""
    text = str(path)
    marker = ".parquet" + FRAMES_PARQUET_SEPARATOR
    at = text.lower().find(marker)
    if at < 0:
        return None
    cut = at + len(".parquet")
    return Path(text[:cut]), text[cut + len(FRAMES_PARQUET_SEPARATOR) :]


def _frames_media_column(names: Sequence[str]) -> str | None:
    """The frame column of a frames parquet shard, as the benchmark picks it: ``image`` (any case),
    else the first column naming ``image`` or ``frame`` that is not an ``_id`` or ``idx`` column."""
    exact = next((c for c in names if c.lower() == "image"), None)
    return exact or next(
        (
            c
            for c in names
            if ("image" in c.lower() or "frame" in c.lower()) and "_id" not in c.lower() and "idx" not in c.lower()
        ),
        None,
    )


def frames_parquet_video_ids(shard: str | Path) -> list[str]:
    """The videos of a frames parquet shard (a ``video_id`` column), in the benchmark's order (first
    appearance, as ``groupby(sort=False)``); an empty list when the shard has no ``video_id`` column.
    A parquet file that cannot be read raises MediaError naming it."""
    import pyarrow.parquet as pq

    shard = Path(shard)
    try:
        if "video_id" not in pq.read_schema(shard).names:
            return []
        ids = pq.read_table(shard, columns=["video_id"]).column("video_id").to_pylist()
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise MediaError(shard, f"unreadable parquet shard ({error})") from error
    return list(dict.fromkeys(str(v) for v in ids if v is not None))


def _parquet_frames(shard: Path, video_id: str) -> list[bytes]:
    """Encoded frames of one video of a frames parquet shard, in the benchmark's order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref = frames_parquet_ref(shard, video_id)
    if not shard.is_file():
        raise MediaError(ref, "frames parquet shard not found")
    try:
        schema = pq.read_schema(shard)
        media = _frames_media_column(schema.names)
        if "video_id" not in schema.names or media is None:
            raise MediaError(
                ref,
                f"not a frames parquet shard: needs 'video_id' and a frame column "
                f"('image' or a column naming image/frame), has {', '.join(schema.names)}",
            )
        columns = ["video_id", media] + (["frame_idx"] if "frame_idx" in schema.names else [])
        kind = schema.field("video_id").type
        # push the id down to the row groups; the id is text in the path, typed in the shard
        key: object = int(video_id) if pa.types.is_integer(kind) and video_id.lstrip("-").isdigit() else video_id
        table = pq.read_table(shard, columns=columns, filters=[("video_id", "=", key)])
    except MediaError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise MediaError(ref, f"unreadable frames parquet shard ({error})") from error
    group = table.to_pandas()
    if group.empty:
        raise MediaError(ref, f"no rows with video_id {video_id!r} in the shard")
    if "frame_idx" in group.columns:
        group = group.sort_values("frame_idx")  # pandas' default sort, as the benchmark sorts
    frames = []
    for value in group[media]:
        if isinstance(value, dict):  # a Hugging Face image struct {bytes, path}
            value = next((v for v in value.values() if isinstance(v, (bytes, bytearray))), None)
        if isinstance(value, (bytes, bytearray)):
            frames.append(bytes(value))
    if not frames:
        raise MediaError(ref, f"no frame bytes in column {media!r}")
    return frames


class _FramesSource(VideoSource):
    """A video stored as encoded frame images (a frame folder or a frames parquet video), each
    decoded with ``cv2`` and converted BGR -> RGB, as the benchmark decodes them."""

    def __init__(
        self, path: Path, frames: Sequence[Path | bytes], max_pixels: int, fps: float | None, backend: str
    ) -> None:
        super().__init__(path)
        self._frames = list(frames)
        self._max_pixels = max_pixels
        self._decoded: dict[int, np.ndarray] = {}
        if not self._frames:
            raise MediaError(path, f"zero frames: the folder holds no {'/'.join(FRAME_EXTENSIONS)} files")
        first = next((i for i in range(len(self._frames)) if self._try_decode(i) is not None), None)
        if first is None:
            raise MediaError(path, f"none of its {len(self._frames)} frame images can be decoded")
        height, width = self._decoded[first].shape[:2]
        self.info = VideoInfo(len(self._frames), fps, width, height, backend=backend)

    def _where(self, index: int) -> str:
        frame = self._frames[index]
        return str(frame) if isinstance(frame, Path) else f"{self.path} (frame {index})"

    def _try_decode(self, index: int) -> np.ndarray | None:
        """Frame ``index`` as ``uint8 [H, W, 3]`` RGB, or None when cv2 cannot decode it."""
        if index in self._decoded:
            return self._decoded[index]
        frame = self._frames[index]
        if isinstance(frame, Path):
            _check_frame_header(frame, self._max_pixels)
            bgr = cv2.imread(str(frame))
        else:
            bgr = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        _check_resolution(self.path, rgb.shape[1], rgb.shape[0], self._max_pixels)
        self._decoded[index] = rgb
        return rgb

    def _stack(self, arrays: list[np.ndarray], where: list[str]) -> torch.Tensor:
        shape = arrays[0].shape
        for array, name in zip(arrays, where):
            if array.shape != shape:
                raise MediaError(
                    name,
                    f"frame size {array.shape[1]}x{array.shape[0]} differs from the first "
                    f"frame's {shape[1]}x{shape[0]}",
                )
        return _to_tchw(np.stack(arrays))

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        indices = _check_indices(self.path, indices, self.info.num_frames)
        arrays = []
        for index in indices:
            array = self._try_decode(index)
            if array is None:
                raise MediaError(self._where(index), "unreadable frame image (cv2 cannot decode it)")
            arrays.append(array)
        return self._stack(arrays, [self._where(i) for i in indices])

    def benchmark_clip(self, num_frames: int) -> torch.Tensor:
        """The benchmark's clip: of the first ``num_frames`` frames those cv2 decodes (the others are
        skipped), the last decoded one repeated up to ``num_frames`` (``process_video_frames_sample``)."""
        kept = [i for i in range(min(num_frames, len(self._frames))) if self._try_decode(i) is not None]
        if not kept:
            raise MediaError(self.path, f"none of the first {num_frames} frame images can be decoded")
        kept += [kept[-1]] * (num_frames - len(kept))
        return self._stack([self._decoded[i] for i in kept], [self._where(i) for i in kept])


def _check_frame_header(file: Path, max_pixels: int) -> None:
    """Refuse a decompression bomb before cv2 decodes it (from the header, without decoding)."""
    try:
        with Image.open(file) as image:
            width, height = image.size
    except (OSError, Image.DecompressionBombError):
        return  # not a format Pillow reads: cv2 decides, and reports it when it cannot decode
    _check_resolution(file, width, height, max_pixels)


def _frame_folder_source(path: Path, max_pixels: int) -> _FramesSource:
    fps = None
    fps_file = path / FPS_FILE
    if fps_file.is_file():
        try:
            fps = _clean_fps(float(fps_file.read_text().strip()))
        except ValueError as error:
            raise MediaError(fps_file, f"not a frame rate: {error}") from error
    return _FramesSource(path, frame_files(path), max_pixels, fps, backend="frames")


def open_video(
    path: str | Path,
    *,
    backend: Backend = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_threads: int = 1,
) -> VideoSource:
    """Open a video file (or a folder of frames) after validating it.

    ``backend="auto"`` uses decord and falls back to PyAV when decord cannot open the file, or when
    FFmpeg's best video stream is an attached picture (decord may read the picture).
    ``num_threads`` is decord's decoding threads: 1 by default because DataLoader workers already
    decode videos in parallel.
    """
    parquet = split_frames_parquet_ref(path)
    if parquet is not None:
        shard, video_id = parquet
        return _FramesSource(
            Path(str(path)), _parquet_frames(shard, video_id), max_pixels, None, backend="frames-parquet"
        )
    path = Path(path)
    if path.is_dir():
        return _frame_folder_source(path, max_pixels)
    problem = media_access_problem(path)
    if problem:
        raise MediaError(path, problem)

    header = _read_header(path)
    _check_resolution(path, header.width, header.height, max_pixels)

    source: VideoSource | None = None
    if backend == "decord" and decord is None:
        raise RuntimeError("decord is not installed; use backend='pyav' or 'auto'")
    # files decord would read wrongly: "auto" sends them to PyAV, "decord" refuses them
    decord_problem = (
        f"has a {90 * header.quarter_turns} degree display rotation, which decord does not apply"
        if header.quarter_turns
        else "FFmpeg's best video stream is an attached picture (cover art) and decord cannot be told to read the real one"
        if header.best_is_picture
        else None
    )
    if backend == "decord" and decord_problem:
        raise MediaError(path, f"{decord_problem}; use backend='pyav' or 'auto'")
    if backend in ("auto", "decord") and decord is not None and decord_problem is None:
        try:
            source = _DecordSource(path, header, num_threads)
        except _DECODER_ERRORS as error:
            if backend == "decord":
                raise MediaError(path, f"decord cannot read it: truncated or corrupt ({error})") from error
    if source is None:
        source = _PyAVSource(path, header)
    if source.info.num_frames < 1:
        raise MediaError(path, "zero frames: the video stream holds no frames")
    return source


def decoder_key(path: str | Path, backend: Backend = "auto") -> dict[str, Any]:
    """What, besides the file and the frame choice, decides the pixels :func:`read_video_frames`
    returns for ``path``: the decoder ``backend`` resolves to on this machine (decord, PyAV, or
    Pillow for a frame folder), the versions of the libraries that decode and resize, and the
    requested ``backend`` itself. For cache keys: frames decoded by one decoder are never served
    for another (decord and PyAV can differ at the edges of damaged files and in frame counts).

    With the same file and the same libraries, ``backend="auto"`` falls back to PyAV on exactly the
    same files, so this names the decoder actually used without opening the file.
    """
    if Path(path).is_dir() or split_frames_parquet_ref(path) is not None:
        return {
            "decoder": "frames",
            "conversion": FRAMES_CONVERSION,
            "opencv": cv2.__version__,
            "torchvision": torchvision.__version__,
        }
    uses_decord = backend in ("auto", "decord") and decord is not None
    key: dict[str, Any] = {
        "backend": backend,
        "decoder": "decord" if uses_decord else "pyav",
        # PyAV also reads every header, and decodes whenever "auto" falls back from decord
        "pyav": av.__version__,
        "ffmpeg": av.library_versions,  # PyAV's own FFmpeg build: libavcodec, libswscale, ...
        "pyav_conversion": PYAV_CONVERSION,  # colour conversion and rotation of PyAV-decoded frames
        "torchvision": torchvision.__version__,  # the crop and resize of the cached frames
    }
    if uses_decord:
        key["decord"] = decord.__version__  # its wheel bundles its own FFmpeg build
    return key


def probe_video(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, backend: Backend = "auto") -> VideoInfo:
    """Frame count, frame rate and size of a video, without decoding frames."""
    with open_video(path, backend=backend, max_pixels=max_pixels) as source:
        return source.info


def _decode(source: VideoSource, indices: Sequence[int], backend: Backend) -> torch.Tensor:
    try:
        return source.frames(indices)
    except MediaError:
        raise
    except _DECODER_ERRORS as error:
        if isinstance(source, _DecordSource) and backend == "auto":
            # decord opened the file but cannot decode it: give PyAV a chance before giving up.
            with _PyAVSource(source.path, _read_header(source.path)) as fallback:
                if max(indices) >= fallback.info.num_frames:
                    raise MediaError(
                        source.path,
                        f"truncated or corrupt: decord failed ({error}) and PyAV finds "
                        f"{fallback.info.num_frames} of the {source.info.num_frames} frames",
                    ) from error
                return fallback.frames(indices)
        raise MediaError(source.path, f"truncated or corrupt: decoding failed ({error})") from error


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    *,
    backend: Backend = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Decode the frames at ``indices`` (repeats allowed) as ``uint8 [T, 3, H, W]``."""
    with open_video(path, backend=backend, max_pixels=max_pixels) as source:
        return _decode(source, indices, backend)


def iter_frame_chunks(
    path: str | Path,
    size: int,
    *,
    backend: Backend = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[torch.Tensor]:
    """All frames of a video in order, ``size`` at a time (``uint8 [<= size, 3, H, W]``), opening it
    once: memory for one chunk and, with PyAV, one sequential decode (reading chunk by chunk with
    :func:`read_frames` would decode from the first frame again for every chunk)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    with open_video(path, backend=backend, max_pixels=max_pixels) as source:
        if isinstance(source, _PyAVSource):
            yield from source.chunks(size)
            return
        total = source.info.num_frames
        for start in range(0, total, size):
            yield _decode(source, range(start, min(start + size, total)), backend)


def resize_frames(
    frames: torch.Tensor,
    size: int | tuple[int, int],
    mode: Interpolation = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``[..., H, W]`` frames to ``size`` (H, W).

    uint8 in -> uint8 out (rounded and clamped by torchvision). Float in -> float out, *not*
    clamped: the official ReStraV code resizes float frames in [0, 1] and keeps bicubic overshoot.
    """
    if isinstance(size, int):
        size = (size, size)
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return TF.resize(frames, list(size), interpolation=_INTERPOLATION[mode], antialias=antialias)


def centre_crop_resize(
    frames: torch.Tensor,
    size: tuple[int, int],
    mode: Interpolation = "bilinear",
    antialias: bool = True,
) -> torch.Tensor:
    """Centre crop to the target aspect ratio, then a torchvision resize to ``size`` (H, W). Close to the
    benchmark's preprocessing, not equal to it: that is OpenCV's (``image.transforms.benchmark_resize``)."""
    height, width = frames.shape[-2:]
    target_h, target_w = size
    if width * target_h > height * target_w:  # too wide: crop width
        crop_h, crop_w = height, max(1, round(height * target_w / target_h))
    else:  # too tall (or exact): crop height
        crop_h, crop_w = max(1, round(width * target_h / target_w)), width
    frames = TF.center_crop(frames, [crop_h, crop_w])
    return resize_frames(frames, size, mode=mode, antialias=antialias)


def read_video_frames(
    path: str | Path,
    sampler: FrameSampler,
    resize: tuple[int, int] | None = None,
    *,
    resize_mode: Literal["crop", "stretch"] = "crop",
    interpolation: Interpolation = "bicubic",
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Sample, decode and optionally resize a video's frames: ``uint8 [T, 3, H', W']``.

    ``resize_mode="crop"`` is :func:`centre_crop_resize` (the benchmark's crop, a torchvision resize); ``"stretch"``
    resizes straight to ``resize`` as the official ReStraV code does (224 x 224, bicubic).

    Videos stored as frames follow the benchmark under a ``benchmark`` sampler: the first
    ``num_frames`` frames (undecodable ones skipped, the last repeated), ``frame_rate`` ignored.
    """
    with open_video(path, backend=backend, max_pixels=max_pixels) as source:
        info = source.info
        if isinstance(source, _FramesSource) and getattr(sampler, "mode", None) == "benchmark":
            frames = source.benchmark_clip(min(int(sampler.num_frames), MAX_BENCHMARK_FRAMES))
        else:
            indices = sampler.indices(info.num_frames, info.fps, generator)
            frames = _decode(source, indices, backend)
    if resize is not None:
        if resize_mode == "crop":
            frames = centre_crop_resize(frames, resize, mode=interpolation)
        elif resize_mode == "stretch":
            frames = resize_frames(frames, resize, mode=interpolation)
        else:
            raise ValueError(f"unknown resize_mode {resize_mode!r}")
    return frames
