"""The background loop every reconciler runs: one pass, then wait — short while busy, until woken when idle."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class ReconcileLoop:
    """Mixin: subclasses define ``run_once() -> bool`` (True = work in flight) and call ``_init_loop``."""

    def _init_loop(self, name: str, busy_interval: float, idle_interval: float) -> None:
        self._loop_name = name
        self._busy_interval = busy_interval
        self._idle_interval = idle_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self._loop_name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once()
            except Exception:
                log.exception("%s pass failed", self._loop_name)
            self._wake.wait(self._busy_interval if busy else self._idle_interval)
            self._wake.clear()

    def _stop_loop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
