"""The official-style stateful flow gives the engine's answers and resets after each prediction."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine import Insid3
from core.errors import InvalidInputError
from core.official import INSID3Session


def test_session_segments_and_matches_like_the_engine(engine: Insid3, scene) -> None:
    image, mask = scene
    target = np.roll(image, 10, axis=0)
    session = INSID3Session(engine)
    session.set_reference(image, mask)
    session.set_reference(np.flip(image, axis=1).copy(), np.flip(mask, axis=1).copy())
    session.set_target(target)
    refs = [engine.encode_reference(image, mask), engine.encode_reference(np.flip(image, 1).copy(),
                                                                          np.flip(mask, 1).copy())]
    assert np.array_equal(session.segment(), engine.segment(target, refs).mask)
    with pytest.raises(InvalidInputError):
        session.segment()  # state was reset
    session.set_reference(image)
    session.set_target(target)
    assert np.allclose(session.match([[30, 40]]), engine.match(target, image, [[30, 40]]).points)
