"""Issue 7 item 2: every extraction in the project goes through ``runner.archive.extract_tar_gz`` (which does
not depend on tarfile's bypassable ``filter="data"``); no other module unpacks an archive itself."""

from __future__ import annotations

import re
from pathlib import Path

import opensage

_UNPACKING = re.compile(r"\.extractall\(|\.extract\(|\.extractfile\(|unpack_archive\(|ZipFile\(|\.makelink\(")
_THE_ONE = Path("runner") / "archive.py"


def test_source_tree_extracts_archives_only_through_runner_archive() -> None:
    package = Path(opensage.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package) == _THE_ONE:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _UNPACKING.search(line):
                offenders.append(f"{path.relative_to(package)}:{number}: {line.strip()}")
    assert not offenders, "unpack archives with opensage.runner.archive.extract_tar_gz:\n" + "\n".join(offenders)
