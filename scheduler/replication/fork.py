"""Where two change logs part, from their terms histories and heads (PostgreSQL's timeline
history is the model).

Each epoch has one writer (a promotion raises it), and a writer's log, when its epoch begins,
is its predecessor's up to there. So two logs hold the same entries of an epoch they both have,
from its first seq up to where the shorter of the two ends it; the fork is the end of the
last epoch they share. Both logs are assumed to be of one lineage (same first entries).
"""

from __future__ import annotations

from scheduler.changelog import Terms


def _end(terms: Terms, head: int, i: int) -> int:
    """The last seq of the i-th term of a log whose last entry is `head`."""
    return terms[i + 1][1] - 1 if i + 1 < len(terms) else head


def fork_point(mine: Terms, my_head: int, theirs: Terms, their_head: int) -> int:
    """The last seq both logs hold the same entry for (0: none)."""
    theirs_at = {epoch: i for i, (epoch, _) in enumerate(theirs)}
    fork = 0
    for i, (epoch, first) in enumerate(mine):
        j = theirs_at.get(epoch)
        if j is None or theirs[j][1] != first:
            break  # an epoch of mine they never had (or began elsewhere): we part before it
        end = min(_end(mine, my_head, i), _end(theirs, their_head, j))
        fork = max(fork, end)
        if end < _end(mine, my_head, i) or end < _end(theirs, their_head, j):
            break  # one of us went on under another epoch from here
    return min(fork, my_head, their_head)
