"""The result wire format: one numpy array as a framed, checksummed byte stream.

A worker that runs this extension keeps its output tensor in memory and the master pulls it in
this format instead of PNG files: no quantisation (float16/float32 travel as they are), no image
codec on the worker's execution thread, and a decoder that writes straight into one preallocated
array as chunks arrive, so a batch is allocated once and never concatenated.

Stream layout (all integers little-endian)::

    header   magic b"CDGW" | u8 version | u8 dtype | u8 encoding | u8 ndim | u32 block_size
             | ndim x u64 shape | u32 crc32 of the header bytes before it
    payload  raw:  exactly prod(shape) * itemsize bytes, the C-order array
             zlib: ceil(nbytes / block_size) blocks, each  u8 kind | u32 length | length bytes;
                   kind 0 = stored (the block's bytes as they are), 1 = deflate of the filtered
                   block; every block decodes to block_size bytes, the last to the remainder
    trailer  b"CDGE" | u32 crc32 of the decoded array bytes

The array checksum sits in a trailer rather than the header so that the encoder makes one pass
over the data while it streams; the header has its own crc so garbage is refused before the
decoder allocates anything.

"zlib" filters each block before deflate level 1: uint8 data is delta-coded against the value one
pixel to the left (stride = the last dimension when it is a channel count of 2-4), wider dtypes are
byte-shuffled (all first bytes, then all second bytes ...). On generated-image-like content that
matches PNG level 1's ratio at 40% of its encode time, and a block that eight 8 KiB samples show to
be incompressible (noise) is stored, so the encoding never costs much more than raw.

The stream comes from a worker, which the master does not trust, so the decoder bounds what it
does for it: the header must announce what the master expects (dtype, shape, at most `max_bytes`),
blocks are at most MAX_BLOCK_SIZE, and a compressed block may inflate at most MAX_INFLATE_RATIO
times its size. Level 1 deflate reaches about 230:1 on constant data, so a stream the encoder made
always passes; a hand-made level 9 stream (about 1000:1) does not.
"""

from __future__ import annotations

import asyncio
import math
import struct
import zlib
from collections.abc import AsyncIterable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import BadResult

MAGIC = b"CDGW"
TRAILER_MAGIC = b"CDGE"
VERSION = 1
ENCODINGS = ("raw", "zlib")
MAX_NDIM = 8
DEFAULT_CHUNK_SIZE = 4 << 20
DEFAULT_MAX_BYTES = 4 << 30
MAX_BLOCK_SIZE = 64 << 20
MAX_INFLATE_RATIO = 512
"""The most a compressed block may inflate: decoded bytes per byte on the wire."""

_DTYPES: dict[int, np.dtype] = {1: np.dtype("<u1"), 2: np.dtype("<f2"), 3: np.dtype("<f4")}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_ENCODING_CODES = {name: code for code, name in enumerate(ENCODINGS)}
_FIXED = struct.Struct("<4sBBBBI")
_BLOCK = struct.Struct("<BI")
_TRAILER = struct.Struct("<4sI")
_STORED, _DEFLATE = 0, 1
_SAMPLE_SLICES = 8
_SAMPLE_SLICE = 8 << 10
_INCOMPRESSIBLE = 0.9
_UNDELTA_ROWS = 1 << 15


class WireError(BadResult):
    """Raised when a result stream is truncated, corrupted, not in this format or not what was expected."""


@dataclass(frozen=True)
class WireHeader:
    """What a stream announces before its payload."""

    dtype: np.dtype
    shape: tuple[int, ...]
    encoding: str
    block_size: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _filter_stride(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Delta stride for uint8: one pixel (the channel count) for [..., W, C] images, else one value."""
    if dtype.itemsize == 1 and len(shape) >= 2 and 2 <= shape[-1] <= 4:
        return shape[-1]
    return 1


def _block_size(dtype: np.dtype, shape: tuple[int, ...], chunk_size: int) -> int:
    """Block size rounded to whole filter units, so each block is filtered on its own."""
    unit = _filter_stride(dtype, shape) * dtype.itemsize
    return max(unit, chunk_size // unit * unit)


def check_array(array: np.ndarray) -> None:
    """Raises ValueError for an array the format cannot carry, before anything is streamed."""
    if array.dtype.newbyteorder("<") not in _DTYPE_CODES:
        raise ValueError(f"wire format carries uint8, float16 or float32, not {array.dtype}")
    if array.ndim > MAX_NDIM:
        raise ValueError(f"wire format carries at most {MAX_NDIM} dimensions, not {array.ndim}")


def _as_wire_array(array: np.ndarray) -> np.ndarray:
    check_array(array)
    return np.require(array, dtype=array.dtype.newbyteorder("<"), requirements="C")


def encode_header(header: WireHeader) -> bytes:
    fixed = _FIXED.pack(
        MAGIC, VERSION, _DTYPE_CODES[header.dtype], _ENCODING_CODES[header.encoding], len(header.shape), header.block_size
    )
    body = fixed + struct.pack(f"<{len(header.shape)}Q", *header.shape)
    return body + struct.pack("<I", zlib.crc32(body))


def encode(
    array: np.ndarray, encoding: str = "raw", *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Generator[bytes | memoryview, None, None]:
    """Yields the stream for `array`: header, payload pieces of about `chunk_size` bytes, trailer.

    Raw pieces are memoryview slices of the (contiguous) array, so nothing array-sized is built.
    Each `next()` does at most one block of codec work; callers on an event loop run it in a thread.
    """
    if encoding not in _ENCODING_CODES:
        raise ValueError(f"unknown wire encoding '{encoding}' (known: {', '.join(ENCODINGS)})")
    data = _as_wire_array(array)
    block_size = _block_size(data.dtype, data.shape, chunk_size) if encoding == "zlib" else 0
    yield encode_header(WireHeader(data.dtype, tuple(data.shape), encoding, block_size))
    flat = data.reshape(-1).view(np.uint8)
    view = memoryview(flat)
    crc = 0
    if encoding == "raw":
        for start in range(0, len(view), chunk_size):
            piece = view[start : start + chunk_size]
            crc = zlib.crc32(piece, crc)
            yield piece
    else:
        stride = _filter_stride(data.dtype, data.shape)
        for start in range(0, len(view), block_size):
            block = flat[start : start + block_size]
            crc = zlib.crc32(block, crc)
            yield from _encode_block(block, data.dtype.itemsize, stride)
    yield _TRAILER.pack(TRAILER_MAGIC, crc)


def _encode_block(block: np.ndarray, itemsize: int, stride: int) -> Iterator[bytes | memoryview]:
    filtered = _shuffle(block, itemsize) if itemsize > 1 else _delta(block, stride)
    sample = _sample(filtered)
    if len(zlib.compress(sample, 1)) < _INCOMPRESSIBLE * len(sample):
        packed = zlib.compress(filtered, 1)
        # A zlib build whose level 1 beats the ratio a decoder accepts (none known) gets the block stored.
        if len(packed) < len(block) and len(block) <= len(packed) * MAX_INFLATE_RATIO:
            yield _BLOCK.pack(_DEFLATE, len(packed)) + packed
            return
    yield _BLOCK.pack(_STORED, len(block))
    yield memoryview(block)


def _sample(filtered: np.ndarray) -> bytes:
    """Slices spread over the block, so each byte plane of shuffled floats is represented."""
    step = len(filtered) // _SAMPLE_SLICES
    if step <= _SAMPLE_SLICE:
        return filtered.tobytes()
    return b"".join(filtered[i * step : i * step + _SAMPLE_SLICE].tobytes() for i in range(_SAMPLE_SLICES))


def _delta(block: np.ndarray, stride: int) -> np.ndarray:
    out = np.empty_like(block)
    out[:stride] = block[:stride]
    np.subtract(block[stride:], block[:-stride], out=out[stride:])
    return out


def _undelta(source: np.ndarray, target: np.ndarray, stride: int) -> None:
    """Running sum in slices: numpy holds the GIL through a cumsum (~20 ms per 4 MB), stalling the loop."""
    rows_in, rows_out = source.reshape(-1, stride), target.reshape(-1, stride)
    for start in range(0, len(rows_in), _UNDELTA_ROWS):
        piece = rows_out[start : start + _UNDELTA_ROWS]
        np.cumsum(rows_in[start : start + _UNDELTA_ROWS], axis=0, dtype=np.uint8, out=piece)
        if start:
            np.add(piece, rows_out[start - 1], out=piece)


def _shuffle(block: np.ndarray, itemsize: int) -> np.ndarray:
    return np.ascontiguousarray(block.reshape(-1, itemsize).T).reshape(-1)


class Decoder:
    """Incremental decoder: `feed()` chunks of any size as they arrive, then `result()`.

    The output array is allocated once, when the header is complete; raw payload is copied straight
    into it, compressed blocks are inflated into one block-sized scratch buffer and unfiltered into
    it. Nothing else grows with the stream. Errors name `source` (the worker).
    """

    def __init__(
        self,
        source: str = "unknown",
        *,
        expected_dtype: str | np.dtype | None = None,
        expected_shape: tuple[int | None, ...] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.source = source
        self._expected_dtype = np.dtype(expected_dtype).newbyteorder("<") if expected_dtype is not None else None
        self._expected_shape = expected_shape
        self._max_bytes = max_bytes
        self.header: WireHeader | None = None
        self._out: np.ndarray | None = None
        self._out_bytes: memoryview | None = None
        self._pos = 0
        self._crc = 0
        self._small = bytearray()
        self._need = _FIXED.size
        self._state = "fixed"
        self._block_left = 0
        self._block_len = 0
        self._scratch: np.ndarray | None = None
        self._scratch_pos = 0
        self._inflater: zlib._Decompress | None = None

    @property
    def done(self) -> bool:
        return self._state == "done"

    def _fail(self, cause: str) -> WireError:
        self._state = "failed"
        return WireError(self.source, cause)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            if self._state in ("fixed", "shape", "block", "trailer"):
                take = min(self._need - len(self._small), len(view))
                self._small += view[:take]
                view = view[take:]
                if len(self._small) == self._need:
                    small = bytes(self._small)
                    self._small.clear()
                    self._on_small(small)
            elif self._state in ("raw", "stored"):
                view = self._copy(view)
            elif self._state == "deflate":
                view = self._inflate(view)
            elif self._state == "done":
                raise self._fail(f"{len(view)} unexpected bytes after the end of the result stream")
            else:
                raise self._fail("result stream already failed")

    def _on_small(self, small: bytes) -> None:
        if self._state == "fixed":
            magic, version, dtype_code, encoding_code, ndim, _ = _FIXED.unpack(small)
            if magic != MAGIC:
                raise self._fail(f"not a result stream (magic {magic!r})")
            if version != VERSION:
                raise self._fail(f"result stream version {version}, this master reads version {VERSION}")
            if dtype_code not in _DTYPES or encoding_code >= len(ENCODINGS) or ndim > MAX_NDIM:
                raise self._fail("corrupt result stream header")
            self._small += small
            self._need = _FIXED.size + 8 * ndim + 4
            self._state = "shape"
        elif self._state == "shape":
            self._on_header(small)
        elif self._state == "block":
            self._on_block_prefix(small)
        else:
            self._on_trailer(small)

    def _on_header(self, raw: bytes) -> None:
        (stated_crc,) = struct.unpack_from("<I", raw, len(raw) - 4)
        if zlib.crc32(raw[:-4]) != stated_crc:
            raise self._fail("corrupt result stream header (checksum mismatch)")
        _, _, dtype_code, encoding_code, ndim, block_size = _FIXED.unpack_from(raw)
        shape = struct.unpack_from(f"<{ndim}Q", raw, _FIXED.size)
        header = WireHeader(_DTYPES[dtype_code], tuple(shape), ENCODINGS[encoding_code], block_size)
        self._check_expected(header)
        if header.nbytes > self._max_bytes:
            raise self._fail(f"result of shape {header.shape} exceeds the {self._max_bytes} byte limit")
        unit = _filter_stride(header.dtype, header.shape) * header.dtype.itemsize
        if header.encoding == "zlib" and (block_size <= 0 or block_size % unit or block_size > MAX_BLOCK_SIZE):
            raise self._fail(f"corrupt result stream header (block size {block_size}, at most {MAX_BLOCK_SIZE} allowed)")
        self.header = header
        self._out = np.empty(header.shape, dtype=header.dtype)
        self._out_bytes = memoryview(self._out.reshape(-1).view(np.uint8))
        self._small.clear()
        self._next_section()

    def _check_expected(self, header: WireHeader) -> None:
        if self._expected_dtype is not None and header.dtype != self._expected_dtype:
            raise self._fail(f"result is {header.dtype.name}, expected {self._expected_dtype.name}")
        expected = self._expected_shape
        if expected is not None and (
            len(expected) != len(header.shape) or any(e is not None and e != s for e, s in zip(expected, header.shape, strict=True))
        ):
            raise self._fail(f"result has shape {header.shape}, expected {expected}")

    def _next_section(self) -> None:
        assert self.header is not None
        left = self.header.nbytes - self._pos
        if left == 0:
            self._state, self._need = "trailer", _TRAILER.size
        elif self.header.encoding == "raw":
            self._state, self._block_left = "raw", left
        else:
            self._state, self._need = "block", _BLOCK.size
            self._block_len = min(self.header.block_size, left)

    def _on_block_prefix(self, prefix: bytes) -> None:
        kind, length = _BLOCK.unpack(prefix)
        if kind == _STORED and length == self._block_len:
            self._state, self._block_left = "stored", length
        elif kind == _DEFLATE and 0 < length < self._block_len:
            if self._block_len > length * MAX_INFLATE_RATIO:
                raise self._fail(f"compressed block at byte {self._pos} would inflate {self._block_len // length}:1, "
                                 f"more than the {MAX_INFLATE_RATIO}:1 this master accepts")
            if self._scratch is None:
                self._scratch = np.empty(min(self.header.block_size, self.header.nbytes), dtype=np.uint8)  # type: ignore[union-attr]
            self._state, self._block_left = "deflate", length
            self._scratch_pos = 0
            self._inflater = zlib.decompressobj()
        else:
            raise self._fail(f"corrupt result stream (block at byte {self._pos}: kind {kind}, length {length})")

    def _copy(self, view: memoryview) -> memoryview:
        assert self._out_bytes is not None
        take = min(self._block_left, len(view))
        piece = view[:take]
        self._out_bytes[self._pos : self._pos + take] = piece
        self._crc = zlib.crc32(piece, self._crc)
        self._pos += take
        self._block_left -= take
        if self._block_left == 0:
            self._next_section()
        return view[take:]

    def _inflate(self, view: memoryview) -> memoryview:
        assert self._inflater is not None and self._scratch is not None
        take = min(self._block_left, len(view))
        room = self._block_len - self._scratch_pos
        try:
            inflated = self._inflater.decompress(view[:take], room + 1)
        except zlib.error as exc:
            raise self._fail(f"corrupt compressed block at byte {self._pos}: {exc}") from None
        if len(inflated) > room or self._inflater.unconsumed_tail:
            raise self._fail(f"compressed block at byte {self._pos} inflates past its size")
        self._scratch[self._scratch_pos : self._scratch_pos + len(inflated)] = np.frombuffer(inflated, dtype=np.uint8)
        self._scratch_pos += len(inflated)
        self._block_left -= take
        if self._block_left == 0:
            self._finish_block()
        return view[take:]

    def _finish_block(self) -> None:
        assert self._inflater is not None and self._scratch is not None and self._out is not None and self.header
        if not self._inflater.eof or self._inflater.unused_data or self._scratch_pos != self._block_len:
            raise self._fail(f"corrupt compressed block at byte {self._pos}")
        flat = self._out.reshape(-1).view(np.uint8)
        target = flat[self._pos : self._pos + self._block_len]
        scratch = self._scratch[: self._block_len]
        itemsize = self.header.dtype.itemsize
        if itemsize > 1:
            target.reshape(-1, itemsize)[:] = scratch.reshape(itemsize, -1).T
        else:
            _undelta(scratch, target, _filter_stride(self.header.dtype, self.header.shape))
        self._crc = zlib.crc32(target, self._crc)
        self._pos += self._block_len
        self._inflater = None
        self._next_section()

    def _on_trailer(self, trailer: bytes) -> None:
        magic, crc = _TRAILER.unpack(trailer)
        if magic != TRAILER_MAGIC:
            raise self._fail("corrupt result stream (bad trailer)")
        if crc != self._crc:
            raise self._fail("result checksum mismatch: the data was corrupted in transfer")
        self._state = "done"

    def result(self) -> np.ndarray:
        """The decoded array; raises WireError unless the whole stream, trailer included, was fed."""
        if self._state != "done" or self._out is None:
            raise self._fail(f"result stream truncated ({self._describe_progress()})")
        return self._out

    def _describe_progress(self) -> str:
        if self.header is None:
            return "header incomplete"
        return f"{self._pos} of {self.header.nbytes} bytes decoded"



class ChunkSource(Protocol):
    """What `read_stream` needs from an aiohttp StreamReader."""

    def iter_chunked(self, n: int) -> AsyncIterable[bytes]: ...


async def read_stream(content: ChunkSource, decoder: Decoder, *, batch_bytes: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Feeds a response body to `decoder` and returns the array; all decoding runs off the loop.

    Even raw copies go to a thread: writing 4 MB into a fresh array measured 1.5-13 ms here,
    mostly page faults (0.4 ms once the pages exist), too long for the event loop on a busy host. Received pieces are batched,
    and one batch is decoded while the next is read, so the network and the copy overlap.
    """
    pending: asyncio.Future[None] | None = None
    batch: list[bytes] = []
    size = 0
    try:
        async for piece in content.iter_chunked(batch_bytes):
            batch.append(piece)
            size += len(piece)
            if size >= batch_bytes:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(_feed_all, decoder, batch))
                batch, size = [], 0
        if pending is not None:
            await pending
            pending = None
        await asyncio.to_thread(_feed_all, decoder, batch)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
    return decoder.result()


def _feed_all(decoder: Decoder, pieces: list[bytes]) -> None:
    for piece in pieces:
        decoder.feed(piece)
