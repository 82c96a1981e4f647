"""The transform worker's read-ahead: an input object read on its own thread, bounded, errors where read."""

from __future__ import annotations

import io
import os
import time

import pytest

from opensage.objects.base import ObjectNotFound
from opensage.objects.memory import MemoryStore
from opensage.runner import transform_worker
from opensage.runner.transform_worker import READ_CHUNK, ReadAhead


def test_read_ahead_object_yields_same_bytes_in_order():
    store = MemoryStore()
    store.ensure_bucket("b")
    data = os.urandom(3 * READ_CHUNK + 12345)
    store.put_bytes("b", "k", data)
    assert b"".join(ReadAhead(store, "b", "k")) == data


def test_read_ahead_missing_object_raises_where_read():
    store = MemoryStore()
    store.ensure_bucket("b")
    reader = ReadAhead(store, "b", "nope")  # opening happens on the thread: nothing raised yet
    with pytest.raises(ObjectNotFound):
        list(reader)


class _Failing(io.RawIOBase):
    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if not self.sent:
            self.sent = True
            return b"x" * 10
        raise ConnectionResetError("the object store went away")


class _Store(MemoryStore):
    def open_read(self, bucket: str, key: str):
        return _Failing()


def test_read_ahead_broken_stream_raises_after_data_read():
    got = []
    with pytest.raises(ConnectionResetError):
        for chunk in ReadAhead(_Store(), "b", "k"):
            got.append(chunk)
    assert got == [b"x" * 10]


def test_read_ahead_close_stops_producer_blocked_on_full_queue(monkeypatch):
    monkeypatch.setattr(transform_worker, "READ_AHEAD_CHUNKS", 2)
    store = MemoryStore()
    store.ensure_bucket("b")
    store.put_bytes("b", "k", b"y" * (10 * READ_CHUNK))
    reader = ReadAhead(store, "b", "k")
    time.sleep(0.2)  # the producer fills its 2 slots and waits
    assert reader._thread.is_alive()
    reader.close()
    reader._thread.join(timeout=2)
    assert not reader._thread.is_alive()
