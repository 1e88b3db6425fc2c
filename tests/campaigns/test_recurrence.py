"""Schedules and their next runs: DST, month ends, until and count, refused rules, properties."""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count as counting
from itertools import islice, pairwise, takewhile
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import rrulestr
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from tidings.campaigns.recurrence import (
    Frequency,
    Schedule,
    ScheduleError,
    describe,
    first_run,
    next_run_after,
    occurrences,
)
from tidings.errors import RuleViolation

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN).astimezone(UTC)


def runs_of(schedule: Schedule, limit: int = 10) -> list[datetime]:
    return occurrences(schedule, schedule.start - timedelta(seconds=1), limit)


def local(runs: Iterable[datetime], zone: ZoneInfo = BERLIN) -> list[str]:
    return [f"{run.astimezone(zone):%Y-%m-%d %H:%M %Z}" for run in runs]


def gaps(runs: list[datetime]) -> set[timedelta]:
    return {later - earlier for earlier, later in pairwise(runs)}


# --- daylight saving time ----------------------------------------------------------------------


def test_daily_campaign_stays_at_nine_local_across_both_dst_changes() -> None:
    spring = Schedule(start=berlin(2026, 3, 27, 9), timezone="Europe/Berlin", frequency="daily")
    autumn = Schedule(start=berlin(2026, 10, 23, 9), timezone="Europe/Berlin", frequency="daily")

    assert local(runs_of(spring, 4)) == [
        "2026-03-27 09:00 CET", "2026-03-28 09:00 CET",
        "2026-03-29 09:00 CEST", "2026-03-30 09:00 CEST",
    ]  # fmt: skip
    assert [run.hour for run in runs_of(spring, 4)] == [8, 8, 7, 7]  # the UTC offset changed
    assert local(runs_of(autumn, 4)) == [
        "2026-10-23 09:00 CEST", "2026-10-24 09:00 CEST",
        "2026-10-25 09:00 CET", "2026-10-26 09:00 CET",
    ]  # fmt: skip
    assert [run.hour for run in runs_of(autumn, 4)] == [7, 7, 8, 8]


def test_weekly_campaign_stays_at_its_local_time_across_dst() -> None:
    schedule = Schedule(start=berlin(2026, 3, 22, 9), timezone="Europe/Berlin", frequency="weekly")

    assert local(runs_of(schedule, 3)) == [
        "2026-03-22 09:00 CET", "2026-03-29 09:00 CEST", "2026-04-05 09:00 CEST",
    ]  # fmt: skip
    assert gaps(runs_of(schedule, 3)) == {timedelta(days=7) - timedelta(hours=1), timedelta(days=7)}


def test_hourly_is_every_3600_seconds_even_across_dst() -> None:
    for start in (berlin(2026, 3, 29, 0), berlin(2026, 10, 25, 0)):
        schedule = Schedule(start=start, timezone="Europe/Berlin", frequency=Frequency.hourly)
        assert gaps(runs_of(schedule, 6)) == {timedelta(hours=1)}

    spring = Schedule(start=berlin(2026, 3, 29, 0), timezone="Europe/Berlin", frequency="hourly")
    assert [run.astimezone(BERLIN).hour for run in runs_of(spring, 4)] == [0, 1, 3, 4]


def test_an_hourly_rrule_follows_the_wall_clock_and_runs_once_per_local_hour() -> None:
    schedule = Schedule(
        start=berlin(2026, 10, 25, 1), timezone="Europe/Berlin", rrule="RRULE:FREQ=HOURLY"
    )

    # Local 02:00 happens twice that night; the rule runs at the first one only.
    assert local(runs_of(schedule, 3)) == [
        "2026-10-25 01:00 CEST", "2026-10-25 02:00 CEST", "2026-10-25 03:00 CET",
    ]  # fmt: skip


def test_a_daily_time_inside_the_spring_forward_gap_moves_forward_by_the_gap() -> None:
    schedule = Schedule(
        start=berlin(2026, 3, 28, 2, 30), timezone="Europe/Berlin", frequency="daily"
    )

    assert local(runs_of(schedule, 3)) == [
        "2026-03-28 02:30 CET", "2026-03-29 03:30 CEST", "2026-03-30 02:30 CEST",
    ]  # fmt: skip


def test_a_daily_time_inside_the_fall_back_hour_runs_once_at_its_first_occurrence() -> None:
    schedule = Schedule(
        start=berlin(2026, 10, 24, 2, 30), timezone="Europe/Berlin", frequency="daily"
    )
    first_half_past_two = utc(2026, 10, 25, 0, 30)  # 02:30 CEST; 01:30 UTC is 02:30 CET

    assert local(runs_of(schedule, 3)) == [
        "2026-10-24 02:30 CEST", "2026-10-25 02:30 CEST", "2026-10-26 02:30 CET",
    ]  # fmt: skip
    assert next_run_after(schedule, first_half_past_two) == utc(2026, 10, 26, 1, 30)


def test_lord_howe_half_hour_gap_and_samoa_skipped_day_make_one_run_per_instant() -> None:
    howe = ZoneInfo("Australia/Lord_Howe")  # 02:00 -> 02:30 on the first Sunday of October
    quarter_past_two = datetime(2026, 10, 3, 2, 15, tzinfo=howe).astimezone(UTC)
    schedule = Schedule(start=quarter_past_two, timezone="Australia/Lord_Howe", frequency="daily")
    assert local(runs_of(schedule, 2), howe)[1] == "2026-10-04 02:45 +11"

    apia = ZoneInfo("Pacific/Apia")  # 2011-12-30 did not happen there
    ten = datetime(2011, 12, 29, 10, tzinfo=apia).astimezone(UTC)
    samoa = Schedule(start=ten, timezone="Pacific/Apia", frequency="daily")
    assert local(runs_of(samoa, 3), apia) == [
        "2011-12-29 10:00 -10", "2011-12-31 10:00 +14", "2012-01-01 10:00 +14",
    ]  # fmt: skip


# --- month ends, the seed's example, bounds ------------------------------------------------------


def test_monthly_from_the_31st_skips_months_without_one() -> None:
    schedule = Schedule(start=utc(2026, 1, 31, 10), frequency="monthly")

    assert [f"{run:%m-%d}" for run in runs_of(schedule, 5)] == [
        "01-31", "03-31", "05-31", "07-31", "08-31",
    ]  # fmt: skip


def test_bymonthday_minus_one_runs_on_the_last_day_of_every_month() -> None:
    schedule = Schedule(start=utc(2027, 12, 31, 10), rrule="FREQ=MONTHLY;BYMONTHDAY=-1")

    assert [f"{run:%Y-%m-%d}" for run in runs_of(schedule, 4)] == [
        "2027-12-31", "2028-01-31", "2028-02-29", "2028-03-31",
    ]  # fmt: skip


def test_seed_003_weekly_tech_news_runs_every_sunday_at_ten_utc() -> None:
    schedule = Schedule(start=utc(2026, 2, 1, 10), frequency="weekly", interval=1)

    assert first_run(schedule) == utc(2026, 2, 1, 10)
    assert next_run_after(schedule, utc(2026, 2, 1, 10)) == utc(2026, 2, 8, 10)
    assert occurrences(schedule, utc(2026, 2, 8, 10), 2) == [
        utc(2026, 2, 15, 10),
        utc(2026, 2, 22, 10),
    ]
    assert describe(schedule) == "every week on Sunday at 10:00 UTC"


def test_seed_003_black_friday_runs_once() -> None:
    schedule = Schedule(start=utc(2026, 11, 28))

    assert first_run(schedule) == utc(2026, 11, 28)
    assert next_run_after(schedule, utc(2026, 11, 27)) == utc(2026, 11, 28)
    assert next_run_after(schedule, utc(2026, 11, 28)) is None
    assert describe(schedule) == "once, on 2026-11-28 00:00 UTC"


def test_after_downtime_the_next_run_is_the_first_slot_after_now_not_every_missed_one() -> None:
    schedule = Schedule(start=utc(2026, 2, 1, 10), frequency="daily")
    overdue_slot, now = utc(2026, 2, 2, 10), utc(2026, 2, 9, 12)

    assert next_run_after(schedule, max(overdue_slot, now)) == utc(2026, 2, 10, 10)


def test_until_is_inclusive() -> None:
    schedule = Schedule(start=utc(2026, 1, 1, 10), frequency="daily", until=utc(2026, 1, 3, 10))

    assert runs_of(schedule) == [utc(2026, 1, 1, 10), utc(2026, 1, 2, 10), utc(2026, 1, 3, 10)]
    assert next_run_after(schedule, utc(2026, 1, 3, 10)) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"frequency": "weekly", "count": 3},
        {"rrule": "FREQ=WEEKLY;COUNT=3"},
        {"rrule": "FREQ=WEEKLY;UNTIL=20260115T100000Z"},
    ],
)
def test_count_and_until_end_a_schedule_given_as_fields_or_in_the_rrule(
    fields: dict[str, Any],
) -> None:
    schedule = Schedule(start=utc(2026, 1, 1, 10), **fields)

    assert runs_of(schedule) == [utc(2026, 1, 1, 10), utc(2026, 1, 8, 10), utc(2026, 1, 15, 10)]
    assert next_run_after(schedule, utc(2026, 1, 8, 12)) == utc(2026, 1, 15, 10)
    assert next_run_after(schedule, utc(2026, 1, 15, 10)) is None


def test_count_on_an_elapsed_frequency_counts_the_first_run_too() -> None:
    schedule = Schedule(start=utc(2026, 1, 1), frequency="hourly", interval=2, count=3)

    assert runs_of(schedule) == [utc(2026, 1, 1, 0), utc(2026, 1, 1, 2), utc(2026, 1, 1, 4)]


def test_the_first_run_of_an_rrule_that_excludes_the_start_is_its_first_occurrence() -> None:
    wednesday = utc(2026, 1, 7, 9)
    schedule = Schedule(start=wednesday, rrule="FREQ=WEEKLY;BYDAY=MO", count=2)

    assert first_run(schedule) == utc(2026, 1, 12, 9)
    assert runs_of(schedule) == [utc(2026, 1, 12, 9), utc(2026, 1, 19, 9)]


def test_a_rule_running_for_years_is_searched_near_the_instant_asked_about() -> None:
    start, step, after = utc(2026, 1, 1, 0, 0, 5), timedelta(minutes=7), utc(2031, 5, 5, 5, 5, 5)
    every_7_minutes = Schedule(start=start, rrule="FREQ=MINUTELY;INTERVAL=7")
    assert next_run_after(every_7_minutes, after) == start + ((after - start) // step + 1) * step

    new_york = ZoneInfo("America/New_York")
    rule = "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,TH"
    start, after = datetime(2026, 1, 5, 9, tzinfo=new_york), datetime(2090, 6, 1, tzinfo=new_york)
    fortnightly = Schedule(start=start.astimezone(UTC), timezone="America/New_York", rrule=rule)
    walked_from_the_start = rrulestr(rule, dtstart=start.replace(tzinfo=None))
    expected = walked_from_the_start.after(after.replace(tzinfo=None))
    assert expected is not None
    assert next_run_after(fortnightly, after) == expected.replace(tzinfo=new_york).astimezone(UTC)


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        (
            {"frequency": "weekly", "interval": 2, "count": 5, "timezone": "Europe/Berlin"},
            "every 2 weeks on Sunday at 11:00 (Europe/Berlin), 5 times",
        ),
        ({"frequency": "daily"}, "every day at 10:00 UTC"),
        (
            {"frequency": "monthly", "until": utc(2026, 6, 1)},
            "every month on day 1 at 10:00 UTC, until 2026-06-01 00:00 UTC",
        ),
        ({"frequency": "hourly", "interval": 2}, "every 2 hours from 2026-02-01 10:00 UTC"),
        (
            {"rrule": "rrule:freq=monthly;byday=-1fr"},
            "by the rule FREQ=MONTHLY;BYDAY=-1FR from 2026-02-01 10:00 UTC",
        ),
    ],
)
def test_describe_says_when_a_campaign_runs(fields: dict[str, Any], sentence: str) -> None:
    assert describe(Schedule(start=utc(2026, 2, 1, 10), **fields)) == sentence


def test_after_must_be_aware_and_previews_are_bounded() -> None:
    schedule = Schedule(start=utc(2026, 2, 1, 10), frequency="daily")

    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next_run_after(schedule, datetime(2026, 2, 1, 10))
    with pytest.raises(ValueError, match=r"limit must be 0\.\.1000"):
        occurrences(schedule, utc(2026, 2, 1), 1001)


# --- what is refused, and why --------------------------------------------------------------------

START = utc(2026, 1, 6, 10)  # a Tuesday


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start": datetime(2026, 2, 1, 10)}, "start must be timezone-aware"),
        ({"start": START.replace(microsecond=5)}, "start must be whole seconds"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'; use an IANA"),
        ({"timezone": "Europe"}, "unknown time zone 'Europe'"),
        ({"frequency": "fortnightly"}, "frequency 'fortnightly': allowed are secondly, minutely"),
        (
            {"frequency": "daily", "interval": 0},
            r"interval must be a whole number 1\.\.3650 for daily",
        ),
        ({"frequency": "hourly", "interval": 10**9}, r"1\.\.87600 for hourly \(at most 10 years\)"),
        ({"frequency": "weekly", "rrule": "FREQ=WEEKLY"}, "frequency .* or an rrule, not both"),
        ({"rrule": "FREQ=WEEKLY", "interval": 2}, "put INTERVAL=n in the rrule"),
        ({"frequency": "daily", "until": START, "count": 2}, "give until or count, not both"),
        (
            {"frequency": "daily", "until": utc(2026, 1, 5)},
            "until 2026-01-05 00:00:00\\+00:00 is before",
        ),
        ({"frequency": "daily", "until": datetime(2026, 2, 1)}, "until must be timezone-aware"),
        ({"frequency": "daily", "count": 0}, r"count must be a whole number 1\.\.10000, got 0"),
        ({"frequency": "daily", "count": 1_000_000}, r"1\.\.10000, got 1000000"),
        ({"count": 2}, "until and count apply to recurring schedules only"),
        ({"rrule": "every monday"}, "is not one rule of NAME=VALUE parts"),
        ({"rrule": "FREQ=DAILY;BYDAY="}, "is not one rule of NAME=VALUE parts"),
        ({"rrule": "FREQ=DAILY\nEXDATE:20260107T100000Z"}, "is not one rule"),
        ({"rrule": "DTSTART:20260101T000000\nRRULE:FREQ=DAILY"}, "must not contain DTSTART"),
        ({"rrule": "FREQ=FORTNIGHTLY"}, "rrule needs FREQ= one of YEARLY, MONTHLY"),
        ({"rrule": "FREQ=DAILY;FREQ=WEEKLY"}, "rrule part FREQ is given twice"),
        ({"rrule": "FREQ=DAILY;X-COLOR=RED"}, "X-COLOR is not supported; allowed: FREQ"),
        ({"rrule": "FREQ=DAILY;INTERVAL=X"}, "INTERVAL=X: must be a positive whole number"),
        ({"rrule": "FREQ=DAILY;BYHOUR=25"}, r"BYHOUR=25: each value must be 0\.\.23"),
        (
            {"rrule": "FREQ=MONTHLY;BYMONTHDAY=0"},
            r"BYMONTHDAY=0: each value must be 1\.\.31 or -31",
        ),
        ({"rrule": "FREQ=MONTHLY;BYDAY=6MO"}, r"BYDAY=6MO: .* 1\.\.5 or -5\.\.-1"),
        ({"rrule": "FREQ=WEEKLY;BYDAY=1MO"}, "needs FREQ=MONTHLY or YEARLY"),
        ({"rrule": "FREQ=DAILY;UNTIL=20261231"}, "UNTIL=20261231: must be a UTC date-time like"),
        ({"rrule": "FREQ=DAILY;UNTIL=20261231T000000"}, "must be a UTC date-time"),
        ({"rrule": "FREQ=DAILY;COUNT=3", "count": 3}, "count is given twice"),
        ({"rrule": "FREQ=DAILY;COUNT=3", "count": 0}, "count is given twice"),
        ({"rrule": "FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z"}, "give until or count, not both"),
        ({"rrule": "FREQ=HOURLY;INTERVAL=4;BYHOUR=3"}, "is invalid: Invalid rrule byxxx"),
        (
            {"rrule": "FREQ=DAILY;BYHOUR=9,10,11,12,13,14,15,16,17;BYMINUTE=0,15,30,45"},
            "36 run times per period .* FREQ=DAILY allows at most 24",
        ),
        ({"rrule": "FREQ=MINUTELY;BYSECOND=0,30"}, "FREQ=MINUTELY allows at most 1"),
        ({"rrule": "FREQ=YEARLY", "count": 200}, "count 200 is not reached within 100 years"),
        (
            {"rrule": "FREQ=WEEKLY;BYDAY=MO", "until": utc(2026, 1, 11)},
            "the schedule has no run between start",
        ),
    ],
)
def test_a_bad_schedule_is_refused_with_what_is_wrong_and_what_is_allowed(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(**{"start": START, **fields})


def test_schedule_errors_are_rule_violations_so_the_api_answers_422() -> None:
    assert issubclass(ScheduleError, RuleViolation)
    assert issubclass(ScheduleError, ValueError)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30", "use frequency 'secondly'"),
        ("FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30", "BYMONTH needs FREQ=DAILY or coarser"),
        ("FREQ=HOURLY;BYDAY=MO", "BYDAY needs FREQ=DAILY or coarser"),
        ("FREQ=MINUTELY;BYSETPOS=2", "BYSETPOS needs FREQ=DAILY or coarser"),
        ("FREQ=DAILY;BYSETPOS=2", "BYSETPOS=2: a FREQ=DAILY period has at most 1 runs"),
        ("FREQ=WEEKLY;BYSETPOS=2", "BYSETPOS=2: a FREQ=WEEKLY period has at most 1 runs"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no occurrence within 10 years"),
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "no occurrence within 10 years"),
        ("FREQ=WEEKLY;BYMONTH=4;BYMONTHDAY=31", "no occurrence within 10 years"),
        ("FREQ=DAILY;INTERVAL=7;BYDAY=MO", "no occurrence within 10 years"),  # only Tuesdays
        ("FREQ=MONTHLY;BYMONTH=2;BYDAY=5MO", "no occurrence within 10 years"),  # next: 2044
        ("FREQ=YEARLY;BYWEEKNO=53;BYMONTH=1;BYMONTHDAY=1;BYDAY=MO", "no occurrence within"),
    ],
)
def test_rules_that_never_or_rarely_match_are_refused_before_they_can_spin(
    rule: str, message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule(start=START, rrule=rule)


def test_bysetpos_picks_the_last_weekday_of_each_month() -> None:
    rule = "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"
    schedule = Schedule(start=START, timezone="Europe/Berlin", rrule=rule)

    assert local(runs_of(schedule, 3)) == [
        "2026-01-30 11:00 CET", "2026-02-27 11:00 CET", "2026-03-31 11:00 CEST",
    ]  # fmt: skip


def test_a_rare_rule_within_the_horizon_is_accepted() -> None:
    leap_days = Schedule(start=START, rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29")

    assert runs_of(leap_days, 2) == [utc(2028, 2, 29, 10), utc(2032, 2, 29, 10)]


# --- properties over random schedules ------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
RULES = [
    "FREQ=WEEKLY;BYDAY=MO,WE,FR",
    "FREQ=MONTHLY;BYMONTHDAY=-1",
    "FREQ=MONTHLY;BYDAY=-1SU;BYHOUR=2;BYMINUTE=30",
    "FREQ=DAILY;INTERVAL=3;BYDAY=MO,TU,WE,TH,FR",
    "FREQ=DAILY;BYHOUR=1,2,3;BYMINUTE=0,30",
    "FREQ=HOURLY;INTERVAL=2",
    "FREQ=MINUTELY;INTERVAL=45;BYHOUR=1,2,3",
    # the days clocks change somewhere, at the hours they change
    "FREQ=YEARLY;BYMONTH=3,4,10,11;BYDAY=1SU,2SU,-1SU;BYHOUR=1,2;BYMINUTE=0,15,30,45",
]
ELAPSED = {"secondly": 1, "minutely": 60, "hourly": 3600}


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    start = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 12, 31)))
    kind = draw(st.sampled_from([*Frequency, *RULES]))
    end = draw(st.sampled_from(["none", "until", "count"]))
    fields: dict[str, Any] = {
        "start": start.replace(microsecond=0, tzinfo=UTC),
        "timezone": draw(st.sampled_from(ZONES)),
    }
    if kind in RULES:
        fields["rrule"] = kind
    else:
        fields |= {"frequency": kind, "interval": draw(st.integers(1, 5))}
    if end == "until":
        fields["until"] = fields["start"] + draw(st.timedeltas(timedelta(0), timedelta(days=120)))
    if end == "count":
        fields["count"] = draw(st.integers(1, 30))
    try:
        return Schedule(**fields)
    except ScheduleError:  # an until before the rule's first occurrence
        reject()


def walked_from_the_start(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """The schedule's runs, the slow obvious way: every occurrence from the start, each local wall
    time mapped to UTC with fold=0 (a gap's times move forward), in the rule's order. Elapsed time
    is start + k * step, from the k just before ``after`` (walking seconds would take all day)."""
    if schedule.frequency in ELAPSED:
        step = timedelta(seconds=ELAPSED[schedule.frequency] * schedule.interval)
        ks = counting(max(0, (after - schedule.start) // step))
        within_count = takewhile(lambda k: schedule.count is None or k < schedule.count, ks)
        return (schedule.start + k * step for k in within_count)
    zone = ZoneInfo(schedule.timezone)
    rule = schedule.rrule or f"FREQ={schedule.frequency};INTERVAL={schedule.interval}"
    walls = rrulestr(rule, dtstart=schedule.start.astimezone(zone).replace(tzinfo=None))
    return (wall.replace(tzinfo=zone).astimezone(UTC) for wall in islice(walls, schedule.count))


def expected_runs(schedule: Schedule, after: datetime, limit: int) -> list[datetime]:
    found: list[datetime] = []
    for run in walked_from_the_start(schedule, after):
        # Gaps in these zones are under a day, so a run a day past these cannot come before them.
        if len(found) >= limit and run > found[limit - 1] + timedelta(days=1):
            break
        if schedule.until and run > schedule.until + timedelta(days=1):
            break
        ok = after < run and schedule.start <= run and not (schedule.until and run > schedule.until)
        if ok and run not in found and (len(found) < limit or run < found[-1]):
            insort(found, run)
            del found[limit:]
    return found


@settings(deadline=None)
@given(schedules())
def test_runs_are_aware_utc_strictly_increasing_and_within_until_and_count(
    schedule: Schedule,
) -> None:
    runs = runs_of(schedule, 40)

    assert runs and runs[0] == first_run(schedule) >= schedule.start
    assert all(run.tzinfo is UTC for run in runs)
    assert all(earlier < later for earlier, later in pairwise(runs))
    assert schedule.until is None or runs[-1] <= schedule.until
    assert schedule.count is None or len(runs) <= schedule.count


@settings(deadline=None)
@given(schedules())
def test_occurrences_agree_with_asking_next_run_after_again_and_again(schedule: Schedule) -> None:
    asked: list[datetime] = []
    after = schedule.start - timedelta(seconds=1)
    while len(asked) < 25 and (run := next_run_after(schedule, after)) is not None:
        asked.append(run)
        after = run

    assert occurrences(schedule, schedule.start - timedelta(seconds=1), 25) == asked


@settings(deadline=None)
@given(schedules(), st.data())
def test_any_two_instants_between_two_runs_get_the_same_next_run(
    schedule: Schedule, data: st.DataObject
) -> None:
    runs = runs_of(schedule, 20)
    if len(runs) < 2:
        return
    i = data.draw(st.integers(0, len(runs) - 2))
    between = st.timedeltas(timedelta(0), runs[i + 1] - runs[i] - timedelta(microseconds=1))
    first, second = runs[i] + data.draw(between), runs[i] + data.draw(between)

    assert next_run_after(schedule, first) == next_run_after(schedule, second) == runs[i + 1]


@settings(deadline=None)
@given(schedules(), st.timedeltas(timedelta(days=-3), timedelta(days=400)))
def test_runs_match_a_walk_from_the_start_wherever_the_search_begins(
    schedule: Schedule, offset: timedelta
) -> None:
    after = schedule.start + offset

    assert occurrences(schedule, after, 8) == expected_runs(schedule, after, 8)


RULE_PARTS = [
    *(f"FREQ={freq}" for freq in ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY")),
    "INTERVAL=0", "INTERVAL=3", "INTERVAL=13", "BYMONTH=2", "BYMONTH=2,4", "BYMONTH=13",
    "BYMONTHDAY=30", "BYMONTHDAY=-1", "BYMONTHDAY=0", "BYDAY=MO", "BYDAY=-1FR", "BYDAY=5SU",
    "BYDAY=2MO,-2FR", "BYSETPOS=-1", "BYSETPOS=2", "BYHOUR=2", "BYHOUR=0,12", "BYHOUR=25",
    "BYMINUTE=0,30", "BYSECOND=0,30", "BYWEEKNO=53", "BYYEARDAY=366", "WKST=SU", "WKST=XX",
    "COUNT=3", "UNTIL=20300101T000000Z", "UNTIL=2030", "BYEASTER=0", "", "DTSTART=1",
]  # fmt: skip


@settings(deadline=None)
@given(
    st.lists(st.sampled_from(RULE_PARTS), min_size=1, max_size=5).map(";".join),
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 12, 31)),
    st.sampled_from(ZONES),
)
def test_any_rule_text_is_either_a_working_schedule_or_a_schedule_error(
    rule: str, start: datetime, zone: str
) -> None:
    try:
        schedule = Schedule(
            start=start.replace(microsecond=0, tzinfo=UTC), timezone=zone, rrule=rule
        )
    except ScheduleError:
        return
    first = first_run(schedule)
    later = next_run_after(schedule, first)

    assert first >= schedule.start
    assert later is None or later > first
