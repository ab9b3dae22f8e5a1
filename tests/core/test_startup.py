"""The start's progress: phases with their times, the warm-up's latency and the deadline advice."""

from __future__ import annotations

import logging

import pytest

from core.engine import Insid3
from core.startup import Deadline, StartupProgress, advise, measure_target_latency


def test_phases_are_logged_with_their_times_and_shown_while_they_run(caplog) -> None:
    progress = StartupProgress()
    assert progress.running() is None
    with caplog.at_level(logging.INFO, logger="insid3.start"):
        with progress.phase("weights", "find and hash"):
            running = progress.running()
            assert running is not None and running["phase"] == "weights" and running["done"] == []
        with progress.phase("positional basis"):
            assert progress.running()["done"] == [{"phase": "weights", "seconds": pytest.approx(0.0, abs=1.0)}]
        with pytest.raises(RuntimeError), progress.phase("encoder runtime"):
            raise RuntimeError("export failed")
    assert progress.running() is None  # nothing runs any more
    messages = [record.getMessage() for record in caplog.records]
    assert messages[0] == "weights (find and hash) ..."
    assert any(m.startswith("weights done in ") and m.endswith(" s") for m in messages)
    assert any(m.startswith("encoder runtime failed in ") for m in messages)
    assert progress.summary().startswith("weights ") and "positional basis" in progress.summary()


def test_the_warm_up_segments_one_target_without_touching_the_reference_cache(engine: Insid3) -> None:
    cached = len(engine.cache)
    assert measure_target_latency(engine) > 0
    assert len(engine.cache) == cached


def test_advice_raises_only_a_default_deadline_and_says_what_to_do(engine: Insid3) -> None:
    fast = advise(2.0, Deadline(60.0, explicit=False), engine)
    assert fast.met and fast.deadline_s is None and "one target took 2.0 s" in fast.message
    slow_default = advise(97.3, Deadline(60.0, explicit=False), engine)
    assert not slow_default.met and slow_default.deadline_s == 390.0  # 4 x 97.3, rounded up to 10 s
    assert "--image-size" in slow_default.message and "--model-size" in slow_default.message
    slow_chosen = advise(97.3, Deadline(60.0, explicit=True), engine)
    assert not slow_chosen.met and slow_chosen.deadline_s is None
    assert "504" in slow_chosen.message and "longer --request-timeout-s" in slow_chosen.message


def test_only_a_serving_process_warms_up(engine: Insid3) -> None:
    progress = StartupProgress()
    progress.engine_built(engine)
    assert progress.latency_s is None and progress.advice is None
    progress.expect(60.0, explicit=False)
    progress.engine_built(engine)
    assert progress.latency_s is not None and "one target took" in progress.advice
    assert progress.summary().startswith("warm-up ")
