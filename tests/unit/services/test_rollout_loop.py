"""The local rollout controller's loop outlives a pass that fails as a whole (the store
unreachable): one database hiccup must not stop every rollout for good."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import text

from shipway.container import Container
from shipway.services import rollouts
from shipway.settings import Settings
from tests.support.services import wait_until


def test_the_loop_logs_a_failed_pass_and_goes_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    container = Container(settings)
    try:
        with container.db.session() as session:  # every pass now fails at its first query
            session.execute(text("DROP TABLE rollouts"))
        stop = threading.Event()
        loop = threading.Thread(
            target=rollouts.run, args=(container, container.rollout_ports, stop), daemon=True
        )
        with caplog.at_level(logging.ERROR, logger=rollouts.log.name):
            loop.start()
            # two failed passes: the loop went on after the first (it waits RETRY_SECONDS
            # between them, or less when woken)
            wait_until(
                lambda: sum("pass failed" in r.getMessage() for r in caplog.records) >= 1,
                20,
                "the first failed pass logged",
            )
            rollouts.wake(container)
            wait_until(
                lambda: sum("pass failed" in r.getMessage() for r in caplog.records) >= 2,
                20,
                "a second pass after the failed one",
            )
            assert loop.is_alive()
            stop.set()
            rollouts.wake(container)
            loop.join(10)
        assert not loop.is_alive()
    finally:
        container.close()
