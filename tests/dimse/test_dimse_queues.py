"""The light queues an association's threads wait on behave as ``queue.Queue`` does for what
pynetdicom uses of it."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from dicomql.dimse.queues import Checkpoint, LightQueue, MessageQueue, WakingQueue


def test_a_light_queue_is_first_in_first_out_and_raises_empty_as_queue_queue() -> None:
    fifo = LightQueue()
    assert fifo.empty() and fifo.qsize() == 0
    with pytest.raises(queue.Empty):
        fifo.get(block=False)
    with pytest.raises(queue.Empty):
        fifo.get_nowait()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        fifo.get(timeout=0.05)
    assert time.monotonic() - started >= 0.05
    with pytest.raises(ValueError):
        fifo.get(timeout=-1)
    for item in ("a", "b", "c"):
        fifo.put(item)
    assert fifo.qsize() == 3 and fifo.queue[0] == "a"  # (pynetdicom peeks at it)
    assert [fifo.get(), fifo.get(block=False), fifo.get(timeout=1)] == ["a", "b", "c"]


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_getter_waiting_on_a_light_queue_is_woken_by_each_put(timeout: float | None) -> None:
    fifo = LightQueue()
    got: list[int] = []

    def getter() -> None:
        for _ in range(200):
            got.append(fifo.get(timeout=timeout))

    threads = [threading.Thread(target=getter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for number in range(400):
        fifo.put(number)
        if number % 50 == 0:
            time.sleep(0.01)  # (so that the getters wait, too)
    for thread in threads:
        thread.join(10)
    assert sorted(got) == list(range(400)) and fifo.empty()


def test_the_waking_queues_and_the_checkpoint_call_back() -> None:
    woken: list[object] = []
    waking = WakingQueue(lambda: woken.append("put"))
    waking.put(1)
    messages = MessageQueue(woken.append)
    messages.put((1, "message"))
    checkpoint = Checkpoint(lambda: woken.append("cleared"))
    checkpoint.set()
    checkpoint.clear()
    assert woken == ["put", (1, "message"), "cleared"]
    assert waking.get() == 1 and not checkpoint.is_set()
