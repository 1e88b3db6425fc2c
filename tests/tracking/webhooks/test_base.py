"""The shared pieces: the in-memory replay guard, the timestamp window, the provider bounce
verdicts and the machine user-agent heuristic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tidings.tracking.events import BounceKind
from tidings.tracking.machines import is_machine_agent
from tidings.tracking.webhooks.base import (
    MemoryReplayGuard,
    WebhookRejected,
    check_timestamp,
    provider_bounce_kind,
)

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def test_a_key_is_accepted_once_until_it_expires() -> None:
    clock = Clock()
    guard = MemoryReplayGuard(clock=clock)
    assert await guard.first_use("token", NOW + timedelta(minutes=5))
    assert not await guard.first_use("token", NOW + timedelta(minutes=5))
    clock.now = NOW + timedelta(minutes=5)
    assert await guard.first_use("token", clock.now + timedelta(minutes=5))


async def test_expired_keys_are_forgotten() -> None:
    clock = Clock()
    guard = MemoryReplayGuard(clock=clock)
    for i in range(10):
        await guard.first_use(f"t{i}", NOW + timedelta(seconds=i + 1))
    clock.now = NOW + timedelta(seconds=5)
    await guard.first_use("new", NOW + timedelta(minutes=5))
    assert len(guard) == 6  # t5..t9 and "new"


async def test_the_guard_is_bounded_and_forgets_the_soonest_expiring_first() -> None:
    guard = MemoryReplayGuard(max_entries=3, clock=Clock())
    for i, minutes in enumerate((3, 1, 2, 4)):
        assert await guard.first_use(f"t{i}", NOW + timedelta(minutes=minutes))
    assert len(guard) == 3
    assert await guard.first_use("t1", NOW + timedelta(minutes=5))  # t1 was forgotten
    assert not await guard.first_use("t3", NOW + timedelta(minutes=5))


def test_timestamps_within_five_minutes_either_way_pass() -> None:
    for seconds in (-300, 0, 300):
        check_timestamp(str(int(NOW.timestamp()) + seconds), NOW)
    for seconds in (-301, 301):
        with pytest.raises(WebhookRejected):
            check_timestamp(int(NOW.timestamp()) + seconds, NOW)
    with pytest.raises(WebhookRejected, match="not a Unix time"):
        check_timestamp("1e400", NOW)


@pytest.mark.parametrize(
    ("permanent", "status", "diagnostic", "kind"),
    [
        (True, "5.1.1", "user unknown", BounceKind.hard),
        (True, "5.7.1", "message refused", BounceKind.policy),
        (True, None, "550 rejected: listed on a block list", BounceKind.policy),
        (True, "5.2.2", "mailbox full", BounceKind.hard),  # the provider said permanent
        (False, "5.1.1", "user unknown", BounceKind.soft),
        (None, "5.1.1", None, BounceKind.hard),
        (None, "4.2.2", None, BounceKind.soft),
    ],
)
def test_a_providers_verdict_combines_with_the_smtp_evidence(
    permanent: bool | None, status: str | None, diagnostic: str | None, kind: BounceKind
) -> None:
    assert provider_bounce_kind(permanent, status, diagnostic) is kind


@pytest.mark.parametrize(
    ("agent", "automated"),
    [
        ("Mozilla/5.0", True),
        ("Mozilla/5.0 (compatible; Googlebot/2.1)", True),
        ("python-requests/2.32", True),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0", False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Mobile/15E148", False),
        (None, False),
    ],
)
def test_machine_user_agents(agent: str | None, automated: bool) -> None:
    assert is_machine_agent(agent) is automated
