"""Steady inference load through the gateway, every answer recorded: when, which code,
which variant answered (the gateway's ``x-shipway-variant`` header), for which key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import numpy as np

from tests.support.builds import WIDTH, infer_body


@dataclass(frozen=True)
class Answer:
    at: float  # time.time() when the answer arrived
    status: int
    variant: str
    key: str | None
    seconds: float


@dataclass
class Load:
    answers: list[Answer] = field(default_factory=list)

    def since(self, t: float) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= t]

    def failed(self) -> list[Answer]:
        return [a for a in list(self.answers) if a.status >= 500]


@contextmanager
def steady_load(
    gateway_url: str,
    deployment: str,
    rate: float = 80.0,
    threads: int = 4,
    keys: list[str] | None = None,
    sticky_header: str = "x-shipway-key",
) -> Iterator[Load]:
    """``rate`` requests a second in total, paced per thread (a slow answer delays only
    its own thread's next request, as with real clients that wait for answers)."""
    load = Load()
    stop = threading.Event()
    url = f"{gateway_url}/v2/models/{deployment}/infer"

    def client(index: int) -> None:
        period = threads / rate
        rng = np.random.default_rng(index)
        with httpx.Client(timeout=30.0, trust_env=False) as http:
            n = 0
            next_at = time.monotonic() + index * period / threads
            while not stop.is_set():
                key = keys[(index + n * threads) % len(keys)] if keys else None
                headers = {sticky_header: key} if key else {}
                body = infer_body(rng.normal(size=WIDTH).tolist())
                started = time.perf_counter()
                try:
                    response = http.post(url, json=body, headers=headers)
                    status, variant = (
                        response.status_code,
                        response.headers.get("x-shipway-variant", ""),
                    )
                except httpx.HTTPError:
                    status, variant = 599, ""
                load.answers.append(
                    Answer(time.time(), status, variant, key, time.perf_counter() - started)
                )
                n += 1
                next_at += period
                stop.wait(max(0.0, next_at - time.monotonic()))

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield load
    finally:
        stop.set()
        for worker in workers:
            worker.join(35)
