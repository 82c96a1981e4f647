"""Vectorised decode of dense RecordIO-protobuf, as ``record_set()`` / ``write_numpy_to_dense_tensor`` write it.

Parsing one ``Record`` protobuf object per row costs more than the training itself for kmeans/pca (issue 12:
1.22 s of PCA's 1.40 s on 20,000 rows). The SDK's dense writer produces records that differ only in their
values, so the whole file can be decoded as one numpy matrix:

* **Template path** (float32 / float64 rows of one width, as the SDK writes them): every frame has the same
  header and length, so the buffer is a 2-D ``uint8`` array of records. Record 0's wire layout is walked once;
  the bytes outside its value regions must be identical in every record (then every record has exactly record
  0's structure, since value bytes of a packed fixed-width field carry no structure), and the value columns
  are viewed as float32/float64 in one copy.
* **Walker path** (different payload lengths: int32 varints, continuation frames): a strict walk of each
  payload's few tags and lengths in pure Python, the values gathered as raw bytes and decoded at once
  (int32 varints decoded vectorised).

Only the exact shape the SDK writes is accepted: ``features["values"]`` then optionally ``label["values"]``, each
a float32/float64/int32 tensor holding only packed ``values``; one tensor kind and one width for all records,
a label on every record or on none. Anything else (sparse keys, shape, uid, other map keys, mixed kinds or
widths, empty values, unpacked encoding, malformed bytes) returns None and the caller takes the per-record
protobuf path, whose result (or error) is the reference. The arrays returned are identical to that path's:
float32 features (C order) and float32 labels (each record's first label value).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from opensage.algorithms.recordio import _HEADER, MAGIC, RecordIOError, iter_records

_KEY = b"\x0a\x06values"  # map entry field 1 (string key), length 6, "values"
# Value's oneof field tag byte (field << 3 | wire type 2) -> wire dtype of the packed values (None = varint).
_KINDS: dict[int, np.dtype | None] = {0x12: np.dtype("<f4"), 0x1A: np.dtype("<f8"), 0x3A: None}


class _Unsupported(Exception):
    """Not the common dense layout: let the protobuf path decode (or reject) it."""


Layout = tuple[int, int, int, int, int, int]  # feature kind, start, length; label kind, start, length (0s: none)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 63:
            raise _Unsupported


def _entry(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Walk a map entry ``{key: "values", value: Value{<kind>_tensor{values: packed}}}`` spanning
    ``buf[pos:end]``; return (kind tag, start, length) of the packed values."""
    if buf[pos:pos + 8] != _KEY or buf[pos + 8] != 0x12:
        raise _Unsupported
    size, pos = _varint(buf, pos + 9)
    if pos + size != end:
        raise _Unsupported
    kind = buf[pos]
    if kind not in _KINDS:
        raise _Unsupported
    size, pos = _varint(buf, pos + 1)
    if pos + size != end or buf[pos] != 0x0A:  # the tensor holds only field 1 (values), packed
        raise _Unsupported
    size, pos = _varint(buf, pos + 1)
    if pos + size != end or size == 0:
        raise _Unsupported
    return kind, pos, size


def _walk(buf: bytes, pos: int, end: int) -> Layout:
    """The layout of one Record payload ``buf[pos:end]`` (offsets absolute in ``buf``)."""
    if buf[pos] != 0x0A:
        raise _Unsupported
    size, pos = _varint(buf, pos + 1)
    if pos + size > end:
        raise _Unsupported
    fkind, fstart, flen = _entry(buf, pos, pos + size)
    pos += size
    if pos == end:
        return fkind, fstart, flen, 0, 0, 0
    if buf[pos] != 0x12:
        raise _Unsupported
    size, pos = _varint(buf, pos + 1)
    if pos + size != end:
        raise _Unsupported
    lkind, lstart, llen = _entry(buf, pos, end)
    return fkind, fstart, flen, lkind, lstart, llen


def _decode_varints(raw: np.ndarray) -> np.ndarray:
    """int32 values of concatenated packed varints, as protobuf writes ``int32``: [0, 2**31) in at most 5
    bytes, a negative sign-extended to 64 bits in 10. Anything else (6-9 bytes, 10 bytes that are not a
    sign-extended int32, 5 bytes worth 2**31 or more) raises _Unsupported: protobuf decides those."""
    ends = raw < 0x80
    if not ends[-1]:
        raise _Unsupported
    if ends.all():  # every value in [0, 127]
        return raw.astype(np.int32)
    last = np.flatnonzero(ends)
    starts = np.empty_like(last)
    starts[0] = 0
    starts[1:] = last[:-1] + 1
    lengths = last - starts + 1
    if (raw[last[lengths == 5]] > 0x07).any():  # 5 bytes that encode 2**31 or more
        raise _Unsupported
    negative = starts[lengths > 5]
    if negative.size and ((lengths[lengths > 5] != 10).any() or (raw[negative + 4] & 0x78 != 0x78).any()
                          or (raw[negative[:, None] + np.arange(5, 9)] != 0xFF).any()
                          or (raw[negative + 9] != 0x01).any()):
        raise _Unsupported
    # The low 32 bits are bytes 0-4 (bits of byte 4 past 31 are the sign extension just checked).
    values = raw[starts].astype(np.uint32) & np.uint32(0x7F)
    for k in range(1, min(int(lengths.max()), 5)):
        part = raw[np.minimum(starts + k, last)].astype(np.uint32) & np.uint32(0x7F)
        part *= lengths > k
        values |= part << np.uint32(7 * k)
    return values.view(np.int32)


def _matrix(kind: int, raw: np.ndarray, n: int, sizes: list[int] | None) -> np.ndarray:
    """(n, width) values of n equal-count segments of packed values laid end to end in ``raw`` (uint8).
    ``sizes``: each segment's byte length (None: all the same)."""
    wire = _KINDS[kind]
    if wire is not None:
        if raw.size % (n * wire.itemsize) or (sizes is not None and len(set(sizes)) != 1):
            raise _Unsupported  # records of different widths: the protobuf path names the first one
        return raw.view(wire).reshape(n, -1)
    values = _decode_varints(raw)
    if values.size % n:
        raise _Unsupported
    width = values.size // n
    counts = (np.add.reduceat((raw < 0x80).astype(np.int64), _starts(sizes)) if sizes is not None
              else (raw.reshape(n, -1) < 0x80).sum(axis=1))
    if (counts != width).any():
        raise _Unsupported
    return values.reshape(n, width)


def _result(features: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    out = features.astype(np.float32, order="C", copy=False)
    if not out.flags.writeable:  # a view of read-only bytes: the protobuf path returns arrays of their own
        out = out.copy()
    if labels is None:
        return out, None
    # The protobuf path stores each label through a Python float: go through float64 the same way (it also
    # quiets a signalling NaN exactly as that path does), so even NaN bits agree.
    return out, labels[:, 0].astype(np.float64).astype(np.float32)


def _template(buf: bytes) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Decode when every frame is whole and the same length and all records share record 0's bytes outside
    their values (``FileTemplate``: the same check a whole file gets); None when the buffer is not like that."""
    template = FileTemplate.of(buf)
    if template is None or len(buf) % template.stride:
        return None
    n = len(buf) // template.stride
    block = np.frombuffer(buf, dtype=np.uint8).reshape(n, template.stride)
    features = np.empty((n, template.width), dtype=np.float32)
    labels = np.empty(n, dtype=np.float32) if template.labelled else None
    return (features, labels) if template.fill(block, features, labels) else None


def _walked(payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode payloads of any lengths with one strict walk each."""
    first = _walk(payloads[0], 0, len(payloads[0]))
    fkind, lkind = first[0], first[3]
    feature_parts: list[bytes] = []
    label_parts: list[bytes] = []
    feature_sizes: list[int] = []
    label_sizes: list[int] = []
    for payload in payloads:
        kind, fstart, flen, label_kind, lstart, llen = _walk(payload, 0, len(payload))
        if kind != fkind or label_kind != lkind:  # mixed kinds, or a label on only some records
            raise _Unsupported
        feature_parts.append(payload[fstart:fstart + flen])
        feature_sizes.append(flen)
        if llen:
            label_parts.append(payload[lstart:lstart + llen])
            label_sizes.append(llen)
    n = len(payloads)
    features = _matrix(fkind, np.frombuffer(b"".join(feature_parts), dtype=np.uint8), n, feature_sizes)
    labels = (_matrix(lkind, np.frombuffer(b"".join(label_parts), dtype=np.uint8), n, label_sizes)
              if lkind else None)
    return _result(features, labels)


def _starts(sizes: list[int]) -> np.ndarray:
    offsets = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=offsets[1:])
    return offsets


def decode_dense(buf: bytes | bytearray | memoryview) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(float32 features, float32 labels or None) of a dense RecordIO-protobuf buffer, or None when it is
    not the common dense layout (then the per-record protobuf path decides, errors included)."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    if len(data) < 8:
        return None
    try:
        decoded = _template(data)
        if decoded is not None:
            return decoded
        payloads = list(iter_records(data))  # continuation frames reassembled
        return _walked(payloads) if payloads else None
    except (_Unsupported, RecordIOError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------- whole files

BLOCK_BYTES = 4 << 20  # bytes of records read and decoded at a time (a block stays in cache while it is copied)


class FileTemplate:
    """Record 0 of a dense file, as ``_template`` requires every record of the file to be: every frame the
    same length, and the same bytes as record 0 outside the value regions (the padding is not compared,
    as ``_template`` does not). ``of`` returns None when record 0 is not the common dense layout."""

    def __init__(self, head: bytes) -> None:
        if len(head) < 8:
            raise _Unsupported
        magic, lrec = _HEADER.unpack_from(head, 0)
        if magic != MAGIC or lrec >> 29 or len(head) < 8 + lrec:
            raise _Unsupported
        self.length = lrec
        self.stride = 8 + lrec + ((-lrec) & 3)
        self.fkind, self.fstart, self.flen, self.lkind, self.lstart, self.llen = _walk(head, 8, 8 + lrec)
        self.head = np.frombuffer(head[:8 + lrec], dtype=np.uint8).copy()
        fixed = [(0, self.fstart), (self.fstart + self.flen, self.lstart if self.llen else 8 + lrec)]
        if self.llen:
            fixed.append((self.lstart + self.llen, 8 + lrec))
        self.fixed = [(lo, hi) for lo, hi in fixed if hi > lo]
        self.width = self._values(self.fkind, self.head[None, self.fstart:self.fstart + self.flen]).shape[1]

    @classmethod
    def of(cls, head: bytes) -> FileTemplate | None:
        try:
            return cls(head)
        except (_Unsupported, IndexError, ValueError):
            return None

    @property
    def labelled(self) -> bool:
        return self.llen > 0

    @staticmethod
    def _values(kind: int, region: np.ndarray) -> np.ndarray:
        """(m, width) values of m records' value regions (an (m, bytes) uint8 view), as ``_matrix`` gives."""
        wire = _KINDS[kind]
        if wire is not None and region.shape[1] % wire.itemsize == 0:
            return region.view(wire)  # rows of a block: no copy (possibly unaligned; numpy copes)
        return _matrix(kind, np.ascontiguousarray(region).reshape(-1), region.shape[0], None)

    def fill(self, block: np.ndarray, features: np.ndarray, labels: np.ndarray | None) -> bool:
        """Decode ``block`` ((m, stride) uint8: m whole frames) into ``features`` (m, width) float32 and
        ``labels`` (m,) float32; False (outputs partly written) when a record is not like record 0."""
        for lo, hi in self.fixed:
            if (block[:, lo:hi] != self.head[lo:hi]).any():
                return False
        try:
            values = self._values(self.fkind, block[:, self.fstart:self.fstart + self.flen])
            if values.shape[1] != self.width:
                return False
            np.copyto(features, values, casting="unsafe")  # = _result's astype(float32)
            if labels is not None:
                column = self._values(self.lkind, block[:, self.lstart:self.lstart + self.llen])[:, 0]
                labels[:] = column.astype(np.float64).astype(np.float32)  # as _result: even NaN bits agree
        except _Unsupported:
            return False
        return True


class FileChanged(Exception):
    """The file has fewer or more frames than when it was listed."""


def iter_blocks(stream: BinaryIO, stride: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """The ``rows`` frames of ``stride`` bytes of the file open as ``stream`` at its start, a block at a time:
    (first row, (m, stride) uint8 view of one reused buffer, valid until the next block). A file that is
    still downloading (``fastfile.follow``) yields its blocks as they arrive. ``FileChanged`` when it ends
    early or goes on past ``rows`` frames; OSError if it cannot be read."""
    per_block = max(1, min(rows, BLOCK_BYTES // stride))
    buffer = np.empty(per_block * stride, dtype=np.uint8)
    with stream:
        for start in range(0, rows, per_block):
            count = min(per_block, rows - start)
            view = memoryview(buffer)[:count * stride]
            got = 0
            while got < len(view):
                n = stream.readinto(view[got:])
                if not n:
                    raise FileChanged
                got += n
            yield start, buffer[:count * stride].reshape(count, stride)
        if stream.read(1):
            raise FileChanged


def read_file_into(stream: BinaryIO, template: FileTemplate, features: np.ndarray,
                   labels: np.ndarray | None) -> bool:
    """Decode the dense file open as ``stream`` at its start (whose record 0 gave ``template``; its size a
    whole number of frames, ``len(features)`` of them) straight into ``features`` / ``labels``, a block at a
    time (``iter_blocks``): no copy of the file's bytes and no per-file array. The values are those
    ``decode_dense`` gives for the file's bytes. False when a record differs from record 0 or the file changed
    size (the caller decodes the file the general way); OSError if it cannot be read."""
    try:
        for start, block in iter_blocks(stream, template.stride, len(features)):
            end = start + len(block)
            if not template.fill(block, features[start:end], None if labels is None else labels[start:end]):
                return False
    except FileChanged:
        return False
    return True
