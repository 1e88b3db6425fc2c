"""Fleet quotas in the database (both dialects): the per-second pace, clock windows, the day in
the provider's timezone, and warming caps with their daily adjustments, on a controlled clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.delivery.provider_stats import Tally, record
from tidings.delivery.quota import Limits, acquire
from tidings.delivery.warming import WarmingPlan, decide
from tidings.providers.models import Provider, ProviderState, WarmingAdjustment
from tidings.security.models import AuditEntry

T0 = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)


async def add_provider(session: AsyncSession) -> int:
    provider = Provider(name="esp", kind="console")
    session.add(provider)
    await session.commit()
    return provider.id


async def test_the_pace_holds_any_second_to_the_limit_plus_its_small_burst(
    session: AsyncSession,
) -> None:
    limits = Limits(await add_provider(session), per_second=50)
    granted_at: list[datetime] = []
    now = T0
    while now < T0 + timedelta(seconds=5):
        grant = await acquire(session, limits, 40, now)
        granted_at += [now] * grant.granted
        if grant.granted < 40:
            assert grant.retry_at is not None and grant.retry_at > now
            assert grant.limited_by == "per_second"
        now += timedelta(milliseconds=10)
    most = max(
        sum(1 for t in granted_at if start <= t < start + timedelta(seconds=1))
        for start in granted_at
    )
    assert 50 <= most <= 53  # 50 a second, plus a burst of 0.05 s (2.5), plus one
    assert 250 <= len(granted_at) <= 253


async def test_minute_windows_start_again_on_the_clock(session: AsyncSession) -> None:
    limits = Limits(await add_provider(session), per_minute=10)
    assert (await acquire(session, limits, 8, T0)).granted == 8
    short = await acquire(session, limits, 5, T0 + timedelta(seconds=30))
    assert (short.granted, short.retry_at, short.limited_by) == (
        2, T0 + timedelta(minutes=1), "per_minute",
    )  # fmt: skip
    assert (await acquire(session, limits, 5, T0 + timedelta(seconds=59))).granted == 0
    assert (await acquire(session, limits, 50, T0 + timedelta(minutes=1))).granted == 10


async def test_of_two_spent_limits_the_later_to_free_up_says_when_to_come_back(
    session: AsyncSession,
) -> None:
    limits = Limits(await add_provider(session), per_minute=3, per_day=3)
    assert (await acquire(session, limits, 3, T0)).granted == 3
    spent = await acquire(session, limits, 1, T0 + timedelta(seconds=1))
    assert (spent.granted, spent.limited_by) == (0, "per_day")
    assert spent.retry_at == datetime(2026, 12, 2, tzinfo=UTC)  # not the next minute


async def test_the_daily_cap_counts_in_the_providers_timezone(session: AsyncSession) -> None:
    zone = ZoneInfo("America/New_York")
    limits = Limits(await add_provider(session), per_day=100, timezone="America/New_York")
    late = datetime(2026, 12, 1, 23, 0, tzinfo=zone)  # 04:00 UTC on December 2nd
    assert (await acquire(session, limits, 100, late)).granted == 100
    # Past midnight in UTC, still December 1st in New York: the day's cap is spent.
    still_today = await acquire(session, limits, 1, datetime(2026, 12, 2, 4, 30, tzinfo=UTC))
    assert still_today.granted == 0
    assert still_today.retry_at == datetime(2026, 12, 2, 0, 0, tzinfo=zone)
    assert (await acquire(session, limits, 1, datetime(2026, 12, 2, 0, 1, tzinfo=zone))).granted


async def test_no_limits_grant_everything_without_touching_the_database(
    session: AsyncSession,
) -> None:
    assert (await acquire(session, Limits(1), 5000, T0)).granted == 5000
    assert await session.scalar(select(ProviderState)) is None


STEPS = WarmingPlan(steps=[5, 10, 20])


async def sent_yesterday(
    session: AsyncSession, provider_id: int, when: datetime, **counts: int
) -> None:
    await record(session, {provider_id: Tally(**counts)}, when)
    await session.commit()


async def test_warming_caps_each_day_and_adjusts_by_the_last_days_figures(
    session: AsyncSession,
) -> None:
    provider_id = await add_provider(session)
    limits = Limits(provider_id, warming=STEPS)
    day = timedelta(days=1)

    first = await acquire(session, limits, 8, T0)
    assert (first.granted, first.limited_by) == (5, "warming")
    assert first.retry_at == datetime(2026, 12, 2, tzinfo=UTC)  # overflow waits for tomorrow

    await sent_yesterday(session, provider_id, T0, sent=5)
    assert (await acquire(session, limits, 100, T0 + day)).granted == 10  # advanced

    await sent_yesterday(session, provider_id, T0 + day, sent=100, bounced_hard=6)
    assert (await acquire(session, limits, 100, T0 + 2 * day)).granted == 10  # held: 6% bounces

    await sent_yesterday(session, provider_id, T0 + 2 * day, sent=100, bounced_hard=20)
    assert (await acquire(session, limits, 100, T0 + 3 * day)).granted == 5  # cut: 12% a day

    await sent_yesterday(session, provider_id, T0 + 3 * day, sent=1000, complained=3)
    paused = await acquire(session, limits, 100, T0 + 4 * day)
    assert paused.granted == 0 and paused.limited_by.startswith("paused")

    actions = [
        a.action
        for a in await session.scalars(select(WarmingAdjustment).order_by(WarmingAdjustment.id))
    ]
    assert actions == ["start", "advance", "hold", "cut", "pause"]
    alert = await session.scalar(select(AuditEntry).where(AuditEntry.action == "provider.paused"))
    assert alert is not None and "0.300%" in str(alert.detail)


def test_the_warming_rule_in_words() -> None:
    plan = WarmingPlan()  # 50 -> 3,000 over 30 days
    assert (plan.volume(1), plan.volume(30), plan.volume(31)) == (50, 3000, None)
    assert [plan.volume(d) for d in (2, 7, 15)] == [58, 117, 361]  # x1.15 a day
    assert WarmingPlan(curve="linear").volume(2) == 152
    good, idle = Tally(sent=1000, bounced_hard=10), Tally()
    assert decide(plan, 3, 70, good).action == "advance"
    assert decide(plan, 3, 70, idle).action == "hold"
    assert decide(plan, 3, 70, Tally(sent=1000, complained=2)).action == "hold"  # 0.2% > 0.1%
    assert decide(plan, 3, 70, Tally(sent=1000, complained=3)).action == "pause"
    cut = decide(plan, 3, 70, Tally(sent=1000, bounced_hard=101))
    assert (cut.action, cut.cap) == ("cut", 50)  # halved, never below the first step
    done = decide(plan, 30, 3000, good)
    assert (done.action, done.cap) == ("done", None)
