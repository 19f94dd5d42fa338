"""A bounded buffer of sampled requests (and responses) per deployment variant.

Bodies are kept as they came, undecoded, so sampling costs the request path almost
nothing; the drift monitor decodes what it reads. Old entries fall off the end.
Responses are larger than requests (MiniLM: ~2 KB in, ~200 KB out), so fewer of
them are kept.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from shipway.gateway.kserve_codec import decode


@dataclass(frozen=True)
class Sample:
    at: float
    request: bytes
    request_header_length: int | None
    response: bytes | None = None
    response_header_length: int | None = None

    def inputs(self) -> dict[str, np.ndarray]:
        return decode(self.request, self.request_header_length, "inputs")

    def outputs(self) -> dict[str, np.ndarray]:
        if self.response is None:
            return {}
        return decode(self.response, self.response_header_length, "outputs")


@dataclass
class SampleBuffer:
    rate: float = 0.1  # share of requests kept
    capacity: int = 2048  # requests kept per variant
    response_capacity: int = 128  # request+response pairs kept per variant
    rng: random.Random = field(default_factory=random.Random)
    _requests: dict[tuple[str, str], deque[Sample]] = field(default_factory=dict)
    _pairs: dict[tuple[str, str], deque[Sample]] = field(default_factory=dict)

    def wants(self) -> bool:
        return self.rate > 0 and self.rng.random() < self.rate

    def add(self, deployment: str, variant: str, sample: Sample) -> None:
        key = (deployment, variant)
        if key not in self._requests:
            self._requests[key] = deque(maxlen=self.capacity)
            self._pairs[key] = deque(maxlen=self.response_capacity)
        self._requests[key].append(Sample(sample.at, sample.request, sample.request_header_length))
        if sample.response is not None:
            self._pairs[key].append(sample)

    def requests(self, deployment: str, variant: str, limit: int | None = None) -> list[Sample]:
        samples = list(self._requests.get((deployment, variant), ()))
        return samples[-limit:] if limit else samples

    def pairs(self, deployment: str, variant: str, limit: int | None = None) -> list[Sample]:
        samples = list(self._pairs.get((deployment, variant), ()))
        return samples[-limit:] if limit else samples

    def keys(self) -> list[tuple[str, str]]:
        return list(self._requests)
