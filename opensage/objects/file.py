"""An ObjectStore on a local directory: ``file:///root`` -> ``<root>/<bucket>/<key>``.

Keys map to relative paths, so a key may not contain empty, ``.`` or ``..`` segments or end with ``/``
(a file cannot also be a directory). Writes are atomic (temporary file, then rename), so a reader never
sees a half-written object.
"""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from opensage.objects.base import ObjectInfo, ObjectNotFound

_TMP_DIR = ".opensage-tmp"  # never a valid bucket name (S3 buckets cannot start with '.')


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------------
    def _bucket_dir(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith(".") or "\\" in bucket:
            raise ValueError(f"invalid bucket name {bucket!r} (S3 bucket names are 3-63 chars, no '/')")
        return self.root / bucket

    def _existing_bucket_dir(self, bucket: str) -> Path:
        path = self._bucket_dir(bucket)
        if not path.is_dir():
            raise ObjectNotFound(
                f"bucket {bucket!r} does not exist under {self.root} (create it first with ensure_bucket)"
            )
        return path

    def _object_path(self, bucket: str, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"object key {key!r} cannot be stored in a file:// store: keys must be non-empty and have "
                "no empty, '.' or '..' path segments (and must not end with '/')"
            )
        return self._existing_bucket_dir(bucket).joinpath(*parts)

    def _tmp_path(self) -> Path:
        tmp_dir = self.root / _TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        return tmp_dir / uuid.uuid4().hex

    # -- reads ---------------------------------------------------------------------------------------
    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        base = self._existing_bucket_dir(bucket)
        # Only descend where the prefix can match: the directory part of the prefix.
        head, _, _ = prefix.rpartition("/")
        start = base.joinpath(*head.split("/")) if head else base
        if not start.is_dir():
            return
        found: list[tuple[bytes, str, int]] = []
        for dirpath, _dirs, files in os.walk(start):
            rel_dir = Path(dirpath).relative_to(base).as_posix()
            for name in files:
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    size = os.stat(os.path.join(dirpath, name)).st_size
                    found.append((key.encode("utf-8", "surrogateescape"), key, size))
        found.sort()  # S3 lists keys in UTF-8 byte order
        for _, key, size in found:
            yield ObjectInfo(key=key, size=size)

    def _open_existing(self, bucket: str, key: str) -> BinaryIO:
        path = self._object_path(bucket, key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist ({path})") from None

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        return self._open_existing(bucket, key)

    def open_range(self, bucket: str, key: str, start: int, end: int) -> BinaryIO:
        with self._open_existing(bucket, key) as fh:
            fh.seek(start)
            return io.BytesIO(fh.read(max(0, end - start)))

    def size(self, bucket: str, key: str) -> int:
        with self._open_existing(bucket, key) as fh:
            return os.fstat(fh.fileno()).st_size

    def get_bytes(self, bucket: str, key: str) -> bytes:
        with self._open_existing(bucket, key) as fh:
            return fh.read()

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        dest = Path(dest)
        with self._open_existing(bucket, key) as src:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            return self._object_path(bucket, key).is_file()
        except (ObjectNotFound, ValueError):
            return False

    def version(self, bucket: str, key: str) -> str:
        # Writes are atomic renames (_commit), so a new object is a new inode with a new mtime.
        path = self._object_path(bucket, key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from None
        return f"file:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    # -- writes --------------------------------------------------------------------------------------
    def _commit(self, tmp: Path, bucket: str, key: str) -> None:
        dest = self._object_path(bucket, key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            raise ValueError(
                f"cannot store s3://{bucket}/{key} in {self.root}: a key is both an object and a "
                f"prefix of another object ({exc})"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._object_path(bucket, key)  # validate before writing anything
        tmp = self._tmp_path()
        tmp.write_bytes(data)
        self._commit(tmp, bucket, key)

    def put_file(self, bucket: str, key: str, src: Path) -> None:
        self._object_path(bucket, key)
        tmp = self._tmp_path()
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._commit(tmp, bucket, key)

    def ensure_bucket(self, bucket: str) -> None:
        self._bucket_dir(bucket).mkdir(parents=True, exist_ok=True)
