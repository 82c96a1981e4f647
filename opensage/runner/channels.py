"""Input channels for one host: File / FastFile downloads and Pipe-mode FIFOs.

What SageMaker does on an instance: resolve a channel's S3 data source (S3Prefix, ManifestFile,
AugmentedManifestFile) to objects, keep this host's share (ShardedByS3Key: sorted keys, every
``host_count``-th starting at ``host_index``), then either download them under
``input/data/<channel>/`` (File) or stream them through FIFOs ``input/data/<channel>_<epoch>`` (Pipe).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import random
import shutil
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner.jobspec import ChannelSpec
from opensage.runner.transfers import describe_s3_error

DOWNLOAD_WORKERS = 8
RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_CHUNK = 1 << 20


class ChannelError(Exception):
    """A channel cannot be served; the message is the job's FailureReason."""


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    rel: str  # path under input/data/<channel>/
    size: int | None = None  # from the listing (None: named by a manifest, not listed)


@dataclass
class ChannelPlan:
    """What one host does for one channel."""

    channel: ChannelSpec
    objects: list[ObjectRef] = field(default_factory=list)
    manifest_lines: list[dict[str, Any]] | None = None  # AugmentedManifestFile records for this host
    manifest_name: str = ""


# ----------------------------------------------------------------------------------------- resolving


def shard(items: list[Any], host_index: int, host_count: int, distribution: str) -> list[Any]:
    """ShardedByS3Key: every host_count-th item starting at host_index; FullyReplicated: all."""
    if distribution == "ShardedByS3Key" and host_count > 1:
        return items[host_index::host_count]
    return list(items)


def _relative_name(prefix: str, key: str) -> str:
    """The local path of ``key`` under the channel dir, relative to the S3 prefix."""
    if key == prefix:
        return PurePosixPath(key).name
    rest = key[len(prefix):]
    if prefix == "" or prefix.endswith("/") or rest.startswith("/"):
        return rest.lstrip("/")
    # The prefix stops inside a name ("data/tr" matching "data/train.csv"): keep the whole name.
    parent = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return key[len(parent):]


def _list_objects(store: ObjectStore, channel: str, uri: str) -> list[ObjectRef]:
    bucket, prefix = split_s3_uri(uri)
    try:
        infos = list(store.list(bucket, prefix))
    except ObjectNotFound as exc:
        raise ChannelError(
            f"ClientError: Data download failed: bucket '{bucket}' of S3 URL \"{uri}\" given in input data "
            f"source for channel '{channel}' does not exist. Create the bucket or fix the channel's S3Uri."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - botocore's text alone does not say what to fix
        raise ChannelError(f"ClientError: Could not list S3 URL \"{uri}\" given in input data source for channel "
                           f"'{channel}': {describe_s3_error(exc, uri)}.") from exc
    refs = [ObjectRef(bucket, i.key, _relative_name(prefix, i.key), i.size) for i in infos
            if not i.key.endswith("/")]
    if not refs:
        raise ChannelError(
            f"ClientError: No S3 objects found under S3 URL \"{uri}\" given in input data source for channel "
            f"'{channel}'. Please ensure that the bucket exists and that objects exist under that S3 prefix."
        )
    return sorted(refs, key=lambda r: r.key)


def _read_manifest_object(store: ObjectStore, channel: str, uri: str) -> bytes:
    bucket, key = split_s3_uri(uri)
    try:
        return store.get_bytes(bucket, key)
    except ObjectNotFound as exc:
        raise ChannelError(
            f"ClientError: Data download failed: the manifest file \"{uri}\" of channel '{channel}' "
            f"does not exist (or its bucket does not). Fix the channel's S3Uri."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - worded for the user
        raise ChannelError(f"ClientError: Could not download the manifest file \"{uri}\" of channel "
                           f"'{channel}': {describe_s3_error(exc, uri)}.") from exc


def _manifest_refs(store: ObjectStore, channel: str, uri: str) -> list[ObjectRef]:
    raw = _read_manifest_object(store, channel, uri)
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ChannelError(
            f"ClientError: the manifest file \"{uri}\" of channel '{channel}' is not valid JSON: {exc}. "
            'Expected [{"prefix": "s3://bucket/prefix/"}, "relative/key", ...].'
        ) from exc
    if (
        not isinstance(entries, list)
        or not entries
        or not isinstance(entries[0], dict)
        or not isinstance(entries[0].get("prefix"), str)
        or not all(isinstance(e, str) for e in entries[1:])
    ):
        raise ChannelError(
            f"ClientError: the manifest file \"{uri}\" of channel '{channel}' must be a JSON array whose first "
            'element is {"prefix": "s3://bucket/prefix/"} followed by relative keys (strings).'
        )
    bucket, prefix = split_s3_uri(entries[0]["prefix"])
    refs = [ObjectRef(bucket, prefix + rel, rel.lstrip("/")) for rel in entries[1:]]
    if not refs:
        raise ChannelError(f"ClientError: the manifest file \"{uri}\" of channel '{channel}' lists no objects.")
    return sorted(refs, key=lambda r: r.key)


def _augmented_lines(store: ObjectStore, spec: ChannelSpec) -> list[dict[str, Any]]:
    raw = _read_manifest_object(store, spec.name, spec.s3_uri)
    lines: list[dict[str, Any]] = []
    for number, text in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise ChannelError(
                f"ClientError: line {number} of the augmented manifest \"{spec.s3_uri}\" (channel "
                f"'{spec.name}') is not valid JSON: {exc}"
            ) from exc
        if not isinstance(record, dict):
            raise ChannelError(
                f"ClientError: line {number} of the augmented manifest \"{spec.s3_uri}\" (channel "
                f"'{spec.name}') is not a JSON object."
            )
        for attr in spec.attribute_names or []:
            if attr not in record:
                raise ChannelError(
                    f"ClientError: line {number} of the augmented manifest \"{spec.s3_uri}\" (channel "
                    f"'{spec.name}') has no attribute '{attr}' named in AttributeNames."
                )
        lines.append(record)
    if not lines:
        raise ChannelError(
            f"ClientError: the augmented manifest \"{spec.s3_uri}\" of channel '{spec.name}' has no records."
        )
    return lines


def check_channel_name(name: str) -> str:
    """A channel is one directory under input/data: no separator, not '.' or '..'."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ChannelError(f"ClientError: channel name {name!r} is not a valid directory name.")
    return name


def plan_channel(store: ObjectStore, spec: ChannelSpec, host_index: int, host_count: int) -> ChannelPlan:
    """Resolve a channel's data source and keep this host's share."""
    check_channel_name(spec.name)
    try:
        split_s3_uri(spec.s3_uri)
    except ValueError as exc:
        raise ChannelError(f"ClientError: channel '{spec.name}' has an invalid S3Uri: {exc}") from exc
    plan = ChannelPlan(spec)
    if spec.s3_data_type == "AugmentedManifestFile":
        lines = _augmented_lines(store, spec)
        plan.manifest_lines = shard(lines, host_index, host_count, spec.distribution)
        plan.manifest_name = PurePosixPath(split_s3_uri(spec.s3_uri)[1]).name or "manifest"
        return plan
    if spec.s3_data_type == "ManifestFile":
        refs = _manifest_refs(store, spec.name, spec.s3_uri)
    elif spec.s3_data_type == "S3Prefix":
        refs = _list_objects(store, spec.name, spec.s3_uri)
    else:
        raise ChannelError(
            f"ClientError: channel '{spec.name}' has unsupported S3DataType '{spec.s3_data_type}' "
            "(use S3Prefix, ManifestFile or AugmentedManifestFile)."
        )
    plan.objects = shard(refs, host_index, host_count, spec.distribution)
    return plan


# ----------------------------------------------------------------------------------------- File mode


def _safe_dest(root: Path, rel: str, channel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or ".." in parts:
        raise ChannelError(f"ClientError: object path '{rel}' of channel '{channel}' is not a safe local path.")
    return root.joinpath(*parts)


def download_channel(
    store: ObjectStore, plan: ChannelPlan, data_dir: Path, check: Callable[[], None] | None = None,
    dest_dir: Path | None = None,
) -> int:
    """File / FastFile mode: materialize the plan under ``data_dir/<channel>`` (or ``dest_dir``: a
    processing input's LocalPath). Returns files written. Gzip-compressed objects are decompressed.

    ``check`` is called before each object; it may raise to abort (stop request, time limit).
    """
    channel = plan.channel.name
    dest_root = dest_dir if dest_dir is not None else data_dir / check_channel_name(channel)
    dest_root.mkdir(parents=True, exist_ok=True)
    if plan.manifest_lines is not None:
        body = "".join(json.dumps(line) + "\n" for line in plan.manifest_lines)
        (dest_root / plan.manifest_name).write_text(body)
        return 1

    def fetch(ref: ObjectRef) -> None:
        if check is not None:
            check()
        dest = _safe_dest(dest_root, ref.rel, channel)
        try:
            store.get_to_file(ref.bucket, ref.key, dest)
            if plan.channel.compression == "Gzip":
                _gunzip_in_place(dest)
        except ObjectNotFound as exc:
            raise ChannelError(
                f"ClientError: Data download failed: object s3://{ref.bucket}/{ref.key} of channel "
                f"'{channel}' does not exist."
            ) from exc
        except ChannelError:
            raise
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise ChannelError(f"ClientError: could not decompress s3://{ref.bucket}/{ref.key} of input "
                               f"'{channel}' (S3CompressionType Gzip): {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - worded for the user
            uri = f"s3://{ref.bucket}/{ref.key}"
            raise ChannelError(f"ClientError: Could not download {uri} for channel '{channel}': "
                               f"{describe_s3_error(exc, uri)}.") from exc

    if not plan.objects:
        return 0
    with ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, len(plan.objects))) as pool:
        futures = [pool.submit(fetch, ref) for ref in plan.objects]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:
            for other in futures:
                other.cancel()
            raise failed[0].exception()  # type: ignore[misc]
    return len(plan.objects)


def _gunzip_in_place(path: Path) -> None:
    tmp = path.with_name(path.name + ".gunzip")
    with gzip.open(path, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------- Pipe mode


def recordio_frames(payload: bytes) -> Iterator[bytes]:
    """dmlc RecordIO framing of one record: aligned magic words inside the payload split it into parts."""
    start = 0
    n = len(payload)
    for i in range(0, n - n % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            flag = 1 if start == 0 else 2
            yield _MAGIC_BYTES + struct.pack("<I", (flag << 29) | (i - start)) + payload[start:i]
            start = i + 4
    flag = 3 if start else 0
    tail = payload[start:]
    pad = b"\0" * (-len(tail) % 4)
    yield _MAGIC_BYTES + struct.pack("<I", (flag << 29) | len(tail)) + tail + pad


def _attribute_bytes(store: ObjectStore, name: str, value: Any) -> bytes:
    if name.endswith("-ref") and isinstance(value, str) and value.startswith(("s3://", "https://")):
        bucket, key = split_s3_uri(value)
        return store.get_bytes(bucket, key)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")


class PipeFeeder(threading.Thread):
    """Streams a channel through FIFOs ``<channel>_0``, ``<channel>_1``, ... until stopped.

    ``<channel>_0`` is created by ``prepare()`` (before the user process starts); each next epoch's FIFO
    is created once the previous one has been written and closed. ``fifo_base`` replaces
    ``<data_dir>/<channel>`` as the FIFOs' stem (a processing input: ``<LocalPath>_0``, ...).
    """

    def __init__(self, store: ObjectStore, plan: ChannelPlan, data_dir: Path,
                 fifo_base: Path | None = None) -> None:
        super().__init__(name=f"pipe-{plan.channel.name}", daemon=True)
        self.store = store
        self.plan = plan
        self.data_dir = data_dir
        self.fifo_base = fifo_base
        self.label = "channel" if fifo_base is None else "input"  # how failures name it
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.epochs_done = 0
        self._dir_real: str | None = None  # set by prepare()
        seed = plan.channel.shuffle_seed
        self._rng = random.Random(seed) if seed is not None else None

    def fifo_path(self, epoch: int) -> Path:
        if self.fifo_base is not None:
            return self.fifo_base.with_name(f"{self.fifo_base.name}_{epoch}")
        return self.data_dir / f"{self.plan.channel.name}_{epoch}"

    def prepare(self) -> None:
        # Before the user's process starts, the FIFOs' directory is the agent's: its real path is the one
        # every later epoch must still open (the job owns that directory and could swap in a link).
        parent = self.fifo_path(0).parent
        parent.mkdir(parents=True, exist_ok=True)
        self._dir_real = os.path.realpath(parent)
        _make_fifo(self.fifo_path(0), self._dir_real)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        epoch = 0
        try:
            while not self.stop_event.is_set():
                path = self.fifo_path(epoch)
                _make_fifo(path, self._dir_real)
                out = self._open_writer(path)
                if out is None:
                    return
                try:
                    with out:
                        self._write_epoch(out)
                except BrokenPipeError:
                    pass  # the reader closed early: this epoch is over
                self.epochs_done += 1
                epoch += 1
        except Exception as exc:  # noqa: BLE001 - reported as the job's failure reason
            what = describe_s3_error(exc, self.plan.channel.s3_uri) if not isinstance(exc, OSError) else str(exc)
            self.error = (f"ClientError: Pipe mode streaming of {self.label} '{self.plan.channel.name}' "
                          f"({self.plan.channel.s3_uri}) failed: {what}")

    def _open_writer(self, path: Path) -> BinaryIO | None:
        while not self.stop_event.is_set():
            dir_fd = _open_fifo_dir(path, self._dir_real)
            try:
                # Never through a link: the agent may be root and the job's code owns this directory.
                fd = os.open(path.name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OSError(f"{path} was replaced by a link; Pipe mode writes only to its FIFO") from None
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                self.stop_event.wait(0.02)
                continue
            finally:
                os.close(dir_fd)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(f"{path} is no longer a FIFO; Pipe mode writes only to its FIFO")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "wb", buffering=_CHUNK)
        return None

    def _write_epoch(self, out: BinaryIO) -> None:
        if self.plan.manifest_lines is not None:
            self._write_augmented(out)
            return
        refs = list(self.plan.objects)
        if self._rng is not None:
            self._rng.shuffle(refs)
        wrap = self.plan.channel.record_wrapper == "RecordIO"
        for ref in refs:
            if self.stop_event.is_set():
                return
            with self._open_object(ref) as stream:
                if wrap:
                    for frame in recordio_frames(stream.read()):
                        out.write(frame)
                else:
                    shutil.copyfileobj(stream, out, _CHUNK)

    def _open_object(self, ref: ObjectRef) -> BinaryIO:
        stream = self.store.open_read(ref.bucket, ref.key)
        if self.plan.channel.compression == "Gzip":
            return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
        return stream

    def _write_augmented(self, out: BinaryIO) -> None:
        lines = list(self.plan.manifest_lines or [])
        if self._rng is not None:
            self._rng.shuffle(lines)
        attrs = self.plan.channel.attribute_names or []
        wrap = self.plan.channel.record_wrapper == "RecordIO"
        for line in lines:
            if self.stop_event.is_set():
                return
            for attr in attrs:
                payload = _attribute_bytes(self.store, attr, line[attr])
                if wrap:
                    for frame in recordio_frames(payload):
                        out.write(frame)
                else:
                    out.write(payload)


def _open_fifo_dir(path: Path, dir_real: str | None) -> int:
    """A descriptor of ``path``'s directory, checked to be the directory ``prepare()`` saw: the job owns it
    (and its parents up to /opt/ml), so a link swapped in would otherwise point the agent's writes at a host
    path (issue 7: a planted ``<channel>_1`` link got the channel's bytes written into a host file as root)."""
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):  # ENOENT: moved away (a swap under way)
            raise OSError(f"{path.parent} was replaced by a link or removed; Pipe mode writes only to its "
                          "FIFOs") from None
        raise
    if dir_real is not None and os.readlink(f"/proc/self/fd/{dir_fd}") != dir_real:
        os.close(dir_fd)
        raise OSError(f"{path.parent} was replaced by a link; Pipe mode writes only to its FIFOs")
    return dir_fd


def _make_fifo(path: Path, dir_real: str | None) -> None:
    dir_fd = _open_fifo_dir(path, dir_real)
    try:
        try:
            mode = os.lstat(path.name, dir_fd=dir_fd).st_mode
        except FileNotFoundError:
            os.mkfifo(path.name, 0o644, dir_fd=dir_fd)
        else:
            if not stat.S_ISFIFO(mode):
                raise OSError(f"{path} exists and is not a FIFO; Pipe mode writes only to its FIFO")
        # Readable by the job's own user whatever the umask (the agent, maybe root, writes it). Opened for
        # reading without blocking (a FIFO allows it), never through a link, and checked before the chmod.
        fd = os.open(path.name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise OSError(f"{path} is not a FIFO; Pipe mode writes only to its FIFO")
            os.fchmod(fd, 0o644)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


# ----------------------------------------------------------------------------------------- all channels


def prepare_channels(
    store: ObjectStore,
    channels: list[ChannelSpec],
    data_dir: Path,
    host_index: int,
    host_count: int,
    check: Callable[[], None] | None = None,
    destinations: dict[str, Path] | None = None,
    stream_fastfile: bool = False,
) -> list[Any]:
    """Download File-mode channels and create Pipe-mode FIFOs; returns the (unstarted) feeders.

    ``destinations``: channel name -> the directory its File-mode objects go to (processing inputs); a
    Pipe-mode channel with a destination streams through ``<destination>_0``, ``<destination>_1``, ...
    ``stream_fastfile``: the algorithm follows streamed files (``runner.fastfile.follow``: the built-ins), so
    a FastFile channel is downloaded while it runs instead of before (a ``fastfile.StreamedChannel`` feeder),
    and so is a File-mode one it reads only sequentially (``fastfile.FILE_MODE_CHANNELS``): it cannot tell.
    """
    from opensage.runner import fastfile

    feeders: list[Any] = []
    for spec in channels:
        if check is not None:
            check()
        plan = plan_channel(store, spec, host_index, host_count)
        streamable = spec.input_mode == "FastFile" or (spec.input_mode == "File"
                                                       and spec.name in fastfile.FILE_MODE_CHANNELS)
        if stream_fastfile and streamable and not (destinations or {}).get(spec.name):
            if fastfile.can_stream(plan):
                streamed = fastfile.StreamedChannel(store, plan, data_dir)
                streamed.prepare()
                feeders.append(streamed)
                continue
        if spec.input_mode == "Pipe":
            feeder = PipeFeeder(store, plan, data_dir, (destinations or {}).get(spec.name))
            feeder.prepare()
            feeders.append(feeder)
        else:
            download_channel(store, plan, data_dir, check, (destinations or {}).get(spec.name))
    return feeders
