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
