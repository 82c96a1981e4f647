"""tar.gz helpers for model / output / source artifacts (``model.tar.gz`` holds files at the archive root).

``extract_tar_gz`` is the project's only way to unpack an archive (model.tar.gz for endpoints, batch
transform and multi-model loads, sourcedir.tar.gz for training). It does not use ``TarFile.extract`` /
``extractall`` or their ``filter=`` at all: tarfile only parses headers and hands out each regular member's
bytes (``extractfile``); every decision about what lands on disk, and where, is made here.

Why: ``filter="data"`` decides whether a link stays inside the destination with ``os.path.realpath``,
which on Python < 3.11.13 / 3.12.11 stops expanding once a path passes PATH_MAX, so a chain of long
symlinks let a crafted archive write anywhere the process can (CVE-2025-4517 / CVE-2025-4138; later
bypasses of the same filter keep being found). The issue asks the platform to refuse to start on an
interpreter whose tarfile is known-vulnerable *unless* its own extraction does not depend on it: this
module is that exception, by construction, so no interpreter check is needed:

* no link is ever created: symbolic and hard links, devices and FIFOs are refused (UnsafeArchiveError
  naming the archive and the member), so nothing in the archive can redirect a later write;
* names are checked lexically (no absolute names, no ``..``), and are then walked one component at a
  time from a descriptor of the destination with ``O_NOFOLLOW`` (``openat``), so a symlink that already
  sits in the destination cannot redirect a write either, and no long path is ever built or resolved;
* each file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and filled from ``extractfile`` in chunks
  (model archives can be GBs); modes lose setuid / setgid / sticky and group / other write.

Model archives refuse every link, even one that points inside (the safest reading of the issue): no
SageMaker artifact the platform produces needs one (``make_tar_gz`` stores an in-directory symlink to a
file as that file), and allowing "inside" links means resolving targets against a tree the archive itself
is building, which is exactly the check that keeps being bypassed.
"""

from __future__ import annotations

import errno
import gzip
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections import OrderedDict
from pathlib import Path, PurePosixPath

_COPY_CHUNK = 1 << 20
_DIR_CACHE = 32  # directory descriptors kept open while extracting (members usually come dir by dir)
# Errors that mean "this member cannot be placed here" rather than "the machine is in trouble".
_MEMBER_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EINVAL}
# What a damaged compressed stream raises besides tarfile's own errors.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class ArchiveError(ValueError):
    """An archive that cannot be read (corrupt, truncated, not a tar)."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the destination directory, or is a link / special file."""


def make_tar_gz(src_dir: Path, dest_file: Path, within: Path | None = None) -> int:
    """Pack every entry under ``src_dir`` with paths relative to it (no ``./`` prefix).

    A symlink to a regular file inside ``src_dir`` is stored as that file (extraction refuses links);
    other symlinks are stored as links, never followed (the job's code could point one at a host file).
    Returns the number of regular files written. An empty or missing ``src_dir`` gives a valid, empty archive.

    ``within`` is a directory the job cannot replace (its ``/opt/ml``: the job owns what is inside, not the
    directory itself). The job's code can swap ``src_dir`` or any of its parents below ``within`` for a link
    to a host directory at any moment, and the agent packing it may be root, so nothing is read by path:
    ``src_dir`` is opened without following a link and must be where ``within`` says it is, and each file
    is opened without following a link and checked, on the opened descriptor, to lie inside it.
    """
    src_dir = Path(src_dir)
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    if within is not None:
        expected = os.path.join(os.path.realpath(within), os.path.relpath(os.path.abspath(src_dir),
                                                                          os.path.abspath(within)))
    else:
        expected = os.path.realpath(src_dir)
    try:
        root_fd = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        root_fd = None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and os.path.islink(src_dir):
            raise ArchiveError(f"{src_dir} is a link; only a real directory is packed") from None
        if exc.errno != errno.ENOTDIR:
            raise
        root_fd = None
    count = 0
    try:
        entries: list[tuple[str, os.stat_result]] = []  # (relative name, lstat)
        if root_fd is not None:
            if _fd_path(root_fd) != expected:
                raise ArchiveError(f"{src_dir} (or a directory above it) was replaced by a link; only the "
                                   "job's own directory is packed")
            for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=root_fd, follow_symlinks=False):
                for name in dirnames + filenames:
                    try:
                        info = os.lstat(name, dir_fd=dir_fd)
                    except FileNotFoundError:
                        continue
                    entries.append((os.path.normpath(os.path.join(dirpath, name)), info))
        level = _compress_level(root_fd, entries, expected) if root_fd is not None else GZIP_LEVEL
        with tarfile.open(dest_file, "w:gz", compresslevel=level) as tar:
            for rel, info in sorted(entries, key=lambda entry: entry[0]):
                assert root_fd is not None
                mode = info.st_mode
                if stat.S_ISDIR(mode):
                    member = tarfile.TarInfo(rel)
                    member.type, member.mode = tarfile.DIRTYPE, stat.S_IMODE(mode)
                    tar.addfile(member)
                elif stat.S_ISREG(mode):
                    count += _add_file(tar, rel, os.open(rel, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd),
                                       expected)
                elif stat.S_ISLNK(mode):
                    count += _add_link(tar, rel, root_fd, expected)
                # FIFOs, sockets, devices: nothing a model or output needs (extraction refuses them anyway)
    finally:
        if root_fd is not None:
            os.close(root_fd)
    return count


# Level 1, not tarfile's 9 nor gzip's own 6: a 6 MB model took 3.2 s at 9 and 0.26 s at 6 for an archive within
# 1% of the size; a random cut forest's 6 MB of float64 boxes 0.37 s at 6 and 0.09 s at 1 (43% of the size
# instead of 39%), an XGBoost model's JSON 3.5x faster at 1 for 21% of the size instead of 17%: on a job's path
# the seconds count, a few percent of a local object's size do not. Model weights (float arrays) hardly compress
# and zlib is slow on them at any level: a kNN model (9 MB: float32 points, compressible labels) took 0.47-0.53
# s at 6 for 11% smaller, 0.06 s stored (measured on this project's 2-core VMs). So the archive is stored (gzip
# level 0: still gzip, read by every reader, written at copy speed) when SAMPLES spread over the largest file
# compress to more than STORE_RATIO at level 1: compression is kept where it saves a quarter or more (text,
# JSON, XGBoost's trees).
GZIP_LEVEL = 1
STORE_RATIO = 0.75
SAMPLES, SAMPLE_BYTES = 8, 128 << 10


def _compress_level(root_fd: int, entries: list[tuple[str, os.stat_result]], root_real: str) -> int:
    """GZIP_LEVEL, or 0 when the largest regular file (of at least SAMPLES samples) looks incompressible."""
    files = [(info.st_size, rel) for rel, info in entries if stat.S_ISREG(info.st_mode)]
    if not files or max(files)[0] < SAMPLES * SAMPLE_BYTES:
        return GZIP_LEVEL
    size, rel = max(files)
    try:
        fd = os.open(rel, _READ_FLAGS | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError:
        return GZIP_LEVEL  # gone or replaced meanwhile: packing decides what to do with it
    try:
        if not _regular_inside(fd, root_real):
            return GZIP_LEVEL
        step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
        sample = b"".join(os.pread(fd, SAMPLE_BYTES, i * step) for i in range(SAMPLES))
    finally:
        os.close(fd)
    if not sample:
        return GZIP_LEVEL
    return 0 if len(zlib.compress(sample, 1)) > STORE_RATIO * len(sample) else GZIP_LEVEL


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK  # NONBLOCK: a FIFO swapped in must not hang the agent


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _regular_inside(fd: int, root_real: str) -> bool:
    """The opened file is a regular file under ``root_real`` (checked on the descriptor, not a path)."""
    return stat.S_ISREG(os.fstat(fd).st_mode) and _fd_path(fd).startswith(root_real.rstrip("/") + "/")


def _add_file(tar: tarfile.TarFile, rel: str, fd: int, root_real: str) -> int:
    """Add the opened file as ``rel`` when it is a regular file inside ``root_real``; 1 if added."""
    with os.fdopen(fd, "rb") as fh:
        if not _regular_inside(fd, root_real):
            return 0
        info = tar.gettarinfo(fileobj=fh, arcname=rel)
        info.uname = info.gname = ""
        tar.addfile(info, fh)
        return 1


def _add_link(tar: tarfile.TarFile, rel: str, root_fd: int, root_real: str) -> int:
    """An in-directory link to a regular file is stored as that file; any other link as a link header."""
    try:
        target = os.readlink(rel, dir_fd=root_fd)
    except OSError:
        return 0
    try:
        fd = os.open(os.path.join(root_real, os.path.dirname(rel), target), _READ_FLAGS)
    except OSError:
        fd = None
    if fd is not None:
        if _regular_inside(fd, root_real):
            return _add_file(tar, rel, fd, root_real)
        os.close(fd)
    info = tarfile.TarInfo(rel)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)
    return 0


def _member_parts(member: tarfile.TarInfo, archive: str) -> tuple[str, ...]:
    """The member's path components below the destination (``()`` for the archive root ``./``)."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UnsafeArchiveError(
            f"archive {archive} has an unsafe member {member.name!r}: absolute paths and '..' are refused"
        )
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        raise UnsafeArchiveError(
            f"archive {archive} has an unsafe member {member.name!r}: it is a {kind} (to {member.linkname!r}); "
            f"links are refused in archives - store the file itself")
    if not (member.isreg() or member.isdir()):
        kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                tarfile.FIFOTYPE: "a FIFO"}.get(member.type, f"of tar type {member.type!r}")
        raise UnsafeArchiveError(
            f"archive {archive} has an unsafe member {member.name!r}: it is {kind}; only regular files and "
            f"directories are extracted")
    parts = name.parts
    if not parts and not member.isdir():
        raise UnsafeArchiveError(f"archive {archive} has a member with an empty name that is not a directory")
    return parts


def _file_mode(member: tarfile.TarInfo) -> int:
    # As tarfile's data filter: no setuid/setgid/sticky, no group/other write, the owner can read+write.
    return (member.mode & 0o755) | 0o600


class _Writer:
    """Creates directories and files below one directory descriptor, never following a symlink."""

    def __init__(self, dest_dir: Path, archive: str) -> None:
        self.archive = archive
        self.root = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()
        os.close(self.root)

    def _refuse(self, member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"archive {self.archive}: member {member.name!r} cannot be extracted: {why}")

    def directory(self, parts: tuple[str, ...], member: tarfile.TarInfo) -> int:
        """A descriptor of ``dest/parts`` (created as needed); the caller must not close it."""
        if not parts:
            return self.root
        fd = self.dirs.get(parts)
        if fd is not None:
            self.dirs.move_to_end(parts)
            return fd
        parent = self.directory(parts[:-1], member)
        name = parts[-1]
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refuse(member, f"'{'/'.join(parts)}' exists in the destination and is not a "
                                           f"directory (a symbolic link is never followed)") from None
            if exc.errno in _MEMBER_ERRNOS:
                raise self._refuse(member, exc.strerror or str(exc)) from None
            raise
        self.dirs[parts] = fd
        while len(self.dirs) > _DIR_CACHE:
            _, old = self.dirs.popitem(last=False)
            os.close(old)
        return fd

    def file(self, parts: tuple[str, ...], member: tarfile.TarInfo, data: tarfile.ExFileObject) -> None:
        parent = self.directory(parts[:-1], member)
        name = parts[-1]
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            try:
                fd = os.open(name, flags, 0o600, dir_fd=parent)
            except FileExistsError:
                # A later member of the same name replaces the earlier one, as tar does - but only a regular
                # file is replaced; a symlink or directory already there is refused, never written through.
                existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISLNK(existing.st_mode):
                    raise self._refuse(member, "a symbolic link of that name exists in the destination and "
                                               "is never written through") from None
                if not stat.S_ISREG(existing.st_mode):
                    raise self._refuse(member, "something that is not a regular file exists there") from None
                os.unlink(name, dir_fd=parent)
                fd = os.open(name, flags, 0o600, dir_fd=parent)
        except UnsafeArchiveError:
            raise
        except OSError as exc:
            if exc.errno in _MEMBER_ERRNOS:
                raise self._refuse(member, exc.strerror or str(exc)) from None
            raise
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(data, out, _COPY_CHUNK)
            os.fchmod(out.fileno(), _file_mode(member))
            try:
                os.utime(out.fileno(), (member.mtime, member.mtime))
            except (OSError, OverflowError, TypeError, ValueError):
                pass  # a nonsense mtime is not worth failing a model for


def extract_tar_gz(src_file: Path, dest_dir: Path, label: str | None = None) -> list[str]:
    """Extract a (gzip, bzip2, xz or plain) tar into ``dest_dir``; returns the member names in order.

    Refuses with UnsafeArchiveError (a ValueError naming the archive and the member) absolute names,
    ``..``, symbolic and hard links, devices and FIFOs, and any write that would go through a symlink
    already in ``dest_dir``; an unreadable archive raises ArchiveError (also a ValueError). Members are
    streamed to disk one by one; on an error, what was written so far stays in ``dest_dir`` (callers
    extract into a fresh directory and discard it). ``label`` names the archive in messages instead of
    the local file (e.g. the ``s3://`` URL the user gave, rather than a temporary path on the host).
    """
    src_file = Path(src_file)
    dest_dir = Path(dest_dir)
    archive = label or str(src_file)
    dest_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    try:
        tar = tarfile.open(src_file, "r:*")
    except _DAMAGED as exc:
        raise ArchiveError(f"archive {archive} is not a readable tar archive: {exc}") from exc
    with tar:
        writer = _Writer(dest_dir, archive)
        try:
            for member in tar:  # header by header: the archive is never read whole
                parts = _member_parts(member, archive)
                names.append(member.name)
                if member.isdir():
                    writer.directory(parts, member)
                    continue
                data = tar.extractfile(member)
                assert data is not None  # a regular file always has a data stream
                with data:
                    writer.file(parts, member, data)
        except _DAMAGED as exc:
            raise ArchiveError(f"archive {archive} is damaged (after {len(names)} member(s)): {exc}") from exc
        finally:
            writer.close()
    return names
