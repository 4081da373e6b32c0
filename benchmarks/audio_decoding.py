"""Audio decode + resample throughput (clips/s): ``detectors.audio.io`` against a naive loop.

A corpus of audio files is written first (default 48 files, 10.4 min in all; a mix of 44.1 kHz
stereo WAV of 30 s, 48 kHz FLAC of 10 s, 22.05 kHz WAV of 8 s and 16 kHz WAV of 4 s). Each
variant turns every file into one 96,000-sample 16 kHz clip:

* ``naive``: per file ``soundfile.read`` of the whole file, channel mean, a *fresh*
  ``torchaudio.transforms.Resample`` (kernel rebuilt per file), crop/pad. (``torchaudio.load``
  is not usable here: since torchaudio 2.9 it needs torchcodec.)
* ``eval``: :func:`load_audio_benchmark` (libswresample, the benchmark's decoder; long seekable
  files are read only around the centre window).
* ``train``: :func:`load_audio_window` random crops (partial read of only the window + margin).
* ``train-cached``: :class:`WaveformCache` warm (second epoch) + random :func:`fixed_window`.
* the same through a ``DataLoader`` with ``--workers`` worker processes (second epoch timed).

Then the benchmark-input decoder itself, per file, on a 10 s 44.1 kHz stereo WAV and a 30 s
44.1 kHz stereo MP3 (whole-file decodes, calls alternated, median of ``--repeats``):

* ``torchaudio``: the previous decoder: the same readers and ffmpeg down-mix, then torchaudio's
  windowed-sinc resampler (cached kernel), centre crop;
* ``libswresample``: :func:`load_audio_benchmark` (``partial=False``): mix + resample in one
  libswresample pass, the samples torchcodec returns; also with ``partial=True`` (WAV: only the
  centre window is read);
* ``torchcodec``: ``AudioDecoder(path, sample_rate=16000, num_channels=1)``, only if importable.

    OMP_NUM_THREADS=1 python benchmarks/audio_decoding.py [--files 48] [--workers 2] [--out r.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.atomic import write_json  # noqa: E402
from detectors.audio.io import (  # noqa: E402
    BENCHMARK_NUM_SAMPLES,
    BENCHMARK_SAMPLE_RATE,
    WaveformCache,
    _decode,
    fixed_window,
    load_audio_benchmark,
    load_audio_window,
    mono_downmix,
    resample,
)

# (sample rate, channels, seconds, format)
KINDS = [(44_100, 2, 30.0, "WAV"), (48_000, 1, 10.0, "FLAC"), (22_050, 1, 8.0, "WAV"), (16_000, 1, 4.0, "WAV")]


def write_corpus(root: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        rate, channels, seconds, fmt = KINDS[index % len(KINDS)]
        path = root / f"clip_{index:03d}.{fmt.lower()}"
        if not path.exists():
            frames = int(rate * seconds)
            data = (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32)
            sf.write(path, data, rate, subtype="PCM_16", format=fmt)
        paths.append(path)
    return paths


def naive_clip(path: Path, generator: torch.Generator | None = None) -> torch.Tensor:
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    waveform = torch.from_numpy(data.mean(axis=1))
    if rate != 16_000:
        waveform = torchaudio.transforms.Resample(rate, 16_000)(waveform)
    mode = "random" if generator is not None else "centre"
    return fixed_window(waveform, BENCHMARK_NUM_SAMPLES, mode, generator)


def torchaudio_benchmark_input(path: Path) -> torch.Tensor:
    """The previous benchmark-input decoder: same readers and down-mix, torchaudio's resampler."""
    data, rate, layout = _decode(Path(path), 0.0, None)
    mono = torch.from_numpy(np.ascontiguousarray(mono_downmix(data, layout), dtype=np.float32))
    return fixed_window(resample(mono, rate, BENCHMARK_SAMPLE_RATE), BENCHMARK_NUM_SAMPLES, "centre")


def write_decoder_clips(root: Path) -> dict[str, Path]:
    """A 10 s 44.1 kHz stereo 16-bit WAV and a 30 s 44.1 kHz stereo MP3 (LAME through PyAV)."""
    import av

    rng = np.random.default_rng(1)
    wav = root / "stereo_10s_44k.wav"
    sf.write(wav, (rng.standard_normal((441_000, 2)) * 0.1).astype(np.float32), 44_100, subtype="PCM_16")
    mp3 = root / "stereo_30s_44k.mp3"
    with av.open(str(mp3), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=44_100, layout="stereo")
        stream.bit_rate = 128_000
        samples = (rng.standard_normal((2, 44_100 * 30)) * 0.1).astype(np.float32)
        for start in range(0, samples.shape[1], 44_100):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples[:, start : start + 44_100]), format="fltp", layout="stereo"
            )
            frame.sample_rate = 44_100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return {"10 s 44.1 kHz stereo WAV": wav, "30 s 44.1 kHz stereo MP3": mp3}


def _torchcodec_input() -> Callable[[Path], torch.Tensor] | None:
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, OSError, RuntimeError):  # not installed, or built for another torch / FFmpeg
        return None

    def load(path: Path) -> torch.Tensor:
        samples = AudioDecoder(str(path), sample_rate=BENCHMARK_SAMPLE_RATE, num_channels=1).get_all_samples()
        return fixed_window(samples.data.squeeze(0), BENCHMARK_NUM_SAMPLES, "centre")

    return load


def time_decoders(clips: dict[str, Path], repeats: int) -> dict[str, dict[str, float]]:
    """Median milliseconds per call for each decoder on each clip (calls alternate between decoders)."""
    decoders: dict[str, Callable[[Path], torch.Tensor]] = {
        "torchaudio (previous)": torchaudio_benchmark_input,
        "libswresample": lambda path: load_audio_benchmark(path, partial=False),
        "libswresample, partial read": load_audio_benchmark,
    }
    torchcodec = _torchcodec_input()
    if torchcodec is not None:
        decoders["torchcodec"] = torchcodec
    results: dict[str, dict[str, float]] = {}
    for clip, path in clips.items():
        outputs = {name: load(path) for name, load in decoders.items()}  # warm-up, and the samples
        times: dict[str, list[float]] = {name: [] for name in decoders}
        for _ in range(repeats):
            for name, load in decoders.items():
                times[name].append(_seconds(lambda load=load, path=path: load(path)) * 1000)
        results[clip] = {f"{name} ms": statistics.median(values) for name, values in times.items()}
        reference = outputs.get("torchcodec", outputs["libswresample"])
        for name, out in outputs.items():
            results[clip][f"{name} max |diff| vs {'torchcodec' if torchcodec else 'libswresample'}"] = float(
                (out - reference).abs().max()
            )
    return results


class ClipDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], load: Callable[[Path], torch.Tensor]) -> None:
        self.paths, self.load = paths, load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.load(self.paths[index])


def _seconds(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_loop(paths: list[Path], load: Callable[[Path], torch.Tensor]) -> float:
    def body() -> None:
        for path in paths:
            assert load(path).shape == (BENCHMARK_NUM_SAMPLES,)

    return len(paths) / _seconds(body)


def run_loader(paths: list[Path], load: Callable[[Path], torch.Tensor], workers: int) -> float:
    """Throughput of the second epoch: worker start-up (fork, imports) is paid once per run."""
    loader = torch.utils.data.DataLoader(
        ClipDataset(paths, load), batch_size=8, num_workers=workers, persistent_workers=True,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )  # fmt: skip

    def body() -> None:
        for batch in loader:
            assert batch.shape[1] == BENCHMARK_NUM_SAMPLES

    body()
    return len(paths) / _seconds(body)


def _naive_train(path: Path) -> torch.Tensor:
    return naive_clip(path, torch.Generator().manual_seed(hash(path.name) % 2**31))


def _window_train(path: Path) -> torch.Tensor:
    return load_audio_window(path, mode="random", generator=torch.Generator().manual_seed(hash(path.name) % 2**31))


class _CachedTrain:
    def __init__(self, cache: WaveformCache) -> None:
        self.cache = cache

    def __call__(self, path: Path) -> torch.Tensor:
        generator = torch.Generator().manual_seed(hash(path.name) % 2**31)
        return fixed_window(self.cache.load(path), BENCHMARK_NUM_SAMPLES, "random", generator, tile_short=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per decoder and clip")
    parser.add_argument("--data", type=Path, default=None, help="corpus folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "corpus"
        root.mkdir(parents=True, exist_ok=True)
        paths = write_corpus(root, args.files)
        total_s = sum(sf.info(str(p)).duration for p in paths)
        cache = WaveformCache(Path(tmp) / "cache")
        for path in paths:  # first epoch fills the cache (not timed)
            cache.load(path)
        cached = _CachedTrain(cache)
        run_loop(paths[:4], load_audio_benchmark)  # warm-up: imports, first kernels

        results: dict[str, float] = {}
        results["naive eval (full read, fresh Resample)"] = run_loop(paths, naive_clip)
        results["eval: load_audio_benchmark"] = run_loop(paths, load_audio_benchmark)
        results["naive train (full read, fresh Resample, random crop)"] = run_loop(paths, _naive_train)
        results["train: load_audio_window (partial read)"] = run_loop(paths, _window_train)
        results["train: WaveformCache warm"] = run_loop(paths, cached)
        if args.workers > 0:
            results[f"naive eval, DataLoader {args.workers} workers"] = run_loader(paths, naive_clip, args.workers)
            results[f"eval, DataLoader {args.workers} workers"] = run_loader(paths, load_audio_benchmark, args.workers)
            results[f"train window, DataLoader {args.workers} workers"] = run_loader(paths, _window_train, args.workers)
        decoder_results = time_decoders(write_decoder_clips(Path(tmp)), args.repeats)

    naive_eval = results["naive eval (full read, fresh Resample)"]
    naive_train = results["naive train (full read, fresh Resample, random crop)"]
    print(f"{len(paths)} files, {total_s / 60:.1f} min of audio, torch threads {torch.get_num_threads()}")
    width = max(map(len, results))
    for name, rate in results.items():
        baseline = naive_train if name.startswith(("train", "naive train")) else naive_eval
        print(f"  {name:<{width}}  {rate:8.1f} clips/s  x{rate / baseline:5.2f} vs naive")
    print("benchmark input per file (median ms; ratio = libswresample time / torchaudio time):")
    for clip, figures in decoder_results.items():
        old = figures["torchaudio (previous) ms"]
        print(f"  {clip}")
        for name, value in figures.items():
            if name.endswith(" ms"):
                print(f"    {name[:-3]:<30} {value:8.2f} ms  x{value / old:5.2f}")
            else:
                print(f"    {name:<56} {value:.2e}")
    if args.out:
        write_json(
            args.out,
            {
                "files": len(paths),
                "audio_minutes": total_s / 60,
                "clips_per_s": results,
                "benchmark_input": decoder_results,
            },
        )


if __name__ == "__main__":
    main()
