"""Three-valued logic's connectives (engine/evaluation/kleene.py): Kleene's truth tables, read lazily."""
from __future__ import annotations

import itertools

from pressor.engine.evaluation.kleene import and3, not3, or3

VALUES = (True, False, None)
RANK = {False: 0, None: 1, True: 2}  # Kleene: and is the minimum, or the maximum, not the mirror


def test_the_truth_tables_are_kleenes():
    for a, b in itertools.product(VALUES, repeat=2):
        assert and3([a, b]) == min((a, b), key=RANK.get)
        assert or3([a, b]) == max((a, b), key=RANK.get)
    assert [not3(v) for v in VALUES] == [False, True, None]
    assert and3([]) is True and or3([]) is False


def test_a_deciding_part_stops_the_reading():
    def parts(*values):
        for v in values:
            yield v
        raise AssertionError("read past the part that decides")

    assert and3(parts(None, False)) is False
    assert or3(parts(None, True)) is True
