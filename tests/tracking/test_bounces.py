"""Bounce classification: enhanced status codes decide; without one, the basic reply code and the
wording of the diagnostic do, as real MTAs write them."""

from __future__ import annotations

import pytest

from tidings.tracking.bounces import classify, enhanced_status
from tidings.tracking.events import BounceKind

HARD, SOFT, POLICY = BounceKind.hard, BounceKind.soft, BounceKind.policy


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind"),
    [
        # The address is bad.
        ("5.1.1", None, HARD),
        ("5.1.10", None, HARD),  # Office 365: recipient not found by SMTP address lookup
        ("5.2.1", None, HARD),
        ("5.4.4", None, HARD),
        # It may pass.
        ("4.2.2", None, SOFT),
        ("4.7.1", None, SOFT),  # a temporary policy refusal (greylisting) is still temporary
        ("5.2.2", None, SOFT),  # mailbox full
        ("5.3.0", None, SOFT),
        ("4.4.7", "delivery time expired", SOFT),
        # The message or the sender was refused, not the address.
        ("5.7.1", None, POLICY),
        ("5.7.26", None, POLICY),  # DMARC
        ("5.2.3", None, POLICY),  # too large
        ("5.6.0", None, POLICY),
        # The status wins over the diagnostic.
        ("5.7.1", "550 5.1.1 user unknown", POLICY),
        # A code found in the diagnostic when there is no status.
        (None, "smtp; 550-5.1.1 The email account that you tried to reach does not exist.", HARD),
        (None, "550 5.7.26 Unauthenticated email is not accepted due to DMARC policy", POLICY),
        (None, "452 4.2.2 The email account that you tried to reach is over quota", SOFT),
        # Basic codes only, worded as real MTAs word them.
        (None, "550 Requested action not taken: mailbox unavailable", SOFT),  # says nothing
        (None, "550 No such user here", HARD),
        (None, "550 <ann@example.org>: Recipient address rejected: User unknown", HARD),
        (None, "554 rejected due to spam content", POLICY),
        (None, "553 Mail from 192.0.2.1 refused, see blocklist", POLICY),
        (None, "421 Service not available, closing transmission channel", SOFT),
        (None, "451 Requested action aborted: local error in processing", SOFT),
        ("550", "User unknown", HARD),
        # Nothing to go by.
        (None, None, SOFT),
        ("", "", SOFT),
        (None, "Connection timed out", SOFT),
        # IP addresses are not status codes.
        ("10.5.1.1", None, SOFT),
        (None, "connect to 10.5.1.1[10.5.1.1]:25: Connection refused", SOFT),
        (None, "host 10.4.2.2 said: 550 5.7.1 Message blocked", POLICY),
        (None, "host 10.5.1.1 said: 550 unknown user", HARD),
        (None, "connect to 192.168.250.1: Connection refused", SOFT),
    ],
)
def test_classify_tells_hard_soft_and_policy_bounces_apart(
    status: str | None, diagnostic: str | None, kind: BounceKind
) -> None:
    assert classify(status, diagnostic) is kind


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("5.1.1", "5.1.1"),
        ("smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound", "5.1.10"),
        ("550-5.7.26 Unauthenticated email", "5.7.26"),
        ("host 10.5.1.1 said: 451 4.7.1 try later", "4.7.1"),
        ("10.5.1.1", None),
        ("version 1.5.1.1", None),
        ("550 mailbox unavailable", None),
        (None, None),
    ],
)
def test_enhanced_status_finds_the_first_code_and_no_ip_address(
    text: str | None, code: str | None
) -> None:
    assert enhanced_status(text) == code


def test_a_send_result_is_a_hard_bounce_by_the_same_rule() -> None:
    from tidings.transports.base import Outcome, SendResult

    def result(detail: str, outcome: Outcome = Outcome.permanent) -> SendResult:
        return SendResult(1, outcome, detail)

    assert result("550 5.1.1 user unknown").is_hard_bounce
    assert result("550 5.2.1 mailbox disabled").is_hard_bounce
    assert result("554 5.4.4 no route").is_hard_bounce
    assert not result("554 5.7.1 blocked as spam").is_hard_bounce
    assert not result("550 user unknown").is_hard_bounce  # no enhanced code: not suppressed
    assert not result("451 4.1.1 try later", Outcome.transient).is_hard_bounce
    assert result("550 refused by 10.5.1.1").status_code is None  # an address is not a code
