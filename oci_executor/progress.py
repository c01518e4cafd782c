"""Progress of an image pull: events from the backends, and who listens to them.

Every pull is logged (a line per layer as it completes, and the bytes so far at most every
:data:`LOG_EVERY` seconds). Front ends (the command line, the demo) :func:`listen` to show
a live progress bar. No Covalent here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

LOG_EVERY = 2.0
"""Seconds between two "so far" log lines of one pull."""


@dataclass(frozen=True)
class PullProgress:
    """One step of pulling ``image``: a layer's status, with bytes when the engine says."""

    image: str
    layer: str
    """Short layer ID; empty for a message about the whole image."""
    status: str
    """The engine's words: ``Downloading``, ``Pull complete``, ``Copying blob``..."""
    current: int | None = None
    total: int | None = None
    done: bool = False
    """Whether this layer is finished."""


Listener = Callable[[PullProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Call ``listener`` with every pull event of this process while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)


class PullReport:
    """Reports one pull: logs it and hands each event to the listeners."""

    def __init__(self, image: str, where: str) -> None:
        self.image = image
        self.where = where
        self._layers: dict[str, tuple[int, int]] = {}
        self._started = time.monotonic()
        self._last_log = self._started
        log.info("pulling image %s into the %s", image, where)

    def __call__(self, event: PullProgress) -> None:
        if event.layer and event.total:
            self._layers[event.layer] = (event.current or 0, event.total)
        if event.done and event.layer:
            log.info("pulling %s: layer %s %s", self.image, event.layer, event.status.lower())
        elif event.current is not None and time.monotonic() - self._last_log >= LOG_EVERY:
            self._last_log = time.monotonic()
            current = sum(c for c, _ in self._layers.values())
            total = sum(t for _, t in self._layers.values())
            log.info("pulling %s: %.1f of %.1f MB", self.image, current / 1e6, total / 1e6)
        with _lock:
            listeners = list(_listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a broken progress bar must not fail the pull
                log.debug("a pull progress listener failed", exc_info=True)

    def finished(self) -> None:
        log.info("pulled image %s in %.1f s", self.image, time.monotonic() - self._started)
