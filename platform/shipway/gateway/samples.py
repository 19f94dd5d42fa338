"""A buffer of sampled requests (and responses) per deployment variant, bounded in bytes.

Bodies are kept as they came, undecoded, so sampling costs the request path almost
nothing; the drift monitor decodes what it reads. The oldest entries go first.

The bound is in bytes, not entries, because bodies differ by orders of magnitude
(MiniLM: ~2 KB in, ~200 KB out with its token states; other models send megabytes), so
a count bounds nothing. It holds *per variant*, not in total: a canary at 5 % of the
traffic must keep as long a window as stable for its drift check, and a total bound
would fill with stable's samples and push the canary's out. The memory held is then at
most the bound times the variants in the routing table. Of each variant's bound, three
quarters hold requests (input drift) and one quarter request+response pairs (output
drift): answers are the large part and fewer of them are needed.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from shipway.gateway.kserve_codec import decode

# What one kept entry costs beyond its bodies (the Sample object, the bytes objects'
# headers, the deque's slot), so that many tiny bodies cannot outgrow the bound.
ENTRY_OVERHEAD = 256
PAIRS_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    request: bytes
    request_header_length: int | None
    response: bytes | None = None
    response_header_length: int | None = None

    @property
    def size(self) -> int:
        """Bytes this entry holds, overhead included."""
        return ENTRY_OVERHEAD + len(self.request) + len(self.response or b"")

    def inputs(self) -> dict[str, np.ndarray]:
        return decode(self.request, self.request_header_length, "inputs")

    def outputs(self) -> dict[str, np.ndarray]:
        if self.response is None:
            return {}
        return decode(self.response, self.response_header_length, "outputs")


@dataclass
class BoundedSamples:
    """Samples, oldest first, holding at most ``limit`` bytes (``Sample.size``)."""

    limit: int
    entries: deque[Sample] = field(default_factory=deque)
    held: int = 0

    def add(self, sample: Sample) -> bool:
        """Keep ``sample``, dropping the oldest to make room; one larger than the whole
        bound is not kept (and drops nothing). Returns whether it was kept."""
        size = sample.size
        if size > self.limit:
            return False
        while self.held + size > self.limit:
            self.held -= self.entries.popleft().size
        self.entries.append(sample)
        self.held += size
        return True


@dataclass
class SampleBuffer:
    rate: float = 0.1  # share of requests kept
    bytes_per_variant: int = 32 * 2**20  # the bound of one variant's requests and pairs
    rng: random.Random = field(default_factory=random.Random)
    _requests: dict[tuple[str, str], BoundedSamples] = field(default_factory=dict)
    _pairs: dict[tuple[str, str], BoundedSamples] = field(default_factory=dict)

    def wants(self) -> bool:
        return self.rate > 0 and self.rng.random() < self.rate

    def add(self, deployment: str, variant: str, sample: Sample) -> None:
        key = (deployment, variant)
        if key not in self._requests:
            pairs = int(self.bytes_per_variant * PAIRS_SHARE)
            self._requests[key] = BoundedSamples(self.bytes_per_variant - pairs)
            self._pairs[key] = BoundedSamples(pairs)
        self._requests[key].add(Sample(sample.at, sample.request, sample.request_header_length))
        if sample.response is not None:
            self._pairs[key].add(sample)

    def requests(self, deployment: str, variant: str, limit: int | None = None) -> list[Sample]:
        return _last(self._requests.get((deployment, variant)), limit)

    def pairs(self, deployment: str, variant: str, limit: int | None = None) -> list[Sample]:
        return _last(self._pairs.get((deployment, variant)), limit)

    def held(self, deployment: str, variant: str) -> int:
        """Bytes held for one variant, requests and pairs together."""
        key = (deployment, variant)
        if key not in self._requests:
            return 0
        return self._requests[key].held + self._pairs[key].held

    def keys(self) -> list[tuple[str, str]]:
        return list(self._requests)

    def keep_only(self, keys: set[tuple[str, str]]) -> None:
        """Forget the samples of every (deployment, variant) not in ``keys``."""
        for key in [k for k in self._requests if k not in keys]:
            del self._requests[key]
            del self._pairs[key]


def _last(samples: BoundedSamples | None, limit: int | None) -> list[Sample]:
    if samples is None:
        return []
    kept = list(samples.entries)
    return kept[-limit:] if limit else kept
