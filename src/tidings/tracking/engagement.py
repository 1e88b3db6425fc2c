"""The engagement score: 0-100 per subscriber, from how recently and how often a person (not a
prefetcher or a scanner) opened and clicked.

Each human open adds 1 and each click 3 to a sum that halves every 30 days::

    sum(t)  = sum(t0) * 2 ** (-(t - t0) / 30 days) + weight
    score   = 100 * (1 - e ** (-sum / 4))

So one open is worth 22, one click 53, an open and a click 63, five opens 71, and a subscriber
who stops reading falls to half their sum in a month. The sum and the time it was computed at
are stored with the subscriber (``engagement_sum``, ``engaged_at``); ``decayed_scores`` brings
everyone's score to the present (the scheduler runs it daily), so a segment on the score sees
today's value, not the one of the last open.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

HALF_LIFE = timedelta(days=30)
SCALE = 4.0
WEIGHTS = {"opened": 1.0, "clicked": 3.0}


def decayed(total: float, since: datetime | None, now: datetime) -> float:
    """``total`` as of ``since``, decayed to ``now``."""
    if since is None or total <= 0:
        return max(total, 0.0)
    elapsed = max((now - since) / HALF_LIFE, 0.0)
    return float(total * 2.0**-elapsed)


def score(total: float) -> float:
    """The 0-100 score of a decayed sum, to one decimal."""
    return round(100.0 * (1.0 - math.exp(-max(total, 0.0) / SCALE)), 1)


def add_engagement(
    total: float, since: datetime | None, events: list[tuple[str, datetime]]
) -> tuple[float, datetime | None]:
    """The sum after ``events`` (type, when), oldest first, and the time it is as of."""
    for kind, at in sorted(events, key=lambda e: e[1]):
        if since is not None and at < since:
            at = since  # late arrivals count as of the sum's time: the sum never runs backwards
        total = decayed(total, since, at) + WEIGHTS.get(kind, 0.0)
        since = at
    return total, since
