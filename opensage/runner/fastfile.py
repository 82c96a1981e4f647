"""FastFile channels read while they download, for readers that know how to follow them.

SageMaker's FastFile mode shows a channel's files at once and lets reads block until their bytes arrive. A
reader that only reads sequentially can do the same here without a file system of our own:

* ``StreamedChannel.prepare()`` (the agent, before the algorithm starts) creates every file of the channel,
  empty, opens it for writing (never through a link: the job owns the directory afterwards) and creates the
  marker directory ``<data_dir>/.opensage-streams/<channel>/``;
* ``start()`` downloads the objects into those files in the order the reader reads them
  (``reading_order``), ``RANGES`` GETs at a time from one pool (an uncompressed object of at least
  ``RANGED_MIN`` bytes as ranged GETs, each written at its offset with ``os.pwrite`` through the
  held descriptor: one GET is slower than the parse; ``PART``-sized, in order, so the complete prefix grows
  at the download's pace), and after each object writes the marker ``<rel>.done``
  (its final size); the first failure writes ``<rel>.failed`` (the reason) for every file not yet complete
  and sets ``error``, which the agent turns into the job's FailureReason as for a broken Pipe-mode stream;
* ``follow(path)`` (the algorithm) reads a file as it grows: at its current end it waits for more bytes or
  its marker; it ends at the size the ``.done`` marker gives and raises ``ChannelError`` with the reason of a
  failed download. A file filled by ranges has holes until it is complete, so ``prepare()`` marks it
  ``<rel>.ranged`` and the feeder publishes ``<rel>.upto``, the length of its complete prefix, as it grows
  (every ``UPTO_STEP`` bytes): ``follow`` reads a ranged file only up to that.

A file that is not being streamed opens as a plain file, so a reader can call ``follow`` unconditionally.
Only for readers that follow (the built-in algorithms, through ``algorithms/content.py``): any other reader of
a streamed channel would see a file that is still growing. For them File mode streams too
(``FILE_MODE_CHANNELS``): SageMaker's File mode promises the data on disk when the algorithm starts, which a
reader that follows cannot tell from a download still under way.
"""

from __future__ import annotations

import io
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from opensage.objects.base import ObjectNotFound, ObjectStore
from opensage.runner.channels import ChannelError, ChannelPlan, ObjectRef, check_channel_name
from opensage.runner.transfers import describe_s3_error

MARKERS = ".opensage-streams"
MAX_FILES = 256  # one descriptor per file is held from prepare(); larger channels are downloaded first
CHUNK = 1 << 20
POLL_SECONDS = 0.002
GZIP_WBITS = 16 + zlib.MAX_WBITS
RANGES = 8  # parallel ranged GETs per object (measured: 8 ranges 32.2 s vs one GET 43.7 s for 371 MB)
RANGED_MIN = 8 << 20  # below this one GET is as fast
PART = 8 << 20  # a ranged GET's size: RANGES of them are in flight, in the reader's order
UPTO_STEP = 4 << 20  # how far a ranged file's complete prefix grows between two ``.upto`` markers


# File-mode channels the built-in algorithms read only sequentially and whole through algorithms/content.py
# (every built-in reads 'train', 'validation' and 'test' so — formats.read_training_channel — or refuses the
# channel before reading it; NTM opens its 'auxiliary' vocab.txt as a file and XGBoost ignores channels beyond
# 'train' and 'validation'): streamed, File mode looks the same to them, so these are streamed like FastFile ones
# (prepare_channels(stream_fastfile=True)). 'test' streamed too: its download overlaps the reading of 'train'
# instead of delaying the algorithm's start (linear-learner's 2 test shards: ~70 ms through `opensage up`).
FILE_MODE_CHANNELS = frozenset({"train", "validation", "test"})


def markers_dir(data_dir: Path, channel: str) -> Path:
    return data_dir / MARKERS / channel


def can_stream(plan: ChannelPlan) -> bool:
    """Objects (not an augmented manifest), few enough to hold a descriptor each."""
    return plan.manifest_lines is None and 0 < len(plan.objects) <= MAX_FILES


def reading_order(rel: str) -> tuple[tuple[int, str], ...]:
    """Sort key of a channel file in the order ``content.list_files`` reads (``os.walk`` top-down, sorted):
    a directory's files before its subdirectories. S3 key order differs ("b.csv" after "a/c.csv")."""
    parts = PurePosixPath(rel).parts
    return (*((1, d) for d in parts[:-1]), (0, parts[-1]))


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return pos


class _Download:
    """One object of a streamed channel: one whole GET (``size`` None) or ranged ones of at most ``PART``."""

    def __init__(self, ref: ObjectRef, out: BinaryIO, size: int | None) -> None:
        self.ref, self.out, self.size = ref, out, size
        if size is None:
            self.parts: list[tuple[int, int | None]] = [(0, None)]
        else:
            # Parts of at most PART bytes, fetched in order by the pool's RANGES workers: the complete prefix
            # (what the reader may read) then grows at the whole download's pace. RANGES equal ranges grew it at
            # one range's pace: the reader got the second eighth only when nearly everything had arrived.
            step = min(PART, -(-size // RANGES))
            self.parts = [(start, min(size, start + step)) for start in range(0, size, step)]
        self.reached = [start for start, _ in self.parts]  # how far each range has written
        self.left = len(self.parts)
        self.written = 0  # a whole GET: bytes written (decompressed)
        self.published = 0  # the last ``.upto``
        self.done = False

    def prefix(self) -> int:
        """Bytes complete from the start: whole ranges, then the first one still filling."""
        prefix = 0
        for (_, end), pos in zip(self.parts, self.reached, strict=True):
            prefix = pos
            if pos < (end or 0):
                break
        return prefix


class StreamedChannel(threading.Thread):
    """The feeder of one streamed FastFile channel (the ``PipeFeeder`` interface: prepare/start/stop/error)."""

    def __init__(self, store: ObjectStore, plan: ChannelPlan, data_dir: Path) -> None:
        super().__init__(name=f"fastfile-{plan.channel.name}", daemon=True)
        self.store, self.plan, self.data_dir = store, plan, data_dir
        self.channel = check_channel_name(plan.channel.name)
        self.error: str | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()  # download state and marker writes
        self._files: list[tuple[ObjectRef, BinaryIO]] = []
        self._sizes: dict[str, int] = {}  # rel -> size of the objects fetched by ranges
        self._markers_fd: int | None = None

    def prepare(self) -> None:
        root = self.data_dir / self.channel
        root.mkdir(parents=True, exist_ok=True)
        marks = markers_dir(self.data_dir, self.channel)
        marks.mkdir(parents=True, exist_ok=True)
        self._markers_fd = os.open(marks, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        for ref in self.plan.objects:
            parts = PurePosixPath(ref.rel).parts
            if not parts or ".." in parts:
                raise ChannelError(f"ClientError: object path '{ref.rel}' of channel '{self.channel}' is not a "
                                   "safe local path.")
            dest = root.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            os.fchmod(fd, 0o644)  # readable by the job's user, whatever the umask
            self._files.append((ref, os.fdopen(fd, "wb", buffering=0)))
        if self.plan.channel.compression != "Gzip" and hasattr(self.store, "open_range"):
            for ref, out in self._files:
                # The listing's size where there was one: a HEAD per object cost ~8 ms through the S3 proxy,
                # before the job could start (a channel of 200 files: 1.6 s).
                size = ref.size if ref.size is not None else self.store.size(ref.bucket, ref.key)  # type: ignore[attr-defined]
                if size >= RANGED_MIN:
                    self._sizes[ref.rel] = size
                    self._mark(ref, "ranged", str(size))  # before the job starts: follow() sees it
                    os.ftruncate(out.fileno(), size)  # ranges are written at their offsets

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        # One pool for every object, fed in the order the reader reads (content.list_files): a large object's
        # ranges, then the next objects, so a channel of many small files downloads several at once too.
        downloads = [_Download(ref, out, self._sizes.get(ref.rel))
                     for ref, out in sorted(self._files, key=lambda f: reading_order(f[0].rel))]
        try:
            with ThreadPoolExecutor(RANGES, thread_name_prefix=f"fastfile-{self.channel}") as pool:
                for dl in downloads:
                    for index in range(len(dl.parts)):
                        pool.submit(self._part, dl, index, downloads)
        finally:
            for _, out in self._files:
                out.close()
            if self._markers_fd is not None:
                os.close(self._markers_fd)

    def _part(self, dl: _Download, index: int, downloads: list[_Download]) -> None:
        if self._halt.is_set():
            return
        try:
            if dl.size is None:
                self._download_whole(dl)
            else:
                self._download_range(dl, index)
            with self._lock:
                dl.left -= 1
                if dl.left == 0 and not self._halt.is_set():
                    self._mark(dl.ref, "done", str(dl.size if dl.size is not None else dl.written))
                    dl.done = True
        except Exception as exc:  # noqa: BLE001 - worded for the user, told to the readers and the job
            self._fail(dl.ref, exc, downloads)

    def _fail(self, ref: ObjectRef, exc: Exception, downloads: list[_Download]) -> None:
        """The first failure is the job's; every file not yet complete fails with it (its reader would
        otherwise wait for bytes that never come)."""
        with self._lock:
            if self.error is not None:
                return
            self.error = self._reason(ref, exc)
            self._halt.set()
            for dl in downloads:
                if not dl.done:
                    self._mark(dl.ref, "failed", self.error)

    def _download_whole(self, dl: _Download) -> None:
        fd = dl.out.fileno()
        stream = self.store.open_read(dl.ref.bucket, dl.ref.key)
        decomp = zlib.decompressobj(GZIP_WBITS) if self.plan.channel.compression == "Gzip" else None
        try:
            while not self._halt.is_set():
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                if decomp is not None:
                    chunk = decomp.decompress(chunk)
                dl.written = _pwrite_all(fd, chunk, dl.written)
        finally:
            stream.close()
        if decomp is not None and not decomp.eof and not self._halt.is_set():
            raise EOFError("the gzip stream ends before its end-of-stream marker (truncated)")

    def _download_range(self, dl: _Download, index: int) -> None:
        """One ranged GET of a large object, written at its own offset through the held
        descriptor; the file's complete prefix is published (``.upto``) as it grows."""
        start, end = dl.parts[index]
        assert end is not None and dl.size is not None
        stream = self.store.open_range(dl.ref.bucket, dl.ref.key, start, end)  # type: ignore[attr-defined]
        pos = start
        try:
            while pos < end and not self._halt.is_set():
                chunk = stream.read(min(CHUNK, end - pos))
                if not chunk:
                    break
                pos = _pwrite_all(dl.out.fileno(), chunk, pos)
                with self._lock:
                    dl.reached[index] = pos
                    prefix = dl.prefix()
                    if prefix - dl.published >= UPTO_STEP and prefix < dl.size:
                        dl.published = prefix
                        self._mark(dl.ref, "upto", str(prefix))
        finally:
            stream.close()
        if pos < end and not self._halt.is_set():
            raise ConnectionError(f"the object ended at byte {pos} of {dl.size} while it was read")

    def _reason(self, ref: ObjectRef, exc: Exception) -> str:
        uri = f"s3://{ref.bucket}/{ref.key}"
        if isinstance(exc, ObjectNotFound):
            return f"ClientError: Data download failed: object {uri} of channel '{self.channel}' does not exist."
        if isinstance(exc, (zlib.error, EOFError)):
            return (f"ClientError: could not decompress {uri} of input '{self.channel}' (S3CompressionType "
                    f"Gzip): {exc}")
        return f"ClientError: Could not download {uri} for channel '{self.channel}': {describe_s3_error(exc, uri)}."

    def _mark(self, ref: ObjectRef, kind: str, text: str) -> None:
        name = _marker(ref.rel, kind)
        # Written, then renamed: a reader never sees a marker without its content.
        tmp = f".tmp-{threading.get_ident()}-{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=self._markers_fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, name, src_dir_fd=self._markers_fd, dst_dir_fd=self._markers_fd)


def _marker(rel: str, kind: str) -> str:
    """The name of a channel file's ``kind`` marker (done / failed / upto / ranged) in the channel's marker
    directory: the file's path in the channel, '/' spelled %2F, then ``.kind``."""
    return rel.replace("/", "%2F") + "." + kind


class _Follower(io.RawIOBase):
    def __init__(self, path: Path, marks: Path, rel: str) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self._done = marks / _marker(rel, "done")
        self._failed = marks / _marker(rel, "failed")
        self._size: int | None = None
        self._pos = 0
        # A file filled by ranges has holes until it is complete: read only its published complete prefix.
        self._upto = marks / _marker(rel, "upto")
        self._ranged = (marks / _marker(rel, "ranged")).exists()
        self._limit = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._size is not None and self._pos >= self._size:
                return 0
            if self._ranged and self._size is None:
                if self._pos >= self._limit:
                    self._limit = self._published()
                if self._pos < self._limit:
                    n = self._file.readinto(memoryview(buffer)[:self._limit - self._pos])
                    self._pos += n
                    return n
                n = 0
            else:
                n = self._file.readinto(buffer)
            if n:
                self._pos += n
                return n
            if self._size is None and self._done.exists():
                self._size = int(self._done.read_text())
                continue
            if self._failed.exists():
                raise ChannelError(self._failed.read_text())
            time.sleep(POLL_SECONDS)

    def _published(self) -> int:
        try:
            return int(self._upto.read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def close(self) -> None:
        self._file.close()
        super().close()


def wait_complete(data_dir: Path, channel: str) -> None:
    """Return once every file of a streamed channel has downloaded (at once for one that is not streamed);
    ``ChannelError`` with the reason if a download failed. For readers that need whole files (seek, size):
    the download still overlaps the algorithm's start-up and whatever it does before reading."""
    marks = markers_dir(data_dir, channel)
    root = data_dir / channel
    if not marks.is_dir() or not root.is_dir():
        return
    pending = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    while pending:
        for rel in list(pending):
            if (marks / _marker(rel, "done")).exists():
                pending.discard(rel)
            elif (marks / _marker(rel, "failed")).exists():
                raise ChannelError((marks / _marker(rel, "failed")).read_text())
        if pending:
            time.sleep(POLL_SECONDS * 5)


def final_size(path: Path, data_dir: Path, channel: str) -> int:
    """The size ``path`` has once downloaded: known at once for a file filled by ranges (its ``.ranged``
    marker) or one not streamed; otherwise waits for its ``.done`` marker (a whole GET: below ``RANGED_MIN``
    or compressed). ``ChannelError`` with the reason if its download failed."""
    marks = markers_dir(data_dir, channel)
    if not marks.is_dir():
        return path.stat().st_size
    rel = path.relative_to(data_dir / channel).as_posix()
    for kind in ("ranged", "done"):
        try:
            return int((marks / _marker(rel, kind)).read_text())
        except (FileNotFoundError, ValueError):
            pass
    while True:
        try:
            return int((marks / _marker(rel, "done")).read_text())
        except (FileNotFoundError, ValueError):
            pass
        if (marks / _marker(rel, "failed")).exists():
            raise ChannelError((marks / _marker(rel, "failed")).read_text())
        time.sleep(POLL_SECONDS * 5)


def follow(path: Path, data_dir: Path, channel: str) -> BinaryIO:
    """A sequential reader of a channel file: streamed ones end when their download has (see the module)."""
    marks = markers_dir(data_dir, channel)
    if not marks.is_dir():
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    rel = path.relative_to(data_dir / channel).as_posix()
    return io.BufferedReader(_Follower(path, marks, rel), buffer_size=CHUNK)  # type: ignore[return-value]
