"""Issue 7 items 3 and 4: links the job's own code plants under its /opt/ml never point the agent (perhaps
root) at host files — neither for writing (Pipe-mode FIFOs) nor for reading (checkpoint sync, processing
outputs, model.tar.gz).

The job's user owns its /opt/ml tree, so it can replace any directory or file there by a link between two
of the agent's operations; each test plants one the way a hostile script would and checks the host file.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from opensage.objects import open_store
from opensage.runner.channels import PipeFeeder, plan_channel
from opensage.runner.jobspec import ChannelSpec, ObjectStoreSpec

BUCKET = "bkt"


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "store"
    (root / BUCKET / "in").mkdir(parents=True)
    (root / BUCKET / "in" / "part-0").write_bytes(b"* * * * * root evil\n")
    return open_store(ObjectStoreSpec(f"file://{root}"))


@pytest.fixture()
def host_file(tmp_path: Path) -> Path:
    victim = tmp_path / "host" / "authorized_keys"
    victim.parent.mkdir()
    victim.write_bytes(b"original\n")
    return victim


def _read_epoch(path: Path) -> bytes:
    for _ in range(500):
        if path.exists():
            break
        threading.Event().wait(0.01)
    with open(path, "rb") as fh:
        return fh.read()


def _wait_done(feeder: PipeFeeder) -> None:
    feeder.join(timeout=10)
    assert not feeder.is_alive(), "the feeder kept going after its FIFO was replaced"


def test_pipe_feeder_planted_link_at_next_epoch_fifo_is_not_written_through(store, tmp_path, host_file) -> None:
    data_dir = tmp_path / "ml" / "input" / "data"
    spec = ChannelSpec("train", f"s3://{BUCKET}/in/", input_mode="Pipe")
    feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), data_dir)
    feeder.prepare()
    # The job plants train_1 -> a host file before the agent makes epoch 1's FIFO.
    os.symlink(host_file, data_dir / "train_1")
    feeder.start()
    try:
        assert _read_epoch(feeder.fifo_path(0)) == b"* * * * * root evil\n"
        _wait_done(feeder)
    finally:
        feeder.stop()
    assert host_file.read_bytes() == b"original\n"
    assert feeder.error is not None and "train_1" in feeder.error and "not a FIFO" in feeder.error


def test_pipe_feeder_fifo_swapped_for_link_after_creation_is_not_written_through(store, tmp_path,
                                                                                  host_file) -> None:
    data_dir = tmp_path / "ml" / "input" / "data"
    spec = ChannelSpec("train", f"s3://{BUCKET}/in/", input_mode="Pipe")
    feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), data_dir)
    feeder.prepare()
    # Swap epoch 0's FIFO itself for a link before anyone reads it.
    (data_dir / "train_0").unlink()
    os.symlink(host_file, data_dir / "train_0")
    feeder.start()
    try:
        _wait_done(feeder)
    finally:
        feeder.stop()
    assert host_file.read_bytes() == b"original\n"
    assert feeder.error is not None and "not a FIFO" in feeder.error


def test_pipe_feeder_data_dir_swapped_for_link_to_host_dir_is_refused(store, tmp_path, host_file) -> None:
    data_dir = tmp_path / "ml" / "input" / "data"
    spec = ChannelSpec("train", f"s3://{BUCKET}/in/", input_mode="Pipe")
    feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), data_dir)
    feeder.prepare()
    feeder.start()
    try:
        assert _read_epoch(feeder.fifo_path(0)) == b"* * * * * root evil\n"
        # The job replaces its whole input/data by a link to a host directory before epoch 1.
        os.rename(data_dir, data_dir.with_name("data-moved"))
        os.symlink(host_file.parent, data_dir)
        _wait_done(feeder)
    finally:
        feeder.stop()
    assert sorted(p.name for p in host_file.parent.iterdir()) == ["authorized_keys"]  # no FIFO made there
    assert feeder.error is not None and "replaced by a link" in feeder.error


# ----------------------------------------------------------------------------------------- reading

def _secret_home(tmp_path: Path) -> Path:
    home = tmp_path / "platform-home"
    home.mkdir()
    (home / "credentials.json").write_text('{"secret": "root-key"}')
    (home / "data").mkdir()
    (home / "data" / "db.sqlite").write_text("rows")
    return home


def _ml_root(tmp_path: Path) -> Path:
    ml = tmp_path / "job" / "ml"
    for sub in ("model", "checkpoints", "output/data"):
        (ml / sub).mkdir(parents=True)
    return ml


def _stored_keys(store, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(info.key for info in store.list(BUCKET, prefix))


def test_checkpoint_sync_checkpoints_dir_swapped_for_link_uploads_no_host_file(store, tmp_path) -> None:
    from opensage.runner.agent import CheckpointSync

    home, ml = _secret_home(tmp_path), _ml_root(tmp_path)
    (ml / "checkpoints" / "epoch-1.pt").write_text("weights")
    sync = CheckpointSync(store, f"s3://{BUCKET}/ckpt", ml / "checkpoints", 60, within=ml)
    assert sync.upload_changes() == 1
    # The job's code replaces its checkpoint directory by a link to the platform's home.
    os.rename(ml / "checkpoints", ml / "checkpoints-old")
    os.symlink(home, ml / "checkpoints")
    sync.upload_changes()
    assert _stored_keys(store, "ckpt/") == ["ckpt/epoch-1.pt"]


def test_model_tar_of_model_dir_swapped_for_link_is_refused(store, tmp_path) -> None:
    from opensage.runner.agent import AgentError, upload_dir_as_tar

    home, ml = _secret_home(tmp_path), _ml_root(tmp_path)
    os.rmdir(ml / "model")
    os.symlink(home, ml / "model")
    with pytest.raises(AgentError, match="link"):
        upload_dir_as_tar(store, ml / "model", f"s3://{BUCKET}/out", "model.tar.gz", ml)
    assert _stored_keys(store, "out/") == []


def test_output_tar_under_a_parent_swapped_for_link_is_refused(store, tmp_path) -> None:
    from opensage.runner.agent import AgentError, upload_dir_as_tar

    home, ml = _secret_home(tmp_path), _ml_root(tmp_path)
    # output/ -> the platform's home, whose data/ then stands where output/data was.
    os.rename(ml / "output", ml / "output-old")
    os.symlink(home, ml / "output")
    with pytest.raises(AgentError, match="replaced by a link"):
        upload_dir_as_tar(store, ml / "output" / "data", f"s3://{BUCKET}/out", "output.tar.gz", ml)
    assert _stored_keys(store, "out/") == []


def test_model_tar_link_to_host_file_is_stored_as_a_link_not_its_content(tmp_path) -> None:
    import tarfile

    from opensage.runner.archive import make_tar_gz

    home, ml = _secret_home(tmp_path), _ml_root(tmp_path)
    (ml / "model" / "model.bin").write_text("booster")
    os.symlink(home / "credentials.json", ml / "model" / "config.json")
    os.symlink("model.bin", ml / "model" / "latest.bin")  # an in-directory link: stored as the file
    assert make_tar_gz(ml / "model", tmp_path / "m.tar.gz", ml) == 2
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["config.json"].issym() and members["config.json"].linkname == str(home / "credentials.json")
        assert tar.extractfile("latest.bin").read() == b"booster"  # type: ignore[union-attr]
        assert all(b"root-key" not in (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                   for m in tar.getmembers())


# ------------------------------------------------------------------------------- FastFile streaming

@pytest.fixture(params=["one-get", "ranges"])
def fastfile_mode(request, monkeypatch):  # type: ignore[no-untyped-def]
    from opensage.runner import fastfile

    if request.param == "ranges":
        monkeypatch.setattr(fastfile, "RANGED_MIN", 1)  # every object through parallel ranged GETs + pwrite
    return fastfile


def test_fastfile_streamed_file_swapped_for_link_after_prepare_is_not_written_through(
        store, tmp_path, host_file, fastfile_mode) -> None:
    data_dir = tmp_path / "ml" / "input" / "data"
    spec = ChannelSpec("train", f"s3://{BUCKET}/in/", input_mode="FastFile")
    feeder = fastfile_mode.StreamedChannel(store, plan_channel(store, spec, 0, 1), data_dir)
    feeder.prepare()
    # The job replaces the (empty) channel file by a link to a host file before the download writes it.
    (data_dir / "train" / "part-0").unlink()
    os.symlink(host_file, data_dir / "train" / "part-0")
    feeder.start()
    feeder.join(10)
    assert host_file.read_bytes() == b"original\n"


def test_fastfile_data_dir_swapped_for_link_to_host_dir_gets_no_file_or_marker(
        store, tmp_path, host_file, fastfile_mode) -> None:
    data_dir = tmp_path / "ml" / "input" / "data"
    spec = ChannelSpec("train", f"s3://{BUCKET}/in/", input_mode="FastFile")
    feeder = fastfile_mode.StreamedChannel(store, plan_channel(store, spec, 0, 1), data_dir)
    feeder.prepare()
    # The job moves its whole input/data away and links it to a host directory: markers and bytes still go
    # through the descriptors prepare() holds, never into the host directory.
    os.rename(data_dir, data_dir.with_name("data-moved"))
    os.symlink(host_file.parent, data_dir)
    feeder.start()
    feeder.join(10)
    assert sorted(p.name for p in host_file.parent.iterdir()) == ["authorized_keys"]
    assert host_file.read_bytes() == b"original\n"
    moved = data_dir.with_name("data-moved")
    assert (moved / "train" / "part-0").read_bytes() == b"* * * * * root evil\n"
    assert (moved / fastfile_mode.MARKERS / "train" / "part-0.done").read_text() == "20"
