"""Micro-batching: concurrent requests share one ``session.run``.

A request is *announced* when its handler starts reading the body and *submitted* once its
image is preprocessed. The collector takes everything queued and keeps waiting — up to
``max_wait_ms`` — only while announced requests are still on their way, so a lone request runs
at once and a burst runs as one batch of at most ``max_batch`` images; under steady load, the
requests that arrive while a batch runs form the next one. (Waiting for clients that have not
sent yet, as a fixed delay does, left the model idle and cost throughput on CPU.)

Items are grouped by the model they were preprocessed for: a request in flight finishes on the
model it started with, even when a reload swapped the served model meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Runnable(Protocol):
    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...


def split(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Batch outputs → one dict per image (each array keeps a leading axis of 1)."""
    return [{name: value[i : i + 1] for name, value in outputs.items()} for i in range(count)]


@dataclass
class Stats:
    batches: int = 0
    images: int = 0
    largest: int = 0

    def add(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.largest = max(self.largest, size)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "images": self.images, "largest": self.largest}


@dataclass
class _Item:
    model: Runnable
    x: np.ndarray
    future: asyncio.Future = field(repr=False)


class Arrival:
    """One announced request; submit it once, or leave the ``with`` block to withdraw it."""

    def __init__(self, runner: "Runner") -> None:
        self._runner, self._open = runner, True

    def __enter__(self) -> "Arrival":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._runner._settle()

    async def submit(self, model: Runnable, x: np.ndarray) -> dict[str, np.ndarray]:
        if not self._open:
            raise RuntimeError("this request was already submitted")
        self._open = False
        return await self._runner._submit(model, x)


class Runner:
    """Runs each request alone, in a worker thread (``micro_batching=False``)."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.arriving = 0

    def arrival(self) -> Arrival:
        self.arriving += 1
        return Arrival(self)

    def _settle(self) -> None:
        self.arriving -= 1

    async def _submit(self, model: Runnable, x: np.ndarray) -> dict[str, np.ndarray]:
        self._settle()
        self.stats.add(1)
        return await asyncio.to_thread(model.predict, x[None])

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class MicroBatcher(Runner):
    """Collects queued requests into batches and runs them one batch at a time in one thread."""

    def __init__(self, *, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be ≥ 1 and max_wait_ms ≥ 0, got {max_batch} and {max_wait_ms}")
        super().__init__()
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self._queue: asyncio.Queue[_Item] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue, self._wake = asyncio.Queue(), asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-batch")
        self._task = asyncio.create_task(self._collect(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the service is shutting down"))

    def _settle(self) -> None:
        super()._settle()
        if self._wake is not None:
            self._wake.set()

    async def _submit(self, model: Runnable, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._queue is None:
            raise RuntimeError("the micro-batcher is not running; start() it in the app's lifespan")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(model, x, future))
        self._settle()
        return await future

    async def _gather(self, first: _Item) -> list[_Item]:
        assert self._queue is not None and self._wake is not None
        loop = asyncio.get_running_loop()
        items, deadline = [first], loop.time() + self.max_wait
        while True:
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            if len(items) >= self.max_batch or self.arriving <= 0:
                return items
            remaining = deadline - loop.time()
            if remaining <= 0:
                return items
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                pass

    async def _collect(self) -> None:
        assert self._queue is not None
        while True:
            items = await self._gather(await self._queue.get())
            try:
                await self._run(items)
            except asyncio.CancelledError:  # shutting down: nobody may wait forever
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(RuntimeError("the service is shutting down"))
                raise

    async def _run(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[int, list[_Item]] = {}
        for item in items:
            groups.setdefault(id(item.model), []).append(item)
        for group in groups.values():
            live = [item for item in group if not item.future.done()]  # a client that left
            if not live:
                continue
            try:
                outputs = await loop.run_in_executor(self._executor, live[0].model.predict, np.stack([i.x for i in live]))
            except Exception as err:  # every waiting request gets the error; the loop goes on
                log.exception("inference failed on a batch of %d", len(live))
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            self.stats.add(len(live))
            for item, result in zip(live, split(outputs, len(live))):
                if not item.future.done():
                    item.future.set_result(result)
