"""The official episode randomness: numpy's legacy ``RandomState``, one draw at a time.

Every official draw is ``np.random.choice(seq, 1, replace=False)[0]``. Legacy numpy answers it
with ``permutation(len(seq))[0]``, i.e. a whole Fisher-Yates shuffle per draw; ``choice(n, ...)``
on the length consumes exactly the same stream, so we draw the index and return ``seq[index]``
unchanged (no ndarray conversion of strings or dicts). One ``RandomState`` seeded once per run
replaces the official global state: the streams are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from evaluation.errors import DatasetFormatError

T = TypeVar("T")


def new_rng(seed: int) -> np.random.RandomState:
    """A legacy ``RandomState`` in the state ``np.random.seed(seed)`` leaves the global one."""
    return np.random.RandomState(seed)


def draw_index(rng: np.random.RandomState, length: int) -> int:
    """The index that ``rng.choice(seq, 1, replace=False)[0]`` picks in a ``length``-long ``seq``."""
    if length < 1:
        raise DatasetFormatError("cannot draw from an empty list")
    return int(rng.choice(length, 1, replace=False)[0])


def draw(rng: np.random.RandomState, seq: Sequence[T]) -> T:
    """``np.random.choice(seq, 1, replace=False)[0]``, returning the element itself."""
    return seq[draw_index(rng, len(seq))]


def draw_references(
    rng: np.random.RandomState,
    pool: Sequence[T],
    shot: int,
    is_target: Callable[[T], bool],
) -> Iterator[T]:
    """The official reference loop: draw from ``pool`` until ``shot`` non-target picks.

    Every try consumes one draw; picks equal to the target are dropped, duplicates are kept.
    A generator, so a caller can make its own draws (e.g. an object) after each accepted pick,
    in the official order.
    """
    if not any(not is_target(item) for item in pool):
        raise DatasetFormatError(
            "cannot draw a reference: every candidate image is the target itself"
        )
    accepted = 0
    while accepted < shot:
        item = draw(rng, pool)
        if not is_target(item):
            accepted += 1
            yield item


def rng_state_to_json(rng: np.random.RandomState) -> dict[str, Any]:
    """The full Mersenne-Twister state as JSON-serialisable values."""
    name, keys, pos, has_gauss, cached_gaussian = rng.get_state(legacy=True)
    return {
        "name": name,
        "keys": [int(k) for k in keys],
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def rng_from_json(state: dict[str, Any]) -> np.random.RandomState:
    """The ``RandomState`` saved by :func:`rng_state_to_json`."""
    rng = np.random.RandomState()
    rng.set_state(
        (
            state["name"],
            np.asarray(state["keys"], dtype=np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached_gaussian"],
        )
    )
    return rng
