"""Batch-transform data handling (contracts §7): split objects into records, pack requests, filter and join.

Pure functions over bytes (or iterables of byte chunks), no I/O, so every rule is testable on its own:

* ``split_records``: SplitType ``None`` (the whole object), ``Line``, ``RecordIO`` (dmlc frames; a split
  record's parts stay together) and ``TFRecord`` -> ``(number, record)`` with 1-based line/record numbers.
* ``make_batches``: BatchStrategy ``SingleRecord`` / ``MultiRecord`` (as many records as fit in
  MaxPayloadInMB; batches never span objects). ``line_batches`` is the same for ``Line`` without any
  per-record work: it cuts the object at newlines, so no Python object per line is made;
  ``stream_line_batches`` cuts the same batches from an object that is still arriving in chunks.
* ``JsonPath``: the documented subset (``$``, ``.name``, ``*``, ``['a','b']``, ``[1,3,-1]``, ``[2:5]``);
  ``DataProcessor``: InputFilter / JoinSource / OutputFilter for JSON, JSON Lines and CSV records.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024
_RECORDIO_MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_LENGTH_MASK = (1 << 29) - 1


class DataError(ValueError):
    """The input cannot be split or processed; the message names the record (the caller adds the file)."""


# ------------------------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """One request: its body and the records it carries (numbers are 1-based lines or records)."""

    body: bytes
    first: int
    count: int
    numbers: list[int] = field(default_factory=list)  # record numbers when not contiguous (Line skips blanks)
    sources: list[Any] | None = None  # parsed input records, kept for JoinSource=Input

    def label(self) -> str:
        last = self.numbers[-1] if self.numbers else self.first + self.count - 1
        return f"{self.first}" if last == self.first else f"{self.first}-{last}"


def split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines (without their terminator) and their 1-based line numbers."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip():
            yield number, line


def _recordio_frames(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(start, end incl. padding, flag) of every dmlc RecordIO frame."""
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < 8:
            raise DataError(f"truncated RecordIO header at byte {offset}")
        magic, lrec = _HEADER.unpack_from(data, offset)
        if magic != _RECORDIO_MAGIC:
            raise DataError(f"bad RecordIO magic 0x{magic:08X} at byte {offset}")
        length = lrec & _LENGTH_MASK
        end = offset + 8 + length + (-length & 3)
        if offset + 8 + length > size:
            raise DataError(f"truncated RecordIO record at byte {offset}")
        yield offset, min(end, size), lrec >> 29
        offset = end


def split_recordio(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Whole framed records (a record split into parts, flags 1..3, stays one record), padding kept."""
    number, start = 0, None
    for begin, end, flag in _recordio_frames(data):
        if flag in (0, 1):
            start = begin
        if flag in (0, 3):
            number += 1
            yield number, data[start:end]
            start = None
        elif start is None:
            raise DataError(f"RecordIO part without a first part at byte {begin}")
    if start is not None:
        raise DataError("RecordIO data ends inside a split record")


def split_tfrecord(data: bytes) -> Iterator[tuple[int, bytes]]:
    """TFRecord frames: uint64 length, uint32 length CRC, data, uint32 data CRC (CRCs not checked)."""
    offset, number, size = 0, 0, len(data)
    while offset < size:
        if size - offset < 12:
            raise DataError(f"truncated TFRecord header at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        end = offset + 12 + length + 4
        if end > size:
            raise DataError(f"truncated TFRecord record at byte {offset}")
        number += 1
        yield number, data[offset:end]
        offset = end


def split_records(data: bytes, split_type: str) -> Iterator[tuple[int, bytes]]:
    if split_type == "Line":
        return split_lines(data)
    if split_type == "RecordIO":
        return split_recordio(data)
    if split_type == "TFRecord":
        return split_tfrecord(data)
    return iter([(1, data)] if data else [])


def _strip_recordio_padding(record: bytes) -> bytes:
    """SingleRecord sends a binary record without its trailing padding (MultiRecord keeps it)."""
    last_start = 0
    for begin, _end, _flag in _recordio_frames(record):
        last_start = begin
    (_, lrec) = _HEADER.unpack_from(record, last_start)
    return record[:last_start + 8 + (lrec & _LENGTH_MASK)]


def _too_big(number: int, size: int, limit: int, noun: str) -> DataError:
    return DataError(f"{noun} {number} is {size / MB:.2f} MB, more than MaxPayloadInMB ({limit // MB} MB); "
                     f"raise MaxPayloadInMB or split the input into smaller records")


def make_batches(records: Iterator[tuple[int, bytes, Any]], split_type: str, strategy: str, limit: int,
                 sources: bool = False) -> Iterator[Batch]:
    """Pack ``(number, record, source)`` into request bodies. ``limit`` is bytes (0 = unlimited); with
    ``sources`` each batch keeps its records' sources (the parsed inputs, for JoinSource=Input)."""
    noun = "line" if split_type == "Line" else "record"
    sep = b"\n" if split_type == "Line" else b""
    parts: list[bytes] = []
    numbers: list[int] = []
    kept: list[Any] = []
    size = 0
    for number, record, source in records:
        if split_type == "RecordIO" and strategy == "SingleRecord":
            record = _strip_recordio_padding(record)
        cost = len(record) + len(sep)
        if limit and cost > limit:
            raise _too_big(number, cost, limit, noun if split_type != "None" else "the object of")
        if parts and (strategy == "SingleRecord" or (limit and size + cost > limit)):
            yield Batch(sep.join(parts) + sep, numbers[0], len(numbers), numbers, kept if sources else None)
            parts, numbers, kept, size = [], [], [], 0
        parts.append(record)
        numbers.append(number)
        if sources:
            kept.append(source)
        size += cost
    if parts:
        yield Batch(sep.join(parts) + sep, numbers[0], len(numbers), numbers, kept if sources else None)


def line_batches(data: bytes, limit: int) -> Iterator[Batch]:
    """MultiRecord over lines without per-record work: cut at the last newline that fits in ``limit``."""
    start, size, line = 0, len(data), 1
    while start < size:
        end = size if not limit or size - start <= limit else data.rfind(b"\n", start, start + limit) + 1
        if end <= start:  # one line longer than the limit
            nl = data.find(b"\n", start)
            length = (nl if nl >= 0 else size) - start
            raise _too_big(line, length, limit, "line")
        body = data[start:end]
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        if body.strip():
            if not body.endswith(b"\n"):
                body += b"\n"
            yield Batch(body, line, lines)
        line += lines
        start = end


def stream_line_batches(chunks: Iterable[bytes], limit: int) -> Iterator[Batch]:
    """``line_batches`` over an object that arrives in chunks: the same batches, each yielded as soon as the
    bytes it needs are in (a batch is cut once more than ``limit`` bytes are buffered, or at the end), so
    requests start while the object is still downloading and at most ~``limit`` + one chunk is held."""
    buf = bytearray()
    line = 1
    done = False
    it = iter(chunks)
    while not done:
        chunk = next(it, None)
        if chunk is None:
            done = True
        else:
            buf += chunk
        while buf and (done or (limit and len(buf) > limit)):
            end = len(buf) if not limit or len(buf) <= limit else buf.rfind(b"\n", 0, limit) + 1
            if end <= 0:  # one line longer than the limit: report its full length once it is known
                nl = buf.find(b"\n")
                if nl < 0 and not done:
                    break
                raise _too_big(line, nl if nl >= 0 else len(buf), limit, "line")
            with memoryview(buf) as view:  # one copy (bytes(buf[:end]) makes two)
                body = view[:end].tobytes()
            del buf[:end]
            lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
            if body.strip():
                if not body.endswith(b"\n"):
                    body += b"\n"
                yield Batch(body, line, lines)
            line += lines


def records_of(batch: Batch) -> list[tuple[int, bytes]]:
    """The (number, record) pairs of a Line batch (to locate a failing record)."""
    lines = batch.body.split(b"\n")
    if batch.numbers:
        return [(n, ln) for n, ln in zip(batch.numbers, (x for x in lines if x.strip()), strict=False)]
    return [(batch.first + i, ln) for i, ln in enumerate(lines) if ln.strip()]


# ------------------------------------------------------------------------------------------------ JSONPath
_TOKEN = re.compile(r"""\.(?P<name>[A-Za-z_][\w-]*)|\.\*|\[\*\]|\[(?P<bracket>[^\]]*)\]""")


@dataclass(frozen=True)
class Step:
    kind: str  # name | names | index | indexes | slice | all
    names: tuple[str, ...] = ()
    indexes: tuple[int, ...] = ()
    start: int | None = None
    stop: int | None = None


def _bracket(text: str, expr: str) -> Step:
    text = text.strip()
    if text == "*":
        return Step("all")
    if text.startswith(("'", '"')):
        names = re.findall(r"""\s*(?:'([^']*)'|"([^"]*)")\s*(?:,|$)""", text)
        joined = ",".join(f"'{a or b}'" for a, b in names)
        if not names or joined.replace(" ", "") != re.sub(r"\s+", "", text).replace('"', "'"):
            raise ValueError(f"JSONPath '{expr}': bad name list [{text}]")
        values = tuple(a or b for a, b in names)
        return Step("name", values) if len(values) == 1 else Step("names", values)
    if ":" in text:
        lo, _, hi = text.partition(":")
        try:
            return Step("slice", start=int(lo) if lo.strip() else None, stop=int(hi) if hi.strip() else None)
        except ValueError:
            raise ValueError(f"JSONPath '{expr}': bad slice [{text}]") from None
    try:
        values = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"JSONPath '{expr}': bad index list [{text}] (use [1,3,5], [2:5] or ['a','b'])") from None
    return Step("index", indexes=values) if len(values) == 1 else Step("indexes", indexes=values)


class JsonPath:
    """The JSONPath subset SageMaker's DataProcessing accepts; steps apply one after another."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        text = expr.strip()
        if not text.startswith("$"):
            raise ValueError(f"JSONPath '{expr}' must start with '$'")
        steps: list[Step] = []
        pos = 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"JSONPath '{expr}': cannot parse '{text[pos:]}' (supported: $, .name, *, "
                                 "['a','b'], [1,3,5], [2:5])")
            if m.group("name"):
                steps.append(Step("name", (m.group("name"),)))
            elif m.group("bracket") is not None:
                steps.append(_bracket(m.group("bracket"), expr))
            else:
                steps.append(Step("all"))
            pos = m.end()
        self.steps = steps

    @property
    def identity(self) -> bool:
        return not self.steps

    @property
    def index_only(self) -> bool:
        return all(s.kind in ("index", "indexes", "slice", "all") for s in self.steps)

    def apply(self, value: Any) -> Any:
        for step in self.steps:
            value = _apply_step(value, step, self.expr)
        return value


def _apply_step(value: Any, step: Step, expr: str) -> Any:
    try:
        if step.kind == "name":
            return value[step.names[0]]
        if step.kind == "names":
            return {n: value[n] for n in step.names}
        if step.kind == "all":
            return list(value.values()) if isinstance(value, dict) else list(value)
        if not isinstance(value, list):
            raise DataError(f"JSONPath '{expr}' indexes a {type(value).__name__}, not an array")
        if step.kind == "index":
            return value[step.indexes[0]]
        if step.kind == "indexes":
            return [value[i] for i in step.indexes]
        return value[step.start:step.stop]
    except (KeyError, IndexError, TypeError) as exc:
        raise DataError(f"JSONPath '{expr}' does not match the record ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------------- data formats
def format_of(content_type: str | None) -> str | None:
    """``json`` (JSON and JSON Lines), ``csv``, or None (neither)."""
    base = (content_type or "").split(";")[0].strip().lower()
    if "json" in base:
        return "json"
    if "csv" in base:
        return "csv"
    return None


def csv_fields(line: bytes | str) -> list[str]:
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    rows = list(csv.reader(io.StringIO(text.strip("\r\n"))))
    return rows[0] if rows else []


def csv_line(values: Any) -> str:
    if not isinstance(values, list):
        values = [values]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(
        [v if isinstance(v, str) else json.dumps(v) for v in values])
    return buf.getvalue()


def parse_record(record: bytes, fmt: str) -> Any:
    if fmt == "csv":
        return csv_fields(record)
    try:
        return json.loads(record)
    except ValueError as exc:
        raise DataError(f"not valid JSON: {exc}") from None


def encode_record(value: Any, fmt: str) -> bytes:
    if fmt == "csv":
        return csv_line(value).encode()
    return json.dumps(value).encode()


def _csv_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_outputs(body: bytes, content_type: str | None, count: int) -> tuple[list[Any], str]:
    """A response -> one output value per input record, and the output's format (json | csv | text)."""
    fmt = format_of(content_type) or "text"
    text = body.decode("utf-8", errors="replace")
    if fmt == "json":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        try:
            if len(lines) == count and count > 1:
                return [json.loads(ln) for ln in lines], fmt
            value = json.loads(text)
        except ValueError as exc:
            raise DataError(f"the model's JSON response cannot be parsed: {exc}") from None
        if isinstance(value, list) and len(value) == count and count > 1:
            return value, fmt
        if isinstance(value, dict) and count > 1:
            lists = [v for v in value.values() if isinstance(v, list) and len(v) == count]
            if len(lists) == 1:
                return lists[0], fmt
        if count == 1:
            return [value], fmt
        raise DataError(f"the model answered a JSON document that does not hold {count} outputs, one per "
                        f"input record (a list, JSON Lines, or an object with one list)")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != count:
        if count == 1:
            return [text.strip() if fmt == "text" else [_csv_value(f) for f in csv_fields(text)]], fmt
        raise DataError(f"the model answered {len(lines)} lines for {count} input records")
    if fmt == "csv":
        return [[_csv_value(f) for f in csv_fields(ln)] for ln in lines], fmt
    return lines, fmt


class DataProcessor:
    """InputFilter / JoinSource / OutputFilter for one job."""

    def __init__(self, config: dict[str, Any] | None, content_type: str | None) -> None:
        config = config or {}
        self.input_filter = JsonPath(config.get("InputFilter") or "$")
        self.output_filter = JsonPath(config.get("OutputFilter") or "$")
        self.join = (config.get("JoinSource") or "None") == "Input"
        self.fmt = format_of(content_type)

    @property
    def per_record_input(self) -> bool:
        return not self.input_filter.identity or self.join

    @property
    def per_record_output(self) -> bool:
        return self.join or not self.output_filter.identity

    def record_format(self, record: bytes) -> str:
        if self.fmt:
            return self.fmt
        return "json" if record.lstrip()[:1] in (b"{", b"[", b'"') else "csv"

    def filter_input(self, record: bytes) -> tuple[bytes, Any]:
        """(what goes to the model, the parsed input kept for a join)."""
        fmt = self.record_format(record)
        value = parse_record(record, fmt)
        if self.input_filter.identity:
            return record, value
        return encode_record(self.input_filter.apply(value), fmt), value

    def outputs(self, batch: Batch, body: bytes, content_type: str | None) -> list[bytes]:
        """One written record per input record: the joined (or bare) output after OutputFilter."""
        values, out_fmt = split_outputs(body, content_type, batch.count)
        written = []
        for i, out in enumerate(values):
            if self.join:
                source = (batch.sources or [])[i]
                fmt = "json" if not isinstance(source, list) or self.fmt == "json" else "csv"
                joined = _join(source, out, fmt)
                written.append(encode_record(self.output_filter.apply(joined), fmt))
            else:
                fmt = "csv" if out_fmt == "csv" else "json"
                if out_fmt == "text":
                    value = out
                    written.append(str(self.output_filter.apply(value)).encode() if not
                                   self.output_filter.identity else str(value).encode())
                    continue
                written.append(encode_record(self.output_filter.apply(out), fmt))
        return written


def _join(source: Any, output: Any, fmt: str) -> Any:
    if fmt == "csv":
        out = output if isinstance(output, list) else [output]
        return list(source) + out
    if isinstance(source, dict):
        return {**source, "SageMakerOutput": output}
    return {"SageMakerInput": source, "SageMakerOutput": output}


def check_data_processing(config: dict[str, Any] | None, content_type: str | None) -> None:
    """What CreateTransformJob refuses: unparsable paths, name paths on CSV, unsupported content types."""
    if not config:
        return
    paths = {k: config.get(k) for k in ("InputFilter", "OutputFilter") if config.get(k)}
    parsed = {}
    for key, expr in paths.items():
        try:
            parsed[key] = JsonPath(expr)
        except ValueError as exc:
            raise ValueError(f"DataProcessing.{key}: {exc}") from None
    used = any(not p.identity for p in parsed.values()) or config.get("JoinSource") == "Input"
    fmt = format_of(content_type)
    if used and content_type and fmt is None:
        raise ValueError(f"DataProcessing works on JSON, JSON Lines and CSV input only; TransformInput."
                         f"ContentType is '{content_type}'.")
    if fmt == "csv" and "InputFilter" in parsed and not parsed["InputFilter"].index_only:
        raise ValueError(f"DataProcessing.InputFilter '{paths['InputFilter']}': CSV input allows index paths "
                         "only ($[1:], $[0,2], ...)")
