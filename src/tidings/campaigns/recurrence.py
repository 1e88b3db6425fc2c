"""Campaign schedules, one-time or recurring, and the next time each one runs.

The scheduler stores a campaign's ``next_run_at`` and after each run asks :func:`next_run_after` for
the first run after the slot it fired, or after *now*: a campaign that was down fires its overdue
slot once, not once per missed slot. Every datetime in and out is aware; results are UTC.

Semantics (each one is tested in tests/campaigns/test_recurrence.py):

- A schedule recurs by a frequency (``secondly`` .. ``monthly`` with an ``interval``) or by an
  RFC 5545 RRULE, never both, in an IANA ``timezone`` (default UTC).
- ``daily``, ``weekly``, ``monthly`` and every RRULE, whatever its FREQ, follow the local wall
  clock: a daily 09:00 Europe/Berlin campaign runs at 09:00 local on both sides of each DST change.
  ``secondly``, ``minutely`` and ``hourly`` are elapsed time from ``start``: every 3600 s is
  "hourly", across DST too.
- A local time that does not exist (spring-forward gap) runs moved forward by the gap: 02:30 on
  Berlin's spring-forward day runs at 03:30. An ambiguous local time (fall-back) runs once, at its
  first occurrence (fold=0). Two local times that fall on the same instant make one run.
- Months follow RRULE semantics as dateutil implements them, for the shorthand and RRULEs alike:
  monthly from the 31st skips months without a 31st (Jan 31, Mar 31, May 31, ...). For the last day
  of every month use ``FREQ=MONTHLY;BYMONTHDAY=-1``.
- The first run is the rule's first occurrence at or after ``start``. Unlike RFC 5545's DTSTART, a
  start that the RRULE excludes (a Wednesday for ``BYDAY=MO``) is not a run: the first run is the
  next Monday at the start's time of day. COUNT counts the rule's occurrences.
- ``until`` is inclusive; ``count`` is the total number of occurrences, the first included. Each may
  be a field or part of the RRULE (``UNTIL=20261231T235959Z``, ``COUNT=5``), given once; a schedule
  has at most one of the two, as RFC 5545 requires.

Bounded work: dateutil walks a rule period by period from its start, and a search that matches
nothing stops only in year 9999. So rules are checked when a schedule is built (``_rule_parts``,
``_first_within``) and each search starts near the instant asked about (``_WallClock``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import MAXYEAR, UTC, datetime, timedelta
from enum import StrEnum
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import rrule as du

from tidings.errors import RuleViolation

HORIZON_YEARS = 10  # an interval spans at most this; a rule's first run comes within it
MAX_COUNT = 10_000
MAX_PREVIEW = 1000
MAX_TIMES_OF_DAY = 24  # BYHOUR x BYMINUTE x BYSECOND combinations for FREQ=DAILY and coarser
_HORIZON = timedelta(days=3653)
_COUNT_SPAN = timedelta(days=36525)  # a COUNT must be reached within 100 years of start
_MAX_JUMP = timedelta(days=1)  # largest UTC offset change in tzdata (Samoa skipped 2011-12-30)
_CYCLE = 400  # years after which the Gregorian calendar repeats: same weekdays, same leap days
_EPOCH = datetime(1, 1, 1)  # a Monday
_FREQS = {"YEARLY": du.YEARLY, "MONTHLY": du.MONTHLY, "WEEKLY": du.WEEKLY, "DAILY": du.DAILY,
          "HOURLY": du.HOURLY, "MINUTELY": du.MINUTELY, "SECONDLY": du.SECONDLY}  # fmt: skip
_PER_YEAR = {"YEARLY": 1, "MONTHLY": 12, "WEEKLY": 52, "DAILY": 365, "HOURLY": 8760,
             "MINUTELY": 525_600, "SECONDLY": 31_536_000}  # fmt: skip
# A rule's periods: months for YEARLY (12) and MONTHLY (1), fixed lengths for the others.
_PERIODS: dict[int, int | timedelta] = {
    du.YEARLY: 12, du.MONTHLY: 1, du.WEEKLY: timedelta(weeks=1), du.DAILY: timedelta(days=1),
    du.HOURLY: timedelta(hours=1), du.MINUTELY: timedelta(minutes=1),
}  # fmt: skip
_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_BYDAY = re.compile(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)")
_NUMBERS = {  # part: smallest and largest value, and whether negatives (from the end) are allowed
    "BYSECOND": (0, 59, False), "BYMINUTE": (0, 59, False), "BYHOUR": (0, 23, False),
    "BYMONTHDAY": (1, 31, True), "BYYEARDAY": (1, 366, True), "BYWEEKNO": (1, 53, True),
    "BYMONTH": (1, 12, False), "BYSETPOS": (1, 366, True),
}  # fmt: skip
# Sub-daily rules get no day parts and no BYSETPOS: FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30 or
# FREQ=MINUTELY;BYSETPOS=2 make dateutil visit every minute until 9999, and FREQ=DAILY with
# BYHOUR/BYMINUTE says what such a rule would.
_DAY_PARTS = ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYSETPOS")
_DAYS_PER_PERIOD = {du.YEARLY: 366, du.MONTHLY: 31, du.WEEKLY: 7, du.DAILY: 1}
_DAY_CHOOSERS = {"BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY"}  # without them: dtstart's day
_TIME_PARTS = (("BYHOUR", du.HOURLY), ("BYMINUTE", du.MINUTELY), ("BYSECOND", du.SECONDLY))
_KNOWN = ("FREQ", "INTERVAL", "UNTIL", "COUNT", "WKST", *_NUMBERS, "BYDAY")
_Bounds = tuple[datetime | None, int | None]  # until, count


class ScheduleError(RuleViolation, ValueError):
    """A schedule that cannot run; the message says what is wrong and what is allowed."""

    code = "invalid_schedule"


class Frequency(StrEnum):
    secondly = "secondly"
    minutely = "minutely"
    hourly = "hourly"
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


_ELAPSED = {Frequency.secondly: timedelta(seconds=1), Frequency.minutely: timedelta(minutes=1),
            Frequency.hourly: timedelta(hours=1)}  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """When a campaign runs. Neither ``frequency`` nor ``rrule``: it runs once, at ``start``."""

    start: datetime
    timezone: str = "UTC"
    frequency: Frequency | None = None
    interval: int = 1
    rrule: str | None = None
    until: datetime | None = None
    count: int | None = None
    _plan: _Elapsed | _WallClock = field(init=False, repr=False, compare=False)
    _first: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start = _aware_utc(self.start, "start")
        if start.microsecond or not 1900 <= start.year <= 9000:
            raise ScheduleError(f"start must be whole seconds in the years 1900..9000, got {start}")
        zone = _zone(self.timezone)
        try:
            frequency = None if self.frequency is None else Frequency(self.frequency)
        except ValueError:
            allowed = ", ".join(Frequency)
            raise ScheduleError(f"frequency {self.frequency!r}: allowed are {allowed}") from None
        if frequency is not None and self.rrule is not None:
            raise ScheduleError("give a frequency (with interval) or an rrule, not both")
        if self.rrule is not None and self.interval != 1:
            raise ScheduleError("interval goes with frequency; put INTERVAL=n in the rrule")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "frequency", frequency)
        parts = _rule_parts(self.rrule) if self.rrule is not None else {}
        until, count = _bounds(self, parts, start)
        if frequency is not None:
            _check_interval(frequency.upper(), self.interval)
        plan: _Elapsed | _WallClock
        if frequency is None and self.rrule is None:
            if until is not None or count is not None:
                raise ScheduleError("until and count apply to recurring schedules only")
            plan = _Elapsed(start, timedelta(seconds=1), None, 1)  # once: a count of 1
        elif frequency in _ELAPSED:
            plan = _Elapsed(start, _ELAPSED[frequency] * self.interval, until, count)
        else:
            parts = parts or _rule_parts(f"FREQ={frequency};INTERVAL={self.interval}")
            plan = _wall_clock(parts, start, zone, (until, count))
        first = plan.next_after(start - timedelta(microseconds=1))
        if first is None:
            raise ScheduleError(f"the schedule has no run between start {start} and until {until}")
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_first", first)


def next_run_after(schedule: Schedule, after: datetime) -> datetime | None:
    """The first run strictly after ``after`` (aware), in UTC; None once the schedule is done."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware (UTC), got naive {after}")
    return schedule._plan.next_after(after)


def first_run(schedule: Schedule) -> datetime:
    """The first run: ``start``, or for an RRULE that excludes start its first occurrence after."""
    return schedule._first


def occurrences(schedule: Schedule, after: datetime, limit: int) -> list[datetime]:
    """Up to ``limit`` runs after ``after``, for previews ("the next 5 runs")."""
    if not 0 <= limit <= MAX_PREVIEW:
        raise ValueError(f"limit must be 0..{MAX_PREVIEW}, got {limit}")
    runs: list[datetime] = []
    while len(runs) < limit:
        run = next_run_after(schedule, runs[-1] if runs else after)
        if run is None:
            break
        runs.append(run)
    return runs


def describe(schedule: Schedule) -> str:
    """A short sentence for people: "every 2 weeks on Sunday at 10:00 (Europe/Berlin), 5 times"."""
    local = schedule.start.astimezone(ZoneInfo(schedule.timezone))
    zone = "UTC" if schedule.timezone == "UTC" else f"({schedule.timezone})"
    clock = f"{local:%H:%M:%S}" if local.second else f"{local:%H:%M}"
    since = f"from {local:%Y-%m-%d} {clock} {zone}"
    frequency, n = schedule.frequency, schedule.interval
    if schedule.rrule is not None:
        text = f"by the rule {schedule.rrule.strip().upper().removeprefix('RRULE:')} {since}"
    elif frequency is None:
        return f"once, on {local:%Y-%m-%d} {clock} {zone}"
    else:
        unit = "day" if frequency is Frequency.daily else frequency.removesuffix("ly")
        every = f"every {unit}" if n == 1 else f"every {n} {unit}s"
        text = {
            Frequency.daily: f"{every} at {clock} {zone}",
            Frequency.weekly: f"{every} on {local:%A} at {clock} {zone}",
            Frequency.monthly: f"{every} on day {local.day} at {clock} {zone}",
        }.get(frequency, f"{every} {since}")
    if schedule.count is not None:
        text += f", {schedule.count} time{'s' * (schedule.count != 1)}"
    if schedule.until is not None:
        text += f", until {schedule.until.astimezone(local.tzinfo):%Y-%m-%d %H:%M} {zone}"
    return text


@dataclass(frozen=True)
class _Elapsed:
    """Runs at start + k * step: elapsed time, so plain arithmetic in UTC."""

    start: datetime
    step: timedelta
    until: datetime | None
    count: int | None

    def next_after(self, after: datetime) -> datetime | None:
        k = 0 if after < self.start else (after - self.start) // self.step + 1
        if self.count is not None and k >= self.count:
            return None
        try:
            run = self.start + k * self.step
        except OverflowError:  # past year 9999: the calendar is done, and so is the schedule
            return None
        return None if self.until is not None and run > self.until else run


@dataclass(frozen=True)
class _WallClock:
    """A dateutil rule over naive local wall times (dtstart: the start's), mapped to UTC.

    dateutil iterates from dtstart, so a rule a year old would walk a year of periods for each
    question. Each search instead restarts the rule at the period holding the instant asked about.
    The occurrences are the same: ``_pinned_text`` wrote down all that dateutil takes from dtstart,
    and the grid of periods (every ``interval`` weeks, months...) is counted from the start's.
    """

    rule: du.rrule  # until: the count-th occurrence, if the schedule has a count
    freq: int
    interval: int
    wkst: int
    origin: datetime  # the start as a naive local wall time
    zone: ZoneInfo
    start: datetime
    until: datetime | None

    def next_after(self, after: datetime) -> datetime | None:
        try:
            # A wall time up to one offset jump before `after` can run after it (a DST gap moves
            # it forward), so the search starts that much earlier.
            earliest = after.astimezone(self.zone).replace(tzinfo=None, fold=0) - _MAX_JUMP
            walls = self._walls_from(earliest)
        except (OverflowError, ValueError):  # `after` is at the edge of the calendar
            return None
        best: datetime | None = None
        for wall in walls:
            if wall < earliest:
                continue
            run = self._utc(wall)
            # Wall times map to instants in order, except that after a gap a later wall time can
            # land up to one jump earlier: so past best + one jump, nothing can beat best.
            if run is None or (best is not None and run >= best + _MAX_JUMP):
                break
            if self.until is not None and run > self.until + _MAX_JUMP:
                break
            if after < run and self.start <= run and (self.until is None or run <= self.until):
                best = run if best is None else min(best, run)
        return best

    def _walls_from(self, target: datetime) -> Iterator[datetime]:
        first = self._period(self.origin)
        k = (self._period(target) - first) // self.interval
        if k <= 0:  # the first period begins at the start itself, not at its period's beginning
            return iter(self.rule)
        index, unit = first + k * self.interval, _PERIODS[self.freq]
        if isinstance(unit, int):
            year, month = divmod(index * unit, 12)
            return iter(self.rule.replace(dtstart=datetime(year, month + 1, 1)))
        return iter(self.rule.replace(dtstart=_EPOCH + timedelta(days=self.wkst) + index * unit))

    def _period(self, wall: datetime) -> int:
        """Which of the frequency's periods (years, ..., minutes) ``wall`` falls in."""
        unit = _PERIODS[self.freq]
        if isinstance(unit, int):
            return (wall.year * 12 + wall.month - 1) // unit
        return (wall - _EPOCH - timedelta(days=self.wkst)) // unit  # weeks begin on WKST

    def _utc(self, wall: datetime) -> datetime | None:
        # fold=0: an ambiguous wall time is its first occurrence; a wall time in a gap gets the
        # offset from before the gap, which moves it forward by the gap (PEP 495).
        try:
            return wall.replace(tzinfo=self.zone).astimezone(UTC)
        except OverflowError:
            return None


def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(f"{name} must be timezone-aware (UTC), got naive {value}")
    return value.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):  # OSError: "Europe" is a dir
        raise ScheduleError(
            f"unknown time zone {name!r}; use an IANA name like 'Europe/Berlin' or 'UTC'"
        ) from None


def _check_interval(freq: str, interval: int) -> None:
    """Positive, and spanning at most HORIZON_YEARS, which keeps datetimes from overflowing."""
    largest = _PER_YEAR[freq] * HORIZON_YEARS
    if type(interval) is not int or not 1 <= interval <= largest:
        raise ScheduleError(f"interval must be a whole number 1..{largest} for {freq.lower()} "
                            f"(at most {HORIZON_YEARS} years), got {interval!r}")  # fmt: skip


def _rule_parts(text: str) -> dict[str, str]:
    """An RRULE's NAME=VALUE parts, upper-cased, checked against what schedules support."""
    body = text.strip().upper().removeprefix("RRULE:")
    if "DTSTART" in body:
        raise ScheduleError("an rrule must not contain DTSTART: the schedule's start begins it")
    if not re.fullmatch(r"[A-Z-]+=[A-Z0-9+,-]+(;[A-Z-]+=[A-Z0-9+,-]+)*", body):
        raise ScheduleError(
            f"rrule {text!r} is not one rule of NAME=VALUE parts joined by ';', like "
            "'FREQ=WEEKLY;BYDAY=MO' (no RDATE, EXDATE or several lines)"
        )
    parts: dict[str, str] = {}
    for name, _, value in (item.partition("=") for item in body.split(";")):
        if name not in _KNOWN or name in parts:
            problem = (
                "given twice" if name in parts else f"not supported; allowed: {', '.join(_KNOWN)}"
            )
            raise ScheduleError(f"rrule part {name} is {problem}")
        parts[name] = value
    freq = _FREQS.get(parts.get("FREQ", ""))
    if freq is None or freq == du.SECONDLY:
        raise ScheduleError(
            f"rrule needs FREQ= one of {', '.join(list(_FREQS)[:-1])} "
            "(for every N seconds use frequency 'secondly')"
        )
    for name, value in parts.items():
        _check_part(freq, name, value)
    return parts


def _check_part(freq: int, name: str, value: str) -> None:
    """Values dateutil would take silently (BYMONTHDAY=0 means every day to it) or choke on."""
    if name in _DAY_PARTS and freq > du.DAILY:
        raise ScheduleError(f"rrule {name} needs FREQ=DAILY or coarser (for times of day use "
                            "FREQ=DAILY with BYHOUR/BYMINUTE)")  # fmt: skip
    if name in ("INTERVAL", "COUNT") and not value.isdigit():
        raise ScheduleError(f"rrule {name}={value}: must be a positive whole number")
    most = 5 if freq == du.MONTHLY else 53  # the 5th Monday of a month, the 53rd of a year
    for match in (_BYDAY.fullmatch(day) for day in value.split(",") if name == "BYDAY"):
        if not match or (match[1] and (freq > du.MONTHLY or not 1 <= abs(int(match[1])) <= most)):
            problem = f"an ordinal like -1FR needs FREQ=MONTHLY or YEARLY, 1..{most} or -{most}..-1"
            raise ScheduleError(f"rrule BYDAY={value}: days are MO..SU; {problem}")
    low, high, signed = _NUMBERS.get(name, (0, 0, False))
    numbers = value.split(",") if name in _NUMBERS else []
    if not all(re.fullmatch(r"[+-]?\d{1,3}", n) for n in numbers) or not all(
        low <= abs(int(n)) <= high and (signed or int(n) >= 0) for n in numbers
    ):
        also = f" or -{high}..-{low}" if signed else ""
        raise ScheduleError(f"rrule {name}={value}: each value must be {low}..{high}{also}")


def _bounds(schedule: Schedule, parts: dict[str, str], start: datetime) -> _Bounds:
    """The schedule's until and count, from its fields or from its rrule's UNTIL and COUNT."""
    until = None if schedule.until is None else _aware_utc(schedule.until, "until")
    count = int(parts["COUNT"]) if "COUNT" in parts else schedule.count
    if ("UNTIL" in parts and until is not None) or (
        "COUNT" in parts and schedule.count is not None
    ):
        raise ScheduleError("until/count is given twice, as a field and in the rrule; give it once")
    if "UNTIL" in parts:
        try:
            until = datetime.strptime(parts["UNTIL"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            problem = f"rrule UNTIL={parts['UNTIL']}: must be a UTC date-time like 20261231T235959Z"
            raise ScheduleError(problem) from None
    if until is not None and count is not None:
        raise ScheduleError("give until or count, not both (RFC 5545 allows one end per rule)")
    if until is not None and until < start:
        raise ScheduleError(f"until {until} is before start {start}")
    if count is not None and (type(count) is not int or not 1 <= count <= MAX_COUNT):
        raise ScheduleError(f"count must be a whole number 1..{MAX_COUNT}, got {count!r}")
    return until, count


def _wall_clock(
    parts: dict[str, str], start: datetime, zone: ZoneInfo, bounds: _Bounds
) -> _WallClock:
    freq, interval = _FREQS[parts["FREQ"]], int(parts.get("INTERVAL", "1"))
    _check_interval(parts["FREQ"], interval)
    _check_times(freq, parts)
    origin = start.astimezone(zone).replace(tzinfo=None, fold=0)
    given = ";".join(f"{name}={value}" for name, value in parts.items())
    try:
        rule = du.rrulestr(_pinned_text(parts, freq, origin), dtstart=origin)
        days = _day_filter(parts, origin)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ScheduleError(f"rrule {given} is invalid: {exc}") from None
    if not isinstance(rule, du.rrule):  # cannot happen for one line without ':'
        raise ScheduleError(f"rrule {given} is a set of rules; give one rule")
    midnight, limit = origin.replace(hour=0, minute=0, second=0), origin + _HORIZON
    never = days is not None and _first_within(days, midnight, limit) is None
    if never or _first_within(rule, origin, limit) is None:
        raise ScheduleError(
            f"rrule {given} has no occurrence within {HORIZON_YEARS} years of its start "
            f"{origin:%Y-%m-%d %H:%M} ({zone.key}); a rule must run in its first {HORIZON_YEARS} "
            "years (check BYMONTH/BYMONTHDAY/BYDAY for dates that never or rarely exist)"
        )
    until, count = bounds
    if count is not None:
        rule = rule.replace(until=_count_end(rule, count, origin))
    wkst = _WEEKDAYS.index(parts.get("WKST", "MO"))
    return _WallClock(rule, freq, interval, wkst, origin, zone, start, until)


def _check_times(freq: int, parts: dict[str, str]) -> None:
    """Bound the runs per period: each search walks up to two days of them (see _WallClock)."""
    finer = [name for name, unit in _TIME_PARTS if unit > freq]
    times = math.prod(len(set(parts[name].split(","))) for name in finer if name in parts)
    limit = {du.HOURLY: 60, du.MINUTELY: 1}.get(freq, MAX_TIMES_OF_DAY)
    if times > limit:
        raise ScheduleError(
            f"rrule gives {times} run times per period ({' x '.join(finer)}); FREQ={parts['FREQ']} "
            f"allows at most {limit} (for more runs a day use FREQ=HOURLY or MINUTELY with BYHOUR)"
        )
    days = _DAYS_PER_PERIOD.get(freq, 1) if parts.keys() & _DAY_CHOOSERS else 1
    most = times * days
    if max(abs(int(n)) for n in parts.get("BYSETPOS", "0").split(",")) > most:
        raise ScheduleError(
            f"rrule BYSETPOS={parts['BYSETPOS']}: a FREQ={parts['FREQ']} period has at most {most} "
            f"runs ({times} a day), so there is no such position"
        )


def _pinned_text(parts: dict[str, str], freq: int, origin: datetime) -> str:
    """The rule with what dateutil would take from dtstart written out, so that it can restart
    at a later period (see _WallClock) and keep the start's day and time of day."""
    pinned = {"WKST": "MO", **parts}  # dateutil's own default is the process-wide calendar's
    if not parts.keys() & _DAY_CHOOSERS:
        if freq == du.YEARLY:
            pinned.setdefault("BYMONTH", str(origin.month))
        if freq in (du.YEARLY, du.MONTHLY):
            pinned["BYMONTHDAY"] = str(origin.day)
        if freq == du.WEEKLY:
            pinned["BYDAY"] = _WEEKDAYS[origin.weekday()]
    for name, unit in _TIME_PARTS:
        if unit > freq:
            pinned.setdefault(name, str(getattr(origin, name[2:].lower())))
    return ";".join(f"{n}={v}" for n, v in pinned.items() if n not in ("UNTIL", "COUNT"))


def _day_filter(parts: dict[str, str], origin: datetime) -> du.rrule | None:
    """A yearly rule for every day the rule's day parts allow, ordinals dropped: a superset of the
    rule's days whose emptiness takes one iteration per year to find, not one per day."""
    days = {n: v for n, v in parts.items() if n in _DAY_PARTS and n != "BYSETPOS"}
    if not days.keys() - {"BYMONTH"}:
        return None  # every month has days
    if "BYDAY" in days:
        days["BYDAY"] = re.sub(r"[+-]?\d+", "", days["BYDAY"])
    text = ";".join(f"{name}={value}" for name, value in days.items())
    rule = du.rrulestr(f"FREQ=YEARLY;WKST={parts.get('WKST', 'MO')};{text}", dtstart=origin)
    return rule if isinstance(rule, du.rrule) else None


def _first_within(rule: du.rrule, origin: datetime, limit: datetime) -> datetime | None:
    """The rule's first occurrence from ``origin`` if it comes by ``limit``, in bounded time.

    dateutil gives up on a rule that matches nothing only in year 9999: ~3 million iterations for
    FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30. The calendar repeats every 400 years, so we search a copy
    moved forward by whole cycles to just before 9999: it sees the same weekdays and leap days,
    and dateutil stops after at most HORIZON_YEARS + 400 years.
    """
    shift = max(0, (MAXYEAR - 1 - HORIZON_YEARS - origin.year) // _CYCLE) * _CYCLE
    try:
        first = next(iter(rule.replace(dtstart=origin.replace(year=origin.year + shift))), None)
    except (ValueError, IndexError) as exc:  # dateutil finds some empty rules only as it iterates
        raise ScheduleError(f"rrule has no occurrence: {exc}") from None
    if first is None or first.replace(year=first.year - shift) > limit:
        return None
    return first.replace(year=first.year - shift)


def _count_end(rule: du.rrule, count: int, origin: datetime) -> datetime:
    """The wall time of the count-th occurrence: as the rule's until, it lets a search start at
    any period instead of counting from the start. Bounded: the rule matches (_first_within) and
    the walk stops 100 years out."""
    walls = list(islice(rule.replace(until=origin + _COUNT_SPAN), count))
    if len(walls) < count:
        raise ScheduleError(f"count {count} is not reached within 100 years of start "
                            f"({len(walls)} runs); use until")  # fmt: skip
    return walls[-1]
