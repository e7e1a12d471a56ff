"""The queues and the checkpoint an accepted association's threads wait on
(:mod:`dicomql.dimse.transport`): each put or clear calls back, so that whoever waits for it
is woken rather than polling."""

from __future__ import annotations

import collections
import queue
import threading
import time
from typing import Any


class LightQueue:
    """An unbounded FIFO queue with what pynetdicom uses of ``queue.Queue`` (put, get with or
    without blocking, empty, qsize, its deque as ``queue`` to peek at) on one condition, taken
    only when a getter waits: a ``queue.Queue`` builds a lock and three conditions and takes
    them for every put and get, and an association builds five queues and puts and gets some
    thirty times, nearly always with nobody waiting. A deque's append and popleft are atomic."""

    def __init__(self) -> None:
        self.queue: collections.deque[Any] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._waiting = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.queue.append(item)
        # A getter about to wait counts itself (under the lock) before it looks at the deque
        # again: it finds this item, or this put finds it counted and wakes it.
        if self._waiting:
            with self._ready:
                self._ready.notify()

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        try:
            return self.queue.popleft()
        except IndexError:
            if not block:
                raise queue.Empty from None
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            self._waiting += 1
            try:
                while not self.queue:
                    if deadline is None:
                        self._ready.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise queue.Empty
                    self._ready.wait(remaining)
                return self.queue.popleft()
            finally:
                self._waiting -= 1

    def get_nowait(self) -> Any:
        return self.get(False)

    def empty(self) -> bool:
        return not self.queue

    def qsize(self) -> int:
        return len(self.queue)


class WakingQueue(LightQueue):
    """A queue that calls ``wake`` after each put, so its consumer need not poll it."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class MessageQueue(LightQueue):
    """The DIMSE messages for the association's reactor, calling ``queued`` with each put."""

    def __init__(self, queued: Any) -> None:
        super().__init__()
        self._queued = queued

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._queued(item)


class Checkpoint(threading.Event):
    """The association reactor's checkpoint, calling ``wake`` when it is cleared."""

    def __init__(self, wake: Any) -> None:
        super().__init__()
        self._wake = wake

    def clear(self) -> None:
        super().clear()
        self._wake()
