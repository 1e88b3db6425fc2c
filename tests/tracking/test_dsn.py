"""Delivery status notifications and feedback reports read into events, from samples written in
the styles of Postfix, Exim, Office 365, Gmail and Sendmail and of an ARF feedback loop; and
whatever bytes arrive, reading them never raises."""

from __future__ import annotations

import base64
import dataclasses
import re
from datetime import UTC, datetime

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.tracking import dsn
from tidings.tracking.dsn import (
    DeliveryReport,
    DsnRecipient,
    FeedbackReport,
    delivery_id_from_message_id,
    events_from_report,
    parse_report,
)
from tidings.tracking.events import BounceKind, EventType, InboundEvent

RECEIVED = datetime(2024, 3, 5, 16, 0, tzinfo=UTC)


def crlf(text: str) -> bytes:
    """A sample as it travels over SMTP: CRLF line ends."""
    return text.replace("\n", "\r\n").encode()


# Postfix: a hard bounce of an address that a virtual alias forwarded, with the original's
# headers only (text/rfc822-headers).
POSTFIX_HARD_BOUNCE = crlf("""\
Return-Path: <>
Received: by mx.example.org (Postfix) id 4AB12C0021; Tue,  5 Mar 2024 10:15:02 +0000 (UTC)
Date: Tue,  5 Mar 2024 10:15:02 +0000 (UTC)
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces@bounces.tidings.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4AB12C0021.1709633702/mx.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <20240305101502.4AB12C0021@mx.example.org>

This is a MIME-encapsulated message.

--4AB12C0021.1709633702/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<ann@mail.example.org> (expanded from <ann@example.org>): host
    mail.example.org[203.0.113.25] said: 550 5.1.1 <ann@mail.example.org>:
    Recipient address rejected: User unknown in virtual mailbox table (in reply
    to RCPT TO command)

--4AB12C0021.1709633702/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 4AB12C0021
X-Postfix-Sender: rfc822; bounces@bounces.tidings.example
Arrival-Date: Tue,  5 Mar 2024 10:15:01 +0000 (UTC)

Final-Recipient: rfc822; ann@mail.example.org
Original-Recipient: rfc822;Ann@Example.org
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; 550 5.1.1 <ann@mail.example.org>: Recipient address
    rejected: User unknown in virtual mailbox table

--4AB12C0021.1709633702/mx.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <bounces@bounces.tidings.example>
Received: from send.tidings.example (send.tidings.example [198.51.100.20])
    by mx.example.org (Postfix) with ESMTPS id 4AB12C0021
    for <ann@example.org>; Tue,  5 Mar 2024 10:15:01 +0000 (UTC)
From: Weekly News <news@tidings.example>
To: ann@example.org
Subject: This week
Message-ID: <1234.delivery@tidings.example>
Date: Tue, 05 Mar 2024 10:15:00 +0000

--4AB12C0021.1709633702/mx.example.org--
""")

# Exim: a spam block. Exim reports the catch-all Status 5.0.0 and puts the real code in the
# diagnostic, writes Action before Final-Recipient, gives no Arrival-Date, and returns the
# whole original (message/rfc822).
EXIM_POLICY_BLOCK = crlf("""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mail.example.net>
To: bounces@bounces.tidings.example
References: <77.delivery@tidings.example>
Content-Type: multipart/report; report-type=delivery-status;
    boundary=1709640000-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1rhUaB-0004Xy-2f@mail.example.net>
Date: Tue, 05 Mar 2024 12:00:00 +0100

--1709640000-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  carol@example.net
    host mx.example.net [203.0.113.9]
    SMTP error from remote mail server after end of data:
    550 5.7.1 Message rejected as spam by Content Filtering.

--1709640000-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mail.example.net

Action: failed
Final-Recipient: rfc822;carol@example.net
Status: 5.0.0
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam by Content Filtering.

--1709640000-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <bounces@bounces.tidings.example>
Received: from send.tidings.example ([198.51.100.20])
    by mail.example.net with esmtps (TLS1.3) id 1rhUaA-0004Xu-3A
    for carol@example.net; Tue, 05 Mar 2024 12:00:00 +0100
From: Weekly News <news@tidings.example>
To: carol@example.net
Subject: This week
Message-ID: <77.delivery@tidings.example>
Date: Tue, 05 Mar 2024 11:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello Carol, here is this week's news.

--1709640000-eximdsn-1804289383--
""")

# Office 365: "Recipient not found by SMTP address lookup" (5.1.10), a human-readable part that
# is itself multipart, the headers of the original only.
OFFICE365_HARD_BOUNCE = crlf("""\
Received: from DM6PR01MB1234.namprd01.prod.outlook.com (2603:10b6:5:1a0::10)
    by DM6PR01MB1234.namprd01.prod.outlook.com; Tue, 5 Mar 2024 11:00:05 +0000
From: postmaster@contoso.example
To: <bounces@bounces.tidings.example>
Date: Tue, 5 Mar 2024 11:00:05 +0000
Content-Type: multipart/report; report-type=delivery-status;
    boundary="ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00"
MIME-Version: 1.0
Message-ID: <ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00@DM6PR01MB1234.namprd01.prod.outlook.com>
In-Reply-To: <9001.delivery@tidings.example>
References: <9001.delivery@tidings.example>
Subject: Undeliverable: This week
Auto-Submitted: auto-replied

--ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00
Content-Type: multipart/alternative; differences=Content-Type;
    boundary="c6a1b3e2-2222-4f1e-8d3c-5b6a7c8d9e0f"

--c6a1b3e2-2222-4f1e-8d3c-5b6a7c8d9e0f
Content-Type: text/plain; charset="us-ascii"

Your message to Dave@Contoso.example couldn't be delivered.
Dave wasn't found at contoso.example.

--c6a1b3e2-2222-4f1e-8d3c-5b6a7c8d9e0f
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to Dave@Contoso.example couldn't be delivered.</p></body></html>

--c6a1b3e2-2222-4f1e-8d3c-5b6a7c8d9e0f--

--ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6PR01MB1234.namprd01.prod.outlook.com
Received-From-MTA: dns;send.tidings.example
Arrival-Date: Tue, 5 Mar 2024 11:00:00 +0000

Original-Recipient: rfc822;Dave@Contoso.example
Final-Recipient: rfc822;Dave@Contoso.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not
    found by SMTP address lookup
X-Display-Name: Dave

--ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00
Content-Type: text/rfc822-headers

Received: from send.tidings.example (198.51.100.20) by
    DM6PR01MB1234.mail.protection.outlook.com; Tue, 5 Mar 2024 11:00:00 +0000
From: Weekly News <news@tidings.example>
To: <Dave@Contoso.example>
Subject: This week
Message-ID: <9001.delivery@tidings.example>
Date: Tue, 5 Mar 2024 10:59:58 +0000

--ab4fd8c2-1111-4a5b-9b49-0c6d7e8f9a00--
""")

# Gmail: "Message not delivered yet" (Action: delayed), with the original's Message-ID also
# among its per-message fields, and LF line ends as a mailbox export would have them.
GMAIL_DELAYED = b"""\
Delivered-To: bounces@bounces.tidings.example
Return-Path: <>
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces@bounces.tidings.example
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Delay)
References: <31337.delivery@tidings.example>
In-Reply-To: <31337.delivery@tidings.example>
Message-ID: <65e6f1a0.050a0220.abcd1.0000.GMR@mx.google.com>
Date: Tue, 05 Mar 2024 06:10:08 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000aa11bb22cc33dd44";
    report-type=delivery-status

--000000000000aa11bb22cc33dd44
Content-Type: multipart/related; boundary="000000000000aa11bb22cc33dd55"

--000000000000aa11bb22cc33dd55
Content-Type: multipart/alternative; boundary="000000000000aa11bb22cc33dd66"

--000000000000aa11bb22cc33dd66
Content-Type: text/plain; charset="UTF-8"

** Message not delivered yet **

There was a temporary problem delivering your message to frank@example.net.
Gmail will retry for 46 more hours. You'll be notified if the delivery fails permanently.

--000000000000aa11bb22cc33dd66
Content-Type: text/html; charset="UTF-8"

<html><body><h2>Message not delivered yet</h2></body></html>

--000000000000aa11bb22cc33dd66--
--000000000000aa11bb22cc33dd55--
--000000000000aa11bb22cc33dd44
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Arrival-Date: Tue, 05 Mar 2024 04:09:33 -0800 (PST)
X-Original-Message-ID: <31337.delivery@tidings.example>

Final-Recipient: rfc822; frank@example.net
Action: delayed
Status: 4.4.1
Diagnostic-Code: smtp; The recipient server did not accept our requests to
 connect. Learn more at https://support.google.com/mail/answer/7720
 [mx.example.net. 203.0.113.7: timed out]
Last-Attempt-Date: Tue, 05 Mar 2024 06:10:08 -0800 (PST)
Will-Retry-Until: Wed, 06 Mar 2024 04:09:33 -0800 (PST)

--000000000000aa11bb22cc33dd44
Content-Type: text/rfc822-headers

From: Weekly News <news@tidings.example>
To: frank@example.net
Subject: This week
Message-ID: <31337.delivery@tidings.example>
Date: Tue, 05 Mar 2024 12:09:30 +0000

--000000000000aa11bb22cc33dd44--
"""

# Sendmail: one report for three recipients of an expanded alias, two failed and one relayed,
# in Sendmail's upper-case "RFC822;" and "DNS;".
SENDMAIL_MULTI_RECIPIENT = crlf("""\
Return-Path: <MAILER-DAEMON@mail.example.com>
Date: Tue, 5 Mar 2024 05:00:11 -0500
From: Mail Delivery Subsystem <MAILER-DAEMON@mail.example.com>
Message-Id: <202403051000.425A0B3x012345@mail.example.com>
To: <bounces@bounces.tidings.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
    boundary="425A0B3x012345.1709632811/mail.example.com"
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)

This is a MIME-encapsulated message

--425A0B3x012345.1709632811/mail.example.com

The original message was received at Tue, 5 Mar 2024 05:00:10 -0500
from send.tidings.example [198.51.100.20]

   ----- The following addresses had permanent fatal errors -----
<gina@example.com>
    (reason: 550 5.1.1 <gina@example.com>... User unknown)
<hank@example.com>
    (reason: 552 5.2.2 Mailbox full)

--425A0B3x012345.1709632811/mail.example.com
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.com
Received-From-MTA: DNS; send.tidings.example
Arrival-Date: Tue, 5 Mar 2024 05:00:10 -0500

Final-Recipient: RFC822; gina@example.com
Action: failed
Status: 5.1.1
Remote-MTA: DNS; mx.example.com
Diagnostic-Code: SMTP; 550 5.1.1 <gina@example.com>... User unknown
Last-Attempt-Date: Tue, 5 Mar 2024 05:00:11 -0500

Final-Recipient: RFC822; hank@example.com
Action: failed
Status: 5.2.2
Remote-MTA: DNS; mx.example.com
Diagnostic-Code: SMTP; 552 5.2.2 Mailbox full
Last-Attempt-Date: Tue, 5 Mar 2024 05:00:11 -0500

Final-Recipient: RFC822; ivan@example.com
Action: relayed
Status: 2.0.0
Remote-MTA: DNS; relay.example.com
Diagnostic-Code: SMTP; 250 2.0.0 Ok: queued as 9F3E21C0

--425A0B3x012345.1709632811/mail.example.com
Content-Type: text/rfc822-headers

Return-Path: <bounces@bounces.tidings.example>
From: Weekly News <news@tidings.example>
To: team@example.com
Subject: This week
Message-ID: <4242.delivery@tidings.example>

--425A0B3x012345.1709632811/mail.example.com--
""")

# An RFC 5965 feedback report, as a mailbox provider's feedback loop sends it.
ARF_COMPLAINT = crlf("""\
From: <staff@hotmail.example>
Date: Tue, 5 Mar 2024 14:05:00 +0000
Subject: FW: This week
To: <fbl@bounces.tidings.example>
Message-ID: <arf-20240305-0001@feedback.hotmail.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
    boundary="part1_13d.2e68ed54_boundary"

--part1_13d.2e68ed54_boundary
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
198.51.100.20 on Tue, 5 Mar 2024 14:00:00 +0000.

--part1_13d.2e68ed54_boundary
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@bounces.tidings.example>
Original-Rcpt-To: <Erin@example.com>
Arrival-Date: Tue, 5 Mar 2024 14:00:00 +0000
Reported-Domain: tidings.example
Source-IP: 198.51.100.20

--part1_13d.2e68ed54_boundary
Content-Type: message/rfc822
Content-Disposition: inline

From: Weekly News <news@tidings.example>
To: erin@example.com
Subject: This week
Message-ID: <555.delivery@tidings.example>
Date: Tue, 5 Mar 2024 13:59:58 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello Erin, here is this week's news.

--part1_13d.2e68ed54_boundary--
""")

# An old MTA's bounce: plain text, no report part.
PLAIN_TEXT_BOUNCE = crlf("""\
From: MAILER-DAEMON@old.example.com
To: bounces@bounces.tidings.example
Subject: Delivery Status Notification (Failure)
Message-ID: <old-1@old.example.com>

Hi. This is the qmail-send program at old.example.com.
I'm afraid I wasn't able to deliver your message to the following addresses.

<judy@example.com>:
Sorry, no mailbox here by that name. (#5.1.1)
""")

SAMPLES = [
    POSTFIX_HARD_BOUNCE,
    EXIM_POLICY_BLOCK,
    OFFICE365_HARD_BOUNCE,
    GMAIL_DELAYED,
    SENDMAIL_MULTI_RECIPIENT,
    ARF_COMPLAINT,
    PLAIN_TEXT_BOUNCE,
]


def minimal_dsn(status: str, *, headers: str = "", returned: str | None = None) -> bytes:
    """A bare-bones report around the text of a message/delivery-status part, for the quirks."""
    returned_part = (
        f"--b\nContent-Type: text/rfc822-headers\n\n{returned}\n" if returned is not None else ""
    )
    return (
        "From: MAILER-DAEMON@mx.example.org\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n"
        f"{headers}\n"
        f"--b\nContent-Type: text/plain\n\nSorry.\n"
        f"--b\n{status}\n"
        f"{returned_part}"
        "--b--\n"
    ).encode()


STATUS_PART = "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
OURS = "Message-ID: <8.delivery@tidings.example>"


def without_event_id(events: list[InboundEvent]) -> list[InboundEvent]:
    """The events with their source_event_id checked for form and blanked (it is a digest)."""
    for event in events:
        assert event.source_event_id is not None
        assert re.fullmatch(r"[0-9a-f]{32}", event.source_event_id)
    return [dataclasses.replace(event, source_event_id=None) for event in events]


def test_a_postfix_hard_bounce_is_a_hard_bounce_of_the_address_we_mailed() -> None:
    events = events_from_report(POSTFIX_HARD_BOUNCE, RECEIVED)
    diagnostic = (
        "550 5.1.1 <ann@mail.example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert without_event_id(events) == [
        InboundEvent(
            type=EventType.bounced,
            occurred_at=datetime(2024, 3, 5, 10, 15, 1, tzinfo=UTC),
            source="dsn",
            delivery_id=1234,
            recipient="ann@example.org",  # Original-Recipient: the address we sent to
            bounce=BounceKind.hard,
            reason=f"5.1.1 {diagnostic}",
        )
    ]
    assert events[0].raw == {
        "report": "delivery-status",
        "reporting_mta": "mx.example.org",
        "arrival_date": "2024-03-05T10:15:01+00:00",
        "original_message_id": "1234.delivery@tidings.example",
        "final_recipient": "ann@mail.example.org",
        "action": "failed",
        "status": "5.1.1",
        "diagnostic": diagnostic,
        "remote_mta": "mail.example.org",
    }


def test_an_exim_spam_block_is_a_policy_bounce_by_the_code_in_its_diagnostic() -> None:
    events = events_from_report(EXIM_POLICY_BLOCK, RECEIVED)
    diagnostic = "550 5.7.1 Message rejected as spam by Content Filtering."
    assert without_event_id(events) == [
        InboundEvent(
            type=EventType.bounced,
            occurred_at=RECEIVED,  # Exim gives no Arrival-Date
            source="dsn",
            delivery_id=77,  # from the returned message/rfc822
            recipient="carol@example.net",
            bounce=BounceKind.policy,  # 5.7.1, not the catch-all 5.0.0 of the Status field
            reason=f"5.0.0 {diagnostic}",
        )
    ]
    assert events[0].raw == {
        "report": "delivery-status",
        "reporting_mta": "mail.example.net",
        "original_message_id": "77.delivery@tidings.example",
        "final_recipient": "carol@example.net",
        "action": "failed",
        "status": "5.0.0",
        "diagnostic": diagnostic,
        "remote_mta": "mx.example.net",
    }


def test_an_office365_recipient_not_found_is_a_hard_bounce() -> None:
    events = events_from_report(OFFICE365_HARD_BOUNCE, RECEIVED)
    diagnostic = (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    )
    assert without_event_id(events) == [
        InboundEvent(
            type=EventType.bounced,
            occurred_at=datetime(2024, 3, 5, 11, 0, tzinfo=UTC),
            source="dsn",
            delivery_id=9001,
            recipient="dave@contoso.example",
            bounce=BounceKind.hard,
            reason=f"5.1.10 {diagnostic}",
        )
    ]
    assert events[0].raw == {
        "report": "delivery-status",
        "reporting_mta": "DM6PR01MB1234.namprd01.prod.outlook.com",
        "arrival_date": "2024-03-05T11:00:00+00:00",
        "original_message_id": "9001.delivery@tidings.example",
        "final_recipient": "dave@contoso.example",
        "action": "failed",
        "status": "5.1.10",
        "diagnostic": diagnostic,
    }


def test_a_gmail_delay_notice_is_a_soft_deferral() -> None:
    events = events_from_report(GMAIL_DELAYED, RECEIVED)
    diagnostic = (
        "The recipient server did not accept our requests to connect. Learn more at "
        "https://support.google.com/mail/answer/7720 [mx.example.net. 203.0.113.7: timed out]"
    )
    assert without_event_id(events) == [
        InboundEvent(
            type=EventType.deferred,
            occurred_at=datetime(2024, 3, 5, 12, 9, 33, tzinfo=UTC),  # 04:09:33 PST
            source="dsn",
            delivery_id=31337,
            recipient="frank@example.net",
            bounce=BounceKind.soft,
            reason=f"4.4.1 {diagnostic}",
        )
    ]
    assert events[0].raw == {
        "report": "delivery-status",
        "reporting_mta": "googlemail.com",
        "arrival_date": "2024-03-05T12:09:33+00:00",
        "original_message_id": "31337.delivery@tidings.example",
        "final_recipient": "frank@example.net",
        "action": "delayed",
        "status": "4.4.1",
        "diagnostic": diagnostic,
    }


def test_a_sendmail_report_gives_one_event_per_recipient() -> None:
    events = events_from_report(SENDMAIL_MULTI_RECIPIENT, RECEIVED)
    arrival = datetime(2024, 3, 5, 10, 0, 10, tzinfo=UTC)  # 05:00:10 -0500
    failed = InboundEvent(
        type=EventType.bounced, occurred_at=arrival, source="dsn", delivery_id=4242
    )
    assert without_event_id(events) == [
        dataclasses.replace(
            failed,
            recipient="gina@example.com",
            bounce=BounceKind.hard,
            reason="5.1.1 550 5.1.1 <gina@example.com>... User unknown",
        ),
        dataclasses.replace(
            failed,
            recipient="hank@example.com",
            bounce=BounceKind.soft,  # a full mailbox may empty
            reason="5.2.2 552 5.2.2 Mailbox full",
        ),
        dataclasses.replace(
            failed,
            type=EventType.delivered,  # relayed: handed on to a server that sends no DSN
            recipient="ivan@example.com",
            reason="2.0.0 250 2.0.0 Ok: queued as 9F3E21C0",
        ),
    ]
    assert [e.raw["remote_mta"] for e in events if e.raw] == ["mx.example.com"] * 2 + [
        "relay.example.com"
    ]
    assert len({e.source_event_id for e in events}) == 3


def test_an_arf_report_is_a_complaint_with_its_feedback_type() -> None:
    events = events_from_report(ARF_COMPLAINT, RECEIVED)
    assert without_event_id(events) == [
        InboundEvent(
            type=EventType.complained,
            occurred_at=datetime(2024, 3, 5, 14, 0, tzinfo=UTC),
            source="dsn",
            delivery_id=555,
            recipient="erin@example.com",
            reason="abuse",
        )
    ]
    assert events[0].raw == {
        "report": "feedback-report",
        "feedback_type": "abuse",
        "user_agent": "SomeGenerator/1.0",
        "reported_domain": "tidings.example",
        "source_ip": "198.51.100.20",
        "arrival_date": "2024-03-05T14:00:00+00:00",
        "original_message_id": "555.delivery@tidings.example",
    }


def test_a_complaint_with_the_recipient_redacted_takes_it_from_the_returned_message() -> None:
    redacted = ARF_COMPLAINT.replace(b"Original-Rcpt-To: <Erin@example.com>\r\n", b"")
    [event] = events_from_report(redacted, RECEIVED)
    assert event.recipient == "erin@example.com" and event.delivery_id == 555


def test_a_not_spam_feedback_report_is_no_complaint() -> None:
    not_spam = ARF_COMPLAINT.replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert isinstance(parse_report(not_spam), FeedbackReport)
    assert events_from_report(not_spam, RECEIVED) == []


def test_parse_report_describes_the_report() -> None:
    assert parse_report(EXIM_POLICY_BLOCK) == DeliveryReport(
        report_id="E1rhUaB-0004Xy-2f@mail.example.net",
        reporting_mta="mail.example.net",
        arrival_date=None,
        original_message_id="77.delivery@tidings.example",
        recipients=(
            DsnRecipient(
                recipient="carol@example.net",
                action="failed",
                status="5.0.0",
                diagnostic="550 5.7.1 Message rejected as spam by Content Filtering.",
                remote_mta="mx.example.net",
                final_recipient="carol@example.net",
            ),
        ),
    )
    assert parse_report(ARF_COMPLAINT) == FeedbackReport(
        report_id="arf-20240305-0001@feedback.hotmail.example",
        feedback_type="abuse",
        recipient="erin@example.com",
        arrival_date=datetime(2024, 3, 5, 14, 0, tzinfo=UTC),
        original_message_id="555.delivery@tidings.example",
        user_agent="SomeGenerator/1.0",
        reported_domain="tidings.example",
        source_ip="198.51.100.20",
    )


def test_a_plain_text_bounce_of_an_old_mta_gives_no_events() -> None:
    assert parse_report(PLAIN_TEXT_BOUNCE) is None
    assert events_from_report(PLAIN_TEXT_BOUNCE, RECEIVED) == []


def test_the_same_report_received_twice_gives_the_same_event_ids() -> None:
    first = events_from_report(SENDMAIL_MULTI_RECIPIENT, RECEIVED)
    again = events_from_report(SENDMAIL_MULTI_RECIPIENT, datetime(2024, 3, 6, tzinfo=UTC))
    assert [e.source_event_id for e in first] == [e.source_event_id for e in again]
    other = events_from_report(POSTFIX_HARD_BOUNCE, RECEIVED)
    assert other[0].source_event_id not in {e.source_event_id for e in first}


def test_a_report_without_message_id_is_known_by_its_body_whatever_is_prepended() -> None:
    status = STATUS_PART + "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
    report = minimal_dsn(status, returned=OURS)
    relayed = b"Received: from relay.example.org by mx.example.org\n" + report
    [event] = events_from_report(report, RECEIVED)
    [again] = events_from_report(relayed, RECEIVED)
    assert event.source_event_id == again.source_event_id


def test_a_delayed_and_a_failed_report_of_one_message_are_two_events() -> None:
    delayed = events_from_report(GMAIL_DELAYED, RECEIVED)
    failed = GMAIL_DELAYED.replace(b"Action: delayed", b"Action: failed").replace(
        b"Message-ID: <65e6f1a0", b"Message-ID: <75e6f1a0"
    )
    [bounce] = events_from_report(failed, RECEIVED)
    assert bounce.type is EventType.bounced and bounce.source_event_id != delayed[0].source_event_id


def test_without_returned_headers_the_id_comes_from_gmails_field_or_in_reply_to() -> None:
    def without_returned_part(data: bytes) -> bytes:
        return re.sub(rb"Content-Type: text/rfc822-headers.*?(?=--0000)", b"", data, flags=re.S)

    headless = without_returned_part(GMAIL_DELAYED)
    assert b"text/rfc822-headers" not in headless
    assert events_from_report(headless, RECEIVED)[0].delivery_id == 31337  # X-Original-Message-ID

    status = STATUS_PART + "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
    replying = minimal_dsn(status, headers="In-Reply-To: <5150.delivery@tidings.example>\n")
    assert events_from_report(replying, RECEIVED)[0].delivery_id == 5150
    referring = minimal_dsn(
        status, headers="References: <x@elsewhere.example> <5151.delivery@tidings.example>\n"
    )
    assert events_from_report(referring, RECEIVED)[0].delivery_id == 5151


def test_a_message_id_that_is_not_ours_gives_no_delivery_id() -> None:
    status = STATUS_PART + "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
    report = minimal_dsn(status, returned="Message-ID: <abc.123@elsewhere.example>")
    [event] = events_from_report(report, RECEIVED)
    assert event.delivery_id is None
    assert event.raw and event.raw["original_message_id"] == "abc.123@elsewhere.example"


@pytest.mark.parametrize(
    ("message_id", "delivery_id"),
    [
        ("1234.delivery@tidings.example", 1234),
        ("<1234.delivery@tidings.example>", None),  # the id, without its brackets
        ("1234.delivery@", None),
        ("x1234.delivery@tidings.example", None),
        ("1234.deliveries@tidings.example", None),
        ("1234567890123456789012.delivery@tidings.example", None),  # past any bigint
        (None, None),
    ],
)
def test_delivery_id_from_message_id(message_id: str | None, delivery_id: int | None) -> None:
    assert delivery_id_from_message_id(message_id) == delivery_id


def test_groups_that_lost_their_blank_line_and_extra_blank_lines_are_read_apart() -> None:
    status = (
        "Content-Type: message/delivery-status\n\n\n\n"
        "Reporting-MTA: dns; mx.example.org\n"
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; bob@example.org\nAction: delayed\nStatus: 4.2.2\n"
        "  \n\n\n"
        "Action: delivered\nFinal-Recipient: rfc822; <Cyd@Example.org> (Cyd)\nStatus: 2.0.0\n"
    )
    report = parse_report(minimal_dsn(status, returned=OURS))
    assert isinstance(report, DeliveryReport) and report.reporting_mta == "mx.example.org"
    assert [(r.recipient, r.action, r.status) for r in report.recipients] == [
        ("ann@example.org", "failed", "5.1.1"),
        ("bob@example.org", "delayed", "4.2.2"),
        ("cyd@example.org", "delivered", "2.0.0"),
    ]


def test_a_transfer_encoded_status_part_is_decoded() -> None:
    fields = "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; ann@example.org\n"
    fields += "Action: failed\nStatus: 5.1.1\n"
    encoded = base64.encodebytes(fields.encode()).decode()
    status = (
        "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n" + encoded
    )
    [event] = events_from_report(minimal_dsn(status, returned=OURS), RECEIVED)
    assert (event.recipient, event.bounce, event.delivery_id) == ("ann@example.org", "hard", 8)


def test_a_utf8_report_keeps_its_international_address() -> None:
    report = (
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: message/global-delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.de\n\n"
        "Final-Recipient: utf-8; Jürgen@Bücher.example\nAction: failed\nStatus: 5.1.1\n"
        "--b\nContent-Type: message/global-headers\n\n"
        "Message-ID: <3.delivery@tidings.example>\nSubject: Grüße\n"
        "--b--\n"
    )
    [event] = events_from_report(report.encode(), RECEIVED)
    assert (event.recipient, event.delivery_id, event.bounce) == (
        "jürgen@bücher.example",
        3,
        BounceKind.hard,
    )


def test_a_returned_message_in_base64_is_decoded() -> None:
    original = (
        b"From: news@tidings.example\r\nMessage-ID: <4.delivery@tidings.example>\r\n\r\nHi\r\n"
    )
    report = minimal_dsn(
        STATUS_PART + "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
    ).replace(
        b"--b--",
        b"--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(original)
        + b"--b--",
    )
    assert events_from_report(report, RECEIVED)[0].delivery_id == 4


def test_a_report_forwarded_inside_another_message_is_not_read() -> None:
    forwarded = (
        b"From: ann@example.org\nSubject: Fwd: Undelivered Mail\n"
        b"Content-Type: multipart/mixed; boundary=outer\n\n"
        b"--outer\nContent-Type: text/plain\n\nSee below.\n"
        b"--outer\nContent-Type: message/rfc822\n\n" + POSTFIX_HARD_BOUNCE + b"\n--outer--\n"
    )
    assert events_from_report(forwarded, RECEIVED) == []


def test_a_report_of_thousands_of_recipients_is_cut_short() -> None:
    group = "Final-Recipient: rfc822; ann{}@example.org\nAction: failed\nStatus: 5.1.1\n\n"
    status = STATUS_PART + "".join(group.format(i) for i in range(5000))
    events = events_from_report(minimal_dsn(status, returned=OURS), RECEIVED)
    assert len(events) == dsn.MAX_RECIPIENTS
    assert events[-1].recipient == f"ann{dsn.MAX_RECIPIENTS - 1}@example.org"


def test_an_unknown_or_missing_action_is_read_from_the_status_class() -> None:
    status = (
        STATUS_PART
        + "Final-Recipient: rfc822; ann@example.org\nAction: bounced\nStatus: 5.1.1\n\n"
        + "Final-Recipient: rfc822; bob@example.org\nStatus: 4.4.7\n\n"
        + "Final-Recipient: rfc822; cyd@example.org\nAction: ???\n"  # nothing to go by
    )
    events = events_from_report(minimal_dsn(status, returned=OURS), RECEIVED)
    assert [(e.recipient, e.type) for e in events] == [
        ("ann@example.org", EventType.bounced),
        ("bob@example.org", EventType.deferred),
    ]


@pytest.mark.parametrize(
    "arrival_date",
    ["yesterday", "Tue, 5 Mar 2099 10:00:00 +0000", "Fri, 31 Dec 9999 23:00:00 -0500", ""],
)
def test_an_arrival_date_that_is_no_date_or_in_the_future_gives_the_received_time(
    arrival_date: str,
) -> None:
    status = (
        f"Content-Type: message/delivery-status\n\nArrival-Date: {arrival_date}\n\n"
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
    )
    [event] = events_from_report(minimal_dsn(status, returned=OURS), RECEIVED)
    assert event.occurred_at == RECEIVED


def test_a_long_diagnostic_is_cut_to_the_reason_limit() -> None:
    status = (
        STATUS_PART + "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.7.1\n"
        "Diagnostic-Code: smtp; 550 5.7.1 " + "blocked " * 200 + "\n"
    )
    [event] = events_from_report(minimal_dsn(status, returned=OURS), RECEIVED)
    assert event.reason is not None and len(event.reason) == dsn.REASON_LIMIT
    assert event.reason.startswith("5.7.1 550 5.7.1 blocked blocked")


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A sample cut, spliced and sprinkled with the bytes that matter to MIME and to fields."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    meaningful = st.sampled_from(
        [
            *(b"\r\n", b"\n\n", b"--", b":", b";", b"<", b">", b"\t", b" ", b"=?utf-8?b?", b"\xff"),
            b"Content-Type: message/delivery-status\r\n",
            b"Content-Transfer-Encoding: base64\n",
        ]
    )
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 400)))
        change = draw(st.sampled_from(["delete", "insert", "duplicate"]))
        if change == "delete":
            del data[start:end]
        elif change == "insert":
            data[start:start] = draw(meaningful | st.binary(max_size=40))
        else:
            data[start:start] = data[start:end]
    return bytes(data)


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> structlog.testing.CapturingLogger:
    """What dsn logs, so that an exception its guard catches still fails the test."""
    logger = structlog.testing.CapturingLogger()
    monkeypatch.setattr(dsn, "log", logger)
    return logger


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000) | mutated_samples())
def test_reading_never_raises_whatever_arrives(
    data: bytes, logs: structlog.testing.CapturingLogger
) -> None:
    events = events_from_report(data, RECEIVED)
    assert all(e.source == "dsn" and e.occurred_at.tzinfo is not None for e in events)
    assert all(len(e.reason or "") <= dsn.REASON_LIMIT for e in events)
    assert logs.calls == []  # nothing raised inside, either
