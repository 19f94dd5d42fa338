from __future__ import annotations

from shipway.runtime.load import LoadMeter


def test_mean_inflight_is_the_rise_of_in_flight_seconds_over_time() -> None:
    meter = LoadMeter()
    assert meter.update(0.0, {("d", "stable"): 10.0}) == {}  # first reading: no interval yet
    # 6 request-seconds accrued over 2 s: three requests in flight on average.
    assert meter.update(2.0, {("d", "stable"): 16.0}) == {("d", "stable"): 3.0}
    assert meter.update(3.0, {("d", "stable"): 16.0}) == {("d", "stable"): 0.0}
