"""Helpers for tests of channels streamed while the algorithm reads them (runner.fastfile).

``GatedStore`` serves its objects up to ``pause_at`` bytes (offsets in the object), then holds the download
until ``release`` (or fails there when ``fail`` is set): the download is paused midway for as long as the test
wants. ``reader_position`` tells, without any timing, how far a process has read a file: the offset of its
read-only descriptors of that file (``/proc/<pid>/fdinfo``), which the download's own writes (``pwrite``
through a write-only descriptor) never move.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from opensage.objects.memory import MemoryStore

PIECE = 64 << 10


class _GatedBody(io.RawIOBase):
    def __init__(self, store: GatedStore, data: bytes, offset: int, held: bool = False) -> None:
        self.store, self.data, self.offset, self.pos, self.held = store, data, offset, 0, held

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.held and not self.store.unhold.wait(120):
            raise TimeoutError("the test never let a held download go")
        where = self.offset + self.pos
        if self.pos < len(self.data) and where >= self.store.pause_at:
            self.store.paused.set()
            if not self.store.release.wait(120):
                raise TimeoutError("the test never released the paused download")
            if self.store.fail:
                raise ConnectionResetError("connection reset by the object store")
        limit = PIECE if n is None or n < 0 else min(n, PIECE)
        if where < self.store.pause_at:  # never past the pause point before the release
            limit = min(limit, self.store.pause_at - where)
        piece = self.data[self.pos:self.pos + limit]
        self.pos += len(piece)
        return piece


class GatedStore(MemoryStore):
    """A store whose downloads stop at byte ``pause_at`` of an object until ``release`` is set."""

    def __init__(self, pause_at: int = 1 << 62, fail: bool = False) -> None:
        super().__init__()
        self.pause_at, self.fail = pause_at, fail
        self.paused, self.release = threading.Event(), threading.Event()
        self.opened: list[str] = []  # object keys in the order their downloads started
        self.gated_key: str | None = None  # only this key pauses (None: every key)
        self.hold: set[str] = set()  # keys whose downloads wait before their first byte until ``unhold``
        self.unhold = threading.Event()

    def _body(self, key: str, data: bytes, offset: int) -> _GatedBody:
        self.opened.append(key)
        if key in self.hold:
            return _GatedBody(self, data, offset, held=True)
        if self.gated_key is not None and key != self.gated_key:
            return _GatedBody(_Ungated(), data, offset)  # type: ignore[arg-type]
        return _GatedBody(self, data, offset)

    def open_read(self, bucket: str, key: str):
        return self._body(key, self.get_bytes(bucket, key), 0)

    def open_range(self, bucket: str, key: str, start: int, end: int):
        return self._body(key, self.get_bytes(bucket, key)[start:end], start)


class _Ungated:
    pause_at = 1 << 62
    fail = False
    paused = release = unhold = threading.Event()


def reader_position(pid: int, path: Path) -> int:
    """The largest offset of ``pid``'s read-only descriptors of ``path`` (0 when it has none open)."""
    target = os.path.realpath(path)
    best = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd) != target:
                continue
            info = dict(line.split(":", 1) for line in (Path(f"/proc/{pid}/fdinfo") / fd.name).read_text()
                        .splitlines() if ":" in line)
        except OSError:
            continue
        if int(info["flags"].strip(), 8) & os.O_ACCMODE == os.O_RDONLY:
            best = max(best, int(info["pos"].strip()))
    return best


def wait_for(condition, timeout: float = 90.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; AssertionError after ``timeout`` seconds (a generous bound on a
    loaded machine: the outcome never depends on it, only how long a failing test takes to say so)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
