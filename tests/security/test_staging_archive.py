"""Issue 7 item 2 through CreateEndpoint / batch transform / multi-model: ``stage_model`` unpacks with
``runner.archive.extract_tar_gz``, so the CVE-2025-4517 archive is refused there too and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensage.objects.file import FileStore
from opensage.runner.archive import UnsafeArchiveError
from opensage.serving.staging import stage_model
from tests.security.test_archive_extraction import _cve_2025_4517_archive


def test_stage_model_cve_2025_4517_archive_refused_nothing_outside(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    models = outer / "models"
    models.mkdir(parents=True)
    (outer / "flag").write_text("original")
    store = FileStore(tmp_path / "s3")
    store.ensure_bucket("bucket1")
    # Long names are sized for a destination at models/.tmp-<pid>-<ns>/model, as stage_model uses.
    archive = _cve_2025_4517_archive(tmp_path / "evil.tar.gz", models / ".tmp-1234567-1764150000000000000" / "model")
    store.put_file("bucket1", "job/model.tar.gz", archive)
    with pytest.raises(UnsafeArchiveError, match="link") as raised:
        stage_model(store, models, "s3://bucket1/job/model.tar.gz")
    # The user's URL is named, not a temporary path on the host.
    assert str(raised.value).startswith("archive s3://bucket1/job/model.tar.gz ")
    assert sorted(p.name for p in outer.iterdir()) == ["flag", "models"]
    assert (outer / "flag").read_text() == "original"
    # no staged directory, no temporary directory left (only staging's lock file)
    assert [p.name for p in models.iterdir()] == [".lock"]
