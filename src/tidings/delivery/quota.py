"""Fleet-wide rate limits per provider, coordinated by the database (no other service needed).

A worker asks for as many messages as it wants to send through a provider and is granted what
every limit allows at once; what it sends is what it was granted. A grant is one short
transaction that first locks the provider's ``provider_state`` row, so grants from all
processes on all hosts are serialized per provider.

- ``per_second`` is a pace (GCRA): ``paced_until`` is the theoretical arrival time of the next
  message, advanced by ``1/per_second`` per message granted, with a burst of at most
  ``PACE_BURST_SECONDS`` ahead of now. Any one-second window then holds at most
  ``per_second * (1 + PACE_BURST_SECONDS) + 1`` messages, and a fixed window's edge cannot
  double it.
- ``per_minute``, ``per_hour`` and ``per_day`` count in windows of the clock (the day in the
  provider's timezone; the day's limit is also lowered by a warming plan's cap).
- A paused provider (warming found too many complaints) is granted nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.delivery.warming import WarmingPlan, todays_cap
from tidings.providers.models import ProviderState, ProviderUsage

PACE_BURST_SECONDS = 0.05
PAUSED_RECHECK = timedelta(minutes=1)  # how often a paused provider is looked at again


@dataclass(frozen=True)
class Limits:
    """A provider's limits, as a worker loaded them."""

    provider_id: int
    per_second: int | None = None
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None
    timezone: str = "UTC"
    warming: WarmingPlan | None = None

    @property
    def unlimited(self) -> bool:
        limits = (self.per_second, self.per_minute, self.per_hour, self.per_day, self.warming)
        return all(limit is None for limit in limits)


@dataclass(frozen=True)
class Grant:
    granted: int
    retry_at: datetime | None = None  # when more may be granted, if not all were
    limited_by: str = ""  # the limit that bound: per_second, per_day, warming, paused...


async def acquire(session: AsyncSession, limits: Limits, wanted: int, now: datetime) -> Grant:
    """Grant up to ``wanted`` messages through the provider at ``now``. Commits."""
    if wanted <= 0 or limits.unlimited:
        return Grant(max(wanted, 0))
    state = await _locked_state(session, limits.provider_id)
    usage = await _usage(session, limits.provider_id)
    windows = _windows(limits, now)
    room = await _room(session, limits, state, usage, windows, now)  # a new day may pause
    if state.paused_at is not None:
        await session.commit()
        return Grant(0, now + PAUSED_RECHECK, f"paused: {state.paused_reason}")
    # The tightest limit binds; of those equally tight, the one that frees up last.
    limited_by, (available, frees_at) = min(
        room.items(), key=lambda item: (item[1][0], -item[1][1].timestamp())
    )
    granted = max(0, min(wanted, available))
    for period, window in windows.items():
        row = usage.get(period)
        if row is None:
            session.add(ProviderUsage(provider_id=limits.provider_id, period=period,
                                      window_start=window[0], used=granted))  # fmt: skip
        elif row.window_start != window[0]:
            row.window_start, row.used = window[0], granted
        else:
            row.used += granted
    if limits.per_second:
        start = max(state.paced_until or now, now)
        state.paced_until = start + timedelta(seconds=granted / limits.per_second)
        if limited_by == "per_second":  # the next message fits once the burst allows it
            frees_at = max(now, state.paced_until - timedelta(seconds=PACE_BURST_SECONDS))
    await session.commit()
    if granted >= wanted:
        return Grant(granted)
    return Grant(granted, frees_at, limited_by)


async def _locked_state(session: AsyncSession, provider_id: int) -> ProviderState:
    """The provider's shared state, locked until the transaction ends (created if missing).
    An UPDATE first: it takes the row lock on PostgreSQL and the write lock on SQLite, so two
    processes never both read and then both write."""
    lock = (
        update(ProviderState)
        .where(ProviderState.provider_id == provider_id)
        .values(grants=ProviderState.grants + 1)
        .returning(ProviderState)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    state = (await session.scalars(lock)).one_or_none()
    if state is None:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        await session.execute(
            dialect.insert(ProviderState)
            .values(provider_id=provider_id, grants=0)
            .on_conflict_do_nothing(index_elements=["provider_id"])
        )
        state = (await session.scalars(lock)).one()
    return state


async def _usage(session: AsyncSession, provider_id: int) -> dict[str, ProviderUsage]:
    rows = await session.scalars(
        select(ProviderUsage).where(ProviderUsage.provider_id == provider_id)
    )
    return {row.period: row for row in rows}


async def _room(
    session: AsyncSession,
    limits: Limits,
    state: ProviderState,
    usage: dict[str, ProviderUsage],
    windows: dict[str, tuple[datetime, datetime]],
    now: datetime,
) -> dict[str, tuple[int, datetime]]:
    """Per limit: how many messages it allows now, and when it allows more."""
    room: dict[str, tuple[int, datetime]] = {}
    if limits.per_second:
        interval = 1.0 / limits.per_second
        start = max(state.paced_until or now, now)
        ahead = (start - now).total_seconds()
        allowed = (
            int((PACE_BURST_SECONDS - ahead) / interval) + 1 if ahead <= PACE_BURST_SECONDS else 0
        )
        room["per_second"] = (max(0, allowed), now)  # when more: see acquire
    day_limit, day_name = limits.per_day, "per_day"
    if limits.warming is not None:
        cap = await todays_cap(
            session, limits.warming, state, local_date(now, limits.timezone), now
        )
        if cap is not None and (day_limit is None or cap < day_limit):
            day_limit, day_name = cap, "warming"
    for name, period, limit in (
        ("per_minute", "minute", limits.per_minute),
        ("per_hour", "hour", limits.per_hour),
        (day_name, "day", day_limit),
    ):
        if limit is not None:
            room[name] = _window_room(limit, usage.get(period), windows[period])
    return room or {"none": (1 << 30, now)}


def _window_room(
    limit: int, row: ProviderUsage | None, window: tuple[datetime, datetime]
) -> tuple[int, datetime]:
    used = row.used if row is not None and row.window_start == window[0] else 0
    return (max(0, limit - used), window[1])


def _windows(limits: Limits, now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """The current minute, hour and day (local to the provider) as (start, end) in UTC. Usage is
    counted in all three whether or not each has a limit, so a limit added later starts right."""
    minute = now.replace(second=0, microsecond=0)
    hour = minute.replace(minute=0)
    return {
        "minute": (minute, minute + timedelta(minutes=1)),
        "hour": (hour, hour + timedelta(hours=1)),
        "day": day_bounds(local_date(now, limits.timezone), limits.timezone),
    }


def local_date(now: datetime, timezone: str) -> date:
    return now.astimezone(ZoneInfo(timezone)).date()


def day_bounds(day: date, timezone: str) -> tuple[datetime, datetime]:
    """A local day's start and end, as UTC instants (23 or 25 hours long across DST)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return start.astimezone(UTC), end.astimezone(UTC)
