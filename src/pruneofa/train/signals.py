"""SIGINT/SIGTERM become a request the training loop honours between updates (checkpoint, then stop)."""

from __future__ import annotations

import contextlib
import signal
from typing import Any


class GracefulStop:
    """Turns SIGINT/SIGTERM into a flag the loop checks between updates."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
