"""Result wire codecs: size, encode/decode time and modelled per-image totals per link speed.

Run: `source scripts/env.sh && $COMFYUI_PYTHON bench/wire_codecs.py` (about 1-2 minutes, ~2 GB RAM).

For each image size, content and batch it prints, per encoding, the size and codec times per image,
then the per-image total at loopback (raw and zlib measured end to end through the real result
route and `read_stream`, in one process; png/webp modelled with the measured loopback bandwidth),
and modelled at 1 Gbit/s and 100 Mbit/s as encode + bytes/bandwidth + decode, without overlap.
"png1" is what a stock worker's PreviewImage costs (PNG level 1, decoded on the master);
"webp" is lossless WebP at its fastest method. PNG/WebP are timed on 2 images (their cost per image
does not depend on the batch). "stall" is the event loop's worst lateness during the fetch, with
server and client sharing one loop.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import ClientSession, ClientTimeout, web
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distributed.transport import wire
from distributed.transport.result_store import ResultStore, make_results_handler
from distributed.transport.sink import RESULTS_PATH

LINKS = {"1Gbit": 1e9 / 8, "100Mbit": 100e6 / 8}
IMAGE_CODEC_SAMPLE = 2


def content(kind: str, batch: int, size: int, dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    """flat: smooth gradients; noisy: uniform noise; photo: smooth field plus sigma=3 grain."""
    rng = np.random.default_rng(seed)
    if kind == "noisy":
        if dtype == "uint8":
            return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        return rng.random((batch, size, size, 3), dtype=np.float32).astype(dtype)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for index in range(batch):
        base = np.stack([xx, yy, np.full_like(xx, (index % 8) / 8)], axis=-1) * 255
        if kind == "photo":
            low = rng.random((size // 64, size // 64, 3)).astype(np.float32) * 255
            field = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC), dtype=np.float32)
            base = 0.3 * base + 0.7 * field + rng.normal(0, 3, (size, size, 3)).astype(np.float32)
        images.append(np.clip(base, 0, 255))
    stacked = np.stack(images)
    return stacked.astype(np.uint8) if dtype == "uint8" else (stacked / 255).astype(dtype)


@dataclass
class Row:
    encoding: str
    bytes_per_image: float
    encode_s: float
    decode_s: float
    loopback_s: float
    stall_ms: float | None

    def modelled(self, bandwidth: float) -> float:
        return self.encode_s + self.bytes_per_image / bandwidth + self.decode_s


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def wire_codec(array: np.ndarray, encoding: str) -> tuple[float, float, int]:
    encode_s, pieces = timed(lambda: [bytes(p) if isinstance(p, bytes) else p for p in wire.encode(array, encoding)])
    size = sum(len(p) for p in pieces)  # type: ignore[union-attr]

    def decode() -> np.ndarray:
        decoder = wire.Decoder()
        for piece in pieces:  # type: ignore[union-attr]
            decoder.feed(piece)
        return decoder.result()

    decode_s, decoded = timed(decode)
    assert np.array_equal(decoded, array)  # type: ignore[arg-type]
    return encode_s, decode_s, size


def image_codec(array: np.ndarray, fmt: str) -> tuple[float, float, int]:
    """Per-image encode/decode seconds and bytes for PNG level 1 or lossless WebP, over a sample."""
    sample = array[:IMAGE_CODEC_SAMPLE]
    options = {"compress_level": 1} if fmt == "PNG" else {"lossless": True, "quality": 0, "method": 0}

    def encode_one(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, fmt, **options)
        return buffer.getvalue()

    encode_s, blobs = timed(lambda: [encode_one(image) for image in sample])
    decode_s, decoded = timed(lambda: [np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")) for blob in blobs])  # type: ignore[union-attr]
    assert all(np.array_equal(a, b) for a, b in zip(decoded, sample, strict=True))  # type: ignore[arg-type]
    n = len(sample)
    return encode_s / n, decode_s / n, sum(len(b) for b in blobs) // n  # type: ignore[union-attr]


async def watch_loop(stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.002)
        worst = max(worst, time.perf_counter() - before - 0.002)
    return worst


async def fetch(session: ClientSession, base: str, store: ResultStore, array: np.ndarray, encoding: str) -> tuple[float, float]:
    """End to end through the real route: seconds and worst loop stall (s)."""
    store.put("bench", "1", array, encoding)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_loop(stop))
    start = time.perf_counter()
    async with session.get(f"{base}/distributed/results/bench/1", params={"encoding": encoding}) as response:
        response.raise_for_status()
        decoded = await wire.read_stream(response.content, wire.Decoder("bench"))
    elapsed = time.perf_counter() - start
    stop.set()
    stall = await watcher
    assert decoded.shape == array.shape
    return elapsed, stall


async def run_case(session: ClientSession, base: str, store: ResultStore, array: np.ndarray) -> list[Row]:
    n = array.shape[0]
    rows: list[Row] = []
    loopback_bw = None
    for encoding in wire.ENCODINGS:
        encode_s, decode_s, size = await asyncio.to_thread(wire_codec, array, encoding)
        elapsed, stall = await fetch(session, base, store, array, encoding)
        if encoding == "raw":
            loopback_bw = size / elapsed
        rows.append(Row(encoding, size / n, encode_s / n, decode_s / n, elapsed / n, stall * 1000))
    if array.dtype == np.uint8:
        for name, fmt in (("png1", "PNG"), ("webp", "WEBP")):
            encode_s, decode_s, size = await asyncio.to_thread(image_codec, array, fmt)
            assert loopback_bw is not None
            rows.append(Row(name, size, encode_s, decode_s, encode_s + size / loopback_bw + decode_s, None))
    return rows


def print_rows(title: str, raw_bytes: float, rows: list[Row]) -> None:
    print(f"\n{title}")
    header = ("encoding", "MB/img", "ratio", "enc s", "dec s", "loopback", "1Gbit/s", "100Mbit", "stall ms")
    print("  " + " ".join(f"{h:>{w}}" for h, w in zip(header, (8, 7, 6, 7, 7, 9, 8, 8, 8), strict=True)))
    for row in rows:
        stall = f"{row.stall_ms:8.1f}" if row.stall_ms is not None else f"{'-':>8}"
        print(
            f"  {row.encoding:8} {row.bytes_per_image / 1e6:7.2f} {row.bytes_per_image / raw_bytes:6.3f} {row.encode_s:7.3f}"
            f" {row.decode_s:7.3f} {row.loopback_s:9.3f} {row.modelled(LINKS['1Gbit']):8.3f} {row.modelled(LINKS['100Mbit']):8.3f} {stall}"
        )


async def main() -> None:
    store = ResultStore()
    app = web.Application()
    handler = make_results_handler(store)
    app.router.add_get(RESULTS_PATH, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    print("seconds per image; loopback measured for raw/zlib, modelled (enc + size/bw + dec) otherwise")
    for name in ("zstandard", "lz4"):
        try:
            __import__(name)
            print(f"note: {name} is importable but not wired in; see the report")
        except ImportError:
            print(f"note: {name} not installed here: not measured")
    photo_zlib: list[Row] = []
    try:
        async with ClientSession(timeout=ClientTimeout(total=600, sock_connect=10)) as session:
            for size in (1024, 2048):
                for kind in ("flat", "noisy", "photo"):
                    for batch in (4, 16):
                        array = content(kind, batch, size)
                        rows = await run_case(session, base, store, array)
                        print_rows(f"{batch} x {size}x{size} uint8, {kind}", array[0].nbytes, rows)
                        if kind == "photo" and size == 2048 and batch == 16:
                            photo_zlib = rows
                        del array
            for dtype in ("float16", "float32"):
                for kind in ("noisy", "photo"):
                    array = content(kind, 4, 2048, dtype)
                    rows = await run_case(session, base, store, array)
                    print_rows(f"4 x 2048x2048 {dtype}, {kind}", array[0].nbytes, rows)
                    del array
    finally:
        await runner.cleanup()
    for row in photo_zlib:
        raw_bytes = 2048 * 2048 * 3
        if row.encoding in wire.ENCODINGS:
            print(
                f"codec cost {row.encoding}: ratio {row.bytes_per_image / raw_bytes:.2f}, "
                f"encode {raw_bytes / max(row.encode_s, 1e-9):.2e} B/s, decode {raw_bytes / max(row.decode_s, 1e-9):.2e} B/s"
            )
    print(f"\nbench took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
