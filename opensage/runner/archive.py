"""tar.gz helpers for model / output artifacts (``model.tar.gz`` holds files at the archive root)."""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination directory."""


def make_tar_gz(src_dir: Path, dest_file: Path) -> int:
    """Pack every entry under ``src_dir`` with paths relative to it (no ``./`` prefix).

    Returns the number of regular files written. An empty ``src_dir`` gives a valid, empty archive.
    """
    src_dir = Path(src_dir)
    dest_file = Path(dest_file)
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(dest_file, "w:gz") as tar:
        if not src_dir.is_dir():
            return 0
        for path in sorted(src_dir.rglob("*")):
            rel = path.relative_to(src_dir).as_posix()
            tar.add(path, arcname=rel, recursive=False)
            if path.is_file() and not path.is_symlink():
                count += 1
    return count


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UnsafeArchiveError(
            f"archive {archive} has an unsafe member {member.name!r}: absolute paths and '..' are refused"
        )


def extract_tar_gz(src_file: Path, dest_dir: Path) -> list[str]:
    """Extract a (gzip or plain) tar safely into ``dest_dir``; returns the member names.

    Absolute paths and ``..`` components are refused with UnsafeArchiveError; links and special files
    are filtered by tarfile's ``data`` filter.
    """
    src_file = Path(src_file)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src_file, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, src_file)
        try:
            tar.extractall(dest_dir, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"archive {src_file} refused: {exc}") from exc
    return [m.name for m in members]
