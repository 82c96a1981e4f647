from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from opensage.runner.archive import UnsafeArchiveError, extract_tar_gz, make_tar_gz


def test_make_tar_gz_nested_dir_round_trips_with_root_relative_names(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.bin").write_bytes(b"\x00\x01")
    (src / "a" / "b" / "deep.txt").write_text("deep")
    assert make_tar_gz(src, tmp_path / "m.tar.gz") == 2
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        names = tar.getnames()
    assert "top.bin" in names and "a/b/deep.txt" in names
    assert not any(n.startswith(("./", "/")) for n in names)
    extract_tar_gz(tmp_path / "m.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b" / "deep.txt").read_text() == "deep"
    assert (tmp_path / "out" / "top.bin").read_bytes() == b"\x00\x01"


def test_make_tar_gz_empty_or_missing_dir_gives_valid_empty_archive(tmp_path: Path) -> None:
    assert make_tar_gz(tmp_path / "missing", tmp_path / "e.tar.gz") == 0
    with tarfile.open(tmp_path / "e.tar.gz") as tar:
        assert tar.getnames() == []


def test_make_tar_gz_stores_weights_that_do_not_compress_and_compresses_the_rest(tmp_path: Path) -> None:
    """Float weights are stored (gzip level 0: zlib spends ~0.4 s on 10 MB of them to save ~10%), text is
    compressed; either way a gzip tar that round-trips."""
    import gzip

    import numpy as np

    weights = np.random.default_rng(0).normal(size=800_000).astype(np.float32).tobytes()  # ~7% smaller at level 6
    src = tmp_path / "model"
    src.mkdir()
    (src / "weights.bin").write_bytes(weights)
    (src / "config.json").write_text('{"layers": [64, 64]}' * 100)
    assert make_tar_gz(src, tmp_path / "stored.tar.gz") == 2
    assert (tmp_path / "stored.tar.gz").stat().st_size > len(weights)  # not compressed: stored
    gzip.decompress((tmp_path / "stored.tar.gz").read_bytes())  # still gzip
    extract_tar_gz(tmp_path / "stored.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "weights.bin").read_bytes() == weights
    text = tmp_path / "text"
    text.mkdir()
    (text / "trees.json").write_text('{"split": 3, "value": 0.25}\n' * 100_000)  # 3 MB that compresses
    make_tar_gz(text, tmp_path / "text.tar.gz")
    assert (tmp_path / "text.tar.gz").stat().st_size < (text / "trees.json").stat().st_size / 20


def _tar_with(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return path


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../b"])
def test_extract_tar_gz_unsafe_member_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="unsafe member"):
        extract_tar_gz(_tar_with(tmp_path, name), tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_extract_tar_gz_link_outside_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UnsafeArchiveError):
        extract_tar_gz(path, tmp_path / "out")


def test_make_tar_gz_symlink_inside_stored_as_file_and_round_trips(tmp_path: Path) -> None:
    """Extraction refuses links, so an in-directory link to a file (e.g. ``latest`` -> ``ckpt-3``) is packed
    as the file itself; a link pointing out of the directory is kept as a link, never followed."""
    src = tmp_path / "model"
    src.mkdir()
    (src / "ckpt-3").write_text("weights")
    (src / "latest").symlink_to("ckpt-3")
    (tmp_path / "secret").write_text("host file")
    (src / "leak").symlink_to(tmp_path / "secret")
    assert make_tar_gz(src, tmp_path / "m.tar.gz") == 2
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["latest"].isreg() and members["leak"].issym()
    with pytest.raises(UnsafeArchiveError, match="'leak'"):
        extract_tar_gz(tmp_path / "m.tar.gz", tmp_path / "out")


def test_extract_tar_gz_truncated_archive_raises_value_error(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(200_000))
    make_tar_gz(src, tmp_path / "m.tar.gz")
    data = (tmp_path / "m.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.tar.gz"):
        extract_tar_gz(tmp_path / "cut.tar.gz", tmp_path / "out")
