"""Stopping a run cleanly on SIGINT or SIGTERM, and stopping a diverged run before it spoils a checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class DivergedError(FloatingPointError):
    """The loss or the gradient norm of a training step is not finite (the step was not applied)."""


class StopRequest:
    """While entered (in the main thread), the first SIGINT or SIGTERM only sets :attr:`signal_name`: the
    loop finishes its step, writes a checkpoint and returns. A second one ends the process at once by the
    signal's default action (exit status 128 + signal number in a shell). Elsewhere it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            print(
                f"\nfoxacp: {signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                "(send it again to exit at once)",
                file=sys.stderr,
                flush=True,
            )
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
