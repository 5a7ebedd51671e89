"""The result wire format: bit-exact round trips, incremental decoding, detection of damage."""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
import zlib
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distributed.errors import BadResult
from distributed.transport import wire
from tests.unit.wire_stream import decode


def stream(array: np.ndarray, encoding: str, chunk_size: int = wire.DEFAULT_CHUNK_SIZE) -> bytes:
    return b"".join(bytes(piece) for piece in wire.encode(array, encoding, chunk_size=chunk_size))


def decode_pieces(pieces: Iterator[bytes | memoryview], **kwargs: object) -> np.ndarray:
    decoder = wire.Decoder("worker-a", **kwargs)  # type: ignore[arg-type]
    for piece in pieces:
        decoder.feed(piece)
    return decoder.result()


def random_batch(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def smooth_batch(shape: tuple[int, ...]) -> np.ndarray:
    """Gradients: content that zlib really compresses, so deflate blocks are exercised."""
    batch, height, width, channels = shape
    ramp = np.add.outer(np.arange(height), np.arange(width))[None, :, :, None]
    return ((ramp + np.arange(batch)[:, None, None, None] * 7 + np.arange(channels)) % 256).astype(np.uint8)


def assert_identical(decoded: np.ndarray, original: np.ndarray) -> None:
    assert decoded.dtype == original.dtype
    assert decoded.shape == original.shape
    assert decoded.tobytes() == original.tobytes()


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
@pytest.mark.parametrize(
    ("dtype", "batch"),
    [("uint8", 1), ("uint8", 16), ("float16", 1), ("float16", 4), ("float32", 1), ("float32", 16)],
)
def test_random_image_batch_round_trips_bit_exact(dtype: str, batch: int, encoding: str) -> None:
    original = random_batch(dtype, (batch, 1023, 771, 3))
    assert_identical(decode_pieces(wire.encode(original, encoding)), original)


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [("float32", (2, 2, 48000)), ("float16", (1, 1, 44101)), ("uint8", (9, 64, 48, 4)), ("float32", (3, 65, 33)), ("uint8", ())],
    ids=["audio-stereo", "audio-mono-f16", "rgba-frames", "masks", "scalar"],
)
def test_audio_frames_and_masks_round_trip_bit_exact(dtype: str, shape: tuple[int, ...], encoding: str) -> None:
    original = random_batch(dtype, shape, seed=3)
    assert_identical(decode_pieces(wire.encode(original, encoding, chunk_size=10_000)), original)


def test_empty_batch_round_trips() -> None:
    original = np.zeros((0, 64, 64, 3), dtype=np.float32)
    assert_identical(decode(stream(original, "zlib")), original)


def test_zlib_compresses_smooth_images_losslessly() -> None:
    original = smooth_batch((4, 301, 257, 3))
    encoded = stream(original, "zlib", chunk_size=100_000)
    assert len(encoded) < original.nbytes / 4
    assert_identical(decode(encoded), original)


def test_zlib_stores_noise_instead_of_growing_it() -> None:
    original = random_batch("uint8", (2, 300, 200, 3))
    assert len(stream(original, "zlib", chunk_size=50_000)) < original.nbytes * 1.001


def test_smooth_float_images_compress_with_byte_shuffle() -> None:
    original = (smooth_batch((2, 256, 256, 3)) / np.float32(255)).astype(np.float32)
    encoded = stream(original, "zlib")
    assert len(encoded) < original.nbytes / 2
    assert_identical(decode(encoded), original)


def test_big_endian_input_decodes_to_the_same_values() -> None:
    original = random_batch("float32", (2, 5, 7)).astype(">f4")
    decoded = decode(stream(original, "raw"))
    assert np.array_equal(decoded, original)


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
@pytest.mark.parametrize("piece_size", [1, 7, 4093])
def test_stream_fed_in_awkward_pieces_decodes_the_same(encoding: str, piece_size: int) -> None:
    original = smooth_batch((3, 37, 29, 3))
    original[1] = random_batch("uint8", (37, 29, 3))
    encoded = stream(original, encoding, chunk_size=999)
    pieces = (encoded[i : i + piece_size] for i in range(0, len(encoded), piece_size))
    assert_identical(decode_pieces(pieces), original)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=12), encoding=st.sampled_from(wire.ENCODINGS))
def test_any_split_of_the_stream_decodes_the_same(cuts: list[int], encoding: str) -> None:
    original = (smooth_batch((2, 40, 50, 3)) / np.float32(7)).astype(np.float16)
    encoded = stream(original, encoding, chunk_size=3000)
    bounds = sorted({0, len(encoded), *(c for c in cuts if c < len(encoded))})
    pieces = (memoryview(encoded)[a:b] for a, b in itertools.pairwise(bounds))
    assert_identical(decode_pieces(pieces), original)


def test_raw_encoder_yields_views_of_the_array_not_copies() -> None:
    original = random_batch("float32", (2, 64, 64, 3))
    pieces = list(wire.encode(original, "raw", chunk_size=8192))
    payload = pieces[1:-1]
    assert all(isinstance(piece, memoryview) for piece in payload)
    assert len(payload) == original.nbytes // 8192


def test_decoder_writes_into_one_array_allocated_from_the_header() -> None:
    original = random_batch("uint8", (2, 50, 40, 3))
    encoded = stream(original, "raw")
    decoder = wire.Decoder()
    decoder.feed(encoded[:100])
    assert decoder.header is not None and decoder.header.shape == original.shape
    target = decoder._out
    decoder.feed(encoded[100:])
    assert decoder.result() is target


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
@pytest.mark.parametrize(
    "cut",
    [lambda n: 0, lambda n: 10, lambda n: 48, lambda n: n // 2, lambda n: n - 8, lambda n: n - 1],
    ids=["nothing", "half-header", "header", "mid-payload", "before-trailer", "mid-trailer"],
)
def test_truncated_stream_is_reported_as_truncated(encoding: str, cut: Callable[[int], int]) -> None:
    encoded = stream(smooth_batch((2, 40, 30, 3)), encoding, chunk_size=2000)
    decoder = wire.Decoder("worker-a")
    decoder.feed(encoded[: cut(len(encoded))])
    with pytest.raises(wire.WireError, match="truncated"):
        decoder.result()


def test_flipped_payload_byte_fails_the_checksum() -> None:
    encoded = bytearray(stream(random_batch("float32", (1, 64, 64, 3)), "raw"))
    encoded[len(encoded) // 2] ^= 0x10
    with pytest.raises(wire.WireError, match="checksum mismatch"):
        decode(encoded)


@pytest.mark.parametrize("offset", [0.3, 0.5, 0.9])
def test_flipped_byte_in_compressed_data_is_detected(offset: float) -> None:
    encoded = bytearray(stream(smooth_batch((2, 80, 60, 3)), "zlib", chunk_size=5000))
    encoded[int(len(encoded) * offset)] ^= 0x01
    with pytest.raises(wire.WireError):
        decode(encoded)


def test_flipped_header_byte_is_refused_before_allocating() -> None:
    encoded = bytearray(stream(random_batch("uint8", (1, 8, 8, 3)), "raw"))
    encoded[13] ^= 0x40
    with pytest.raises(wire.WireError, match="header"):
        decode(encoded)


def test_bad_magic_is_refused() -> None:
    with pytest.raises(wire.WireError, match="not a result stream"):
        decode(b'{"error": "not found"}' + bytes(64))


def test_newer_format_version_is_refused_by_name() -> None:
    encoded = bytearray(stream(random_batch("uint8", (1, 2, 2, 3)), "raw"))
    encoded[4] = wire.VERSION + 1
    with pytest.raises(wire.WireError, match="version"):
        decode(encoded)


def test_bytes_after_the_trailer_are_refused() -> None:
    with pytest.raises(wire.WireError, match="unexpected bytes"):
        decode(stream(random_batch("uint8", (1, 2, 2, 3)), "raw") + b"x")


def test_unexpected_dtype_is_refused() -> None:
    encoded = stream(random_batch("float16", (1, 4, 4, 3)), "raw")
    with pytest.raises(wire.WireError, match="expected float32"):
        decode_pieces(iter([encoded]), expected_dtype="float32")


def test_unexpected_shape_is_refused() -> None:
    encoded = stream(random_batch("float32", (2, 4, 4, 3)), "raw")
    with pytest.raises(wire.WireError, match="shape"):
        decode_pieces(iter([encoded]), expected_shape=(None, 4, 4, 4))


def test_result_larger_than_the_limit_is_refused_from_the_header() -> None:
    encoded = stream(random_batch("uint8", (1, 64, 64, 3)), "raw")
    with pytest.raises(wire.WireError, match="limit"):
        decode_pieces(iter([encoded[:60]]), max_bytes=1000)


def test_wire_error_fails_the_share_over_and_names_the_worker() -> None:
    with pytest.raises(BadResult, match="worker 'gpu-2'"):
        decode(b"garbage!" * 8, source="gpu-2")


def test_unsupported_dtype_is_refused_when_encoding() -> None:
    with pytest.raises(ValueError, match="uint8, float16 or float32"):
        next(wire.encode(np.zeros(3, dtype=np.int64)))


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class FakeContent:
    """Stands in for aiohttp's StreamReader: network pieces smaller than asked for."""

    def __init__(self, data: bytes, piece: int) -> None:
        self.data = data
        self.piece = piece

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return chunked(self.data, min(n, self.piece))


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
async def test_read_stream_decodes_a_response_body(encoding: str) -> None:
    original = random_batch("float32", (2, 100, 90, 3))
    content = FakeContent(stream(original, encoding, chunk_size=20_000), piece=3001)
    async with asyncio.timeout(30):
        decoded = await wire.read_stream(content, wire.Decoder(), batch_bytes=16_384)
    assert_identical(decoded, original)


async def test_read_stream_reports_a_body_cut_short() -> None:
    encoded = stream(random_batch("uint8", (2, 100, 90, 3)), "raw")
    async with asyncio.timeout(30):
        with pytest.raises(wire.WireError, match="truncated"):
            await wire.read_stream(FakeContent(encoded[:-100], piece=4096), wire.Decoder(), batch_bytes=10_000)


# --- a worker's hand-made stream: bounded work for the master ---------------------------------------------


def _hand_made(shape: tuple[int, ...], block_size: int, blocks: list[bytes], crc: int = 0) -> bytes:
    header = wire.encode_header(wire.WireHeader(np.dtype("<u1"), shape, "zlib", block_size))
    body = b"".join(struct.pack("<BI", 1, len(block)) + block for block in blocks)
    return header + body + struct.pack("<4sI", wire.TRAILER_MAGIC, crc)


def test_a_level_9_block_that_inflates_past_the_ratio_is_refused_before_inflating() -> None:
    shape = (1, 1024, 1024, 3)
    bomb = zlib.compress(bytes(math.prod(shape)), 9)  # about 1000:1, what no level 1 encoder makes
    decoder = wire.Decoder("worker-a", expected_shape=shape)

    with pytest.raises(wire.WireError, match="inflate") as caught:
        decoder.feed(_hand_made(shape, math.prod(shape), [bomb], zlib.crc32(bytes(math.prod(shape)))))
    assert "worker-a" in str(caught.value)


def test_a_block_size_past_the_limit_is_refused_from_the_header() -> None:
    shape = (1, 64, 64, 3)
    header = wire.encode_header(wire.WireHeader(np.dtype("<u1"), shape, "zlib", 3 << 30))

    with pytest.raises(wire.WireError, match="block size"):
        wire.Decoder("worker-a").feed(header)


def test_constant_images_from_our_own_encoder_stay_within_the_ratio() -> None:
    original = np.zeros((2, 512, 512, 3), dtype=np.uint8)
    encoded = stream(original, "zlib")

    assert len(encoded) < original.nbytes / 100  # still compressed
    assert_identical(decode(encoded), original)
