"""Three-valued logic's connectives (engine/evaluation/kleene.py): Kleene's truth tables, read lazily."""
from __future__ import annotations

import itertools

from pressor.engine.evaluation.kleene import NEGATED, and3, every_part, gather, not3, or3, positive

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


def test_gather_has_kleenes_truth_and_keeps_what_decided_it():
    for values in itertools.product(VALUES, repeat=3):
        parts = [(v, i) for i, v in enumerate(values)]
        for conj, connective in ((True, and3), (False, or3)):
            t, deciding = gather(conj, parts)
            assert t is connective(values)
            if t is None:
                assert deciding == [i for i, v in enumerate(values) if v is None]
            elif conj and t is False:
                assert deciding == [values.index(False)]  # the first false part alone
            elif not conj and t is True:
                assert deciding == [i for i, v in enumerate(values) if v is True]  # every true part
            else:
                assert deciding == [0, 1, 2]


def test_a_false_part_stops_gathering_an_and():
    def parts():
        yield None, "a"
        yield False, "b"
        raise AssertionError("read past the false part")

    assert gather(True, parts()) == (False, ["b"])


def test_the_polarities_follow_the_truth_tables():
    holds = {"T": lambda t: t is True, "F": lambda t: t is False, "NT": lambda t: t is not True,
             "NF": lambda t: t is not False}
    for pol, test in holds.items():
        for t in VALUES:
            assert holds[NEGATED[pol]](t) == test(not3(t))  # not x answers the negated question of x
        for conj, connective in ((True, and3), (False, or3)):
            every = every_part(conj, positive(pol))
            for a, b in itertools.product(VALUES, repeat=2):
                by_parts = (test(a) and test(b)) if every else (test(a) or test(b))
                assert by_parts == test(connective([a, b])), (pol, conj, a, b)
