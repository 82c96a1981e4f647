"""Issue 7 item 2: no archive member can write outside the extraction directory.

``runner.archive.extract_tar_gz`` is the project's one extraction function (model.tar.gz for endpoints,
batch transform and multi-model, sourcedir.tar.gz for training). It must not depend on tarfile's
``filter="data"``, which Python < 3.11.13 / 3.12.11 lets through when a chain of long symlinks pushes a
path past PATH_MAX (CVE-2025-4517 / CVE-2025-4138). Every "outside" directory here is a tmp directory.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from opensage.runner.archive import UnsafeArchiveError, extract_tar_gz


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o777) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _cve_2025_4517_archive(path: Path, dest: Path) -> Path:
    """The public PoC pattern (CPython's test_realpath_limit_attack, gh-135034): directories whose names
    are long enough that, once the symlinks ``a``..``p`` are expanded, the path exceeds PATH_MAX, so
    ``os.path.realpath(strict=False)`` stops expanding and the data filter checks an unexpanded path.
    ``escape`` then points at ``dest/..``; a hard link through it and a new file under it land outside."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(dest.parent, "PC_PATH_MAX")
    component = "d" * ((path_max - (len(str(dest)) + 1)) // (len(steps) + 1))
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        prefix = ""
        for step in steps:
            _add_dir(tar, os.path.join(prefix, component))
            _add_link(tar, os.path.join(prefix, step), component)
            prefix = os.path.join(prefix, component)
        linkpath = os.path.join(*steps, "l" * 254)
        _add_link(tar, linkpath, os.path.join(*[".."] * len(steps)))
        _add_link(tar, "escape", os.path.join(linkpath, ".."))
        _add_link(tar, "flaglink", os.path.join("escape", "flag"), tarfile.LNKTYPE)
        _add_file(tar, "flaglink", b"overwrite")
        _add_file(tar, "escape/newfile", b"new")
    return path


def _legacy_extract(src_file: Path, dest_dir: Path) -> None:
    """runner/archive.py before the fix: a name check, then tarfile's data filter does the rest."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src_file, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise UnsafeArchiveError(member.name)
        tar.extractall(dest_dir, members=members, filter="data")


def _tarfile_is_vulnerable() -> bool:
    # The fix for gh-135034 added os.path.ALLOW_MISSING (realpath(strict=ALLOW_MISSING)).
    return not hasattr(os.path, "ALLOW_MISSING")


@pytest.fixture
def outer(tmp_path: Path) -> Path:
    """A directory that stands for "anywhere on the host": dest is inside it; flag is a file to protect."""
    root = tmp_path / "outer"
    root.mkdir()
    (root / "flag").write_text("original")
    return root


@pytest.mark.skipif(not _tarfile_is_vulnerable(), reason="this interpreter's tarfile has the gh-135034 fix")
def test_legacy_extract_cve_2025_4517_archive_writes_outside_dest(tmp_path: Path, outer: Path) -> None:
    """Why the fix is needed: on this interpreter, tarfile's data filter lets the PoC out."""
    dest = outer / "dest"
    archive = _cve_2025_4517_archive(tmp_path / "evil.tar.gz", dest)
    try:
        _legacy_extract(archive, dest)
    except (OSError, tarfile.TarError, KeyError):
        pass
    assert (outer / "newfile").read_text() == "new" or (outer / "flag").read_text() == "overwrite"


def test_extract_tar_gz_cve_2025_4517_archive_refused_nothing_outside(tmp_path: Path, outer: Path) -> None:
    dest = outer / "dest"
    archive = _cve_2025_4517_archive(tmp_path / "evil.tar.gz", dest)
    with pytest.raises(UnsafeArchiveError) as raised:
        extract_tar_gz(archive, dest)
    assert str(archive) in str(raised.value)
    assert "link" in str(raised.value)
    assert sorted(p.name for p in outer.iterdir()) == ["dest", "flag"]
    assert (outer / "flag").read_text() == "original"
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def _archive(tmp_path: Path, build) -> Path:  # noqa: ANN001 - a callable taking the TarFile
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def test_extract_tar_gz_symlink_to_etc_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path, lambda t: (_add_link(t, "etc", "/etc"), _add_file(t, "etc/evil", b"x")))
    with pytest.raises(UnsafeArchiveError, match=r"'etc'.*symbolic link"):
        extract_tar_gz(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "etc").exists()


def test_extract_tar_gz_symlink_inside_dest_refused(tmp_path: Path) -> None:
    """Model archives: every link is refused, even one that stays inside (the safest reading)."""
    archive = _archive(tmp_path, lambda t: (_add_file(t, "real", b"x"), _add_link(t, "alias", "real")))
    with pytest.raises(UnsafeArchiveError, match="'alias'"):
        extract_tar_gz(archive, tmp_path / "out")


def test_extract_tar_gz_hard_link_to_outside_refused(tmp_path: Path, outer: Path) -> None:
    dest = outer / "dest"

    def build(tar: tarfile.TarFile) -> None:
        _add_link(tar, "h", str(outer / "flag"), tarfile.LNKTYPE)
        _add_file(tar, "h", b"overwrite")

    with pytest.raises(UnsafeArchiveError, match=r"'h'.*hard link"):
        extract_tar_gz(_archive(tmp_path, build), dest)
    assert (outer / "flag").read_text() == "original"


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs/x", "..", "a/.."])
def test_extract_tar_gz_traversal_name_refused(tmp_path: Path, outer: Path, name: str) -> None:
    archive = _archive(tmp_path, lambda t: _add_file(t, name, b"x"))
    with pytest.raises(UnsafeArchiveError, match="unsafe member") as raised:
        extract_tar_gz(archive, outer / "dest")
    assert repr(name) in str(raised.value) and str(archive) in str(raised.value)
    assert sorted(p.name for p in outer.iterdir()) in (["flag"], ["dest", "flag"])
    assert not any((outer / "dest").rglob("*")) if (outer / "dest").exists() else True


def test_extract_tar_gz_directory_symlink_then_file_under_it_refused(tmp_path: Path, outer: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        _add_link(tar, "sub", str(outer))
        _add_file(tar, "sub/planted", b"x")

    with pytest.raises(UnsafeArchiveError, match="'sub'"):
        extract_tar_gz(_archive(tmp_path, build), outer / "dest")
    assert not (outer / "planted").exists()


def test_extract_tar_gz_symlink_planted_in_dest_not_followed(tmp_path: Path, outer: Path) -> None:
    """A symlink already in dest (a leaf or a directory on the way) never redirects a write."""
    dest = outer / "dest"
    dest.mkdir()
    (dest / "model.bin").symlink_to(outer / "flag")
    (dest / "code").symlink_to(outer)
    leaf = _archive(tmp_path, lambda t: _add_file(t, "model.bin", b"overwrite"))
    with pytest.raises(UnsafeArchiveError, match="'model.bin'.*symbolic link"):
        extract_tar_gz(leaf, dest)
    assert (outer / "flag").read_text() == "original"
    under = _archive(tmp_path, lambda t: _add_file(t, "code/inference.py", b"x"))
    with pytest.raises(UnsafeArchiveError, match="'code/inference.py'"):
        extract_tar_gz(under, dest)
    assert not (outer / "inference.py").exists()


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_extract_tar_gz_special_file_refused(tmp_path: Path, kind: bytes) -> None:
    def build(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("dev")
        info.type = kind
        tar.addfile(info)

    with pytest.raises(UnsafeArchiveError, match="'dev'"):
        extract_tar_gz(_archive(tmp_path, build), tmp_path / "out")
    assert not (tmp_path / "out" / "dev").exists()


def test_extract_tar_gz_modes_setuid_and_group_write_stripped(tmp_path: Path) -> None:
    archive = _archive(tmp_path, lambda t: (_add_file(t, "run.sh", b"#!/bin/sh\n", 0o6777),
                                            _add_file(t, "ro", b"x", 0o400)))
    extract_tar_gz(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out" / "ro").stat().st_mode) == 0o600


def test_extract_tar_gz_dot_slash_names_dirs_and_duplicates_extract(tmp_path: Path) -> None:
    """What ``tar czf model.tar.gz -C dir .`` makes: a './' entry, './'-prefixed names, directories;
    a later member of the same name replaces an earlier one, as tar does."""
    def build(tar: tarfile.TarFile) -> None:
        _add_dir(tar, ".", 0o700)
        _add_dir(tar, "./code", 0o500)
        _add_file(tar, "./code/inference.py", b"old")
        _add_file(tar, "./code/inference.py", b"new")
        _add_file(tar, "./deep/er/w.bin", b"\x00" * 3)

    names = extract_tar_gz(_archive(tmp_path, build), tmp_path / "out")
    assert "./code/inference.py" in names
    assert (tmp_path / "out" / "code" / "inference.py").read_bytes() == b"new"
    assert (tmp_path / "out" / "deep" / "er" / "w.bin").read_bytes() == b"\x00" * 3


def test_extract_tar_gz_corrupt_archive_refused_as_value_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(b"not a tar at all")
    with pytest.raises(ValueError, match=str(path)):
        extract_tar_gz(path, tmp_path / "out")
