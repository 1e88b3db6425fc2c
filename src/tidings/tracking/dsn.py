"""Reports that come back by mail, as events: RFC 3464 delivery status notifications (bounces,
delays, successes) and RFC 5965 ARF feedback reports (complaints).

The input is whatever a stranger's server sent, so parsing never raises: a message that is not a
report we can read gives no events. Plain-text bounces of old MTAs (no message/delivery-status
part) are not guessed at; every MTA in use today can send a standard report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime

import structlog

from tidings.tracking.bounces import classify, enhanced_status
from tidings.tracking.events import BounceKind, EventType, InboundEvent

log = structlog.get_logger(__name__)

REASON_LIMIT = 500  # characters of "status diagnostic" kept in an event's reason
_VALUE_LIMIT = 500  # characters of each field kept in an event's raw dict
_MAX_DEPTH = 8  # MIME nesting we look into; a report is two levels deep at most
_ID_LENGTH = 32  # hex characters of a source_event_id (128 bits)
# Our messages have one recipient each (a few after an alias expands): a report of thousands is
# a crafted one, and its events stop here instead of flooding the sink.
MAX_RECIPIENTS = 100

_STATUS_PARTS = {"message/delivery-status", "message/global-delivery-status"}
_FEEDBACK_PARTS = {"message/feedback-report"}
_RETURNED_PARTS = {
    "text/rfc822-headers",
    "message/rfc822",
    "message/global",
    "message/global-headers",
}
_ACTION_EVENTS = {
    "failed": EventType.bounced,
    "delayed": EventType.deferred,
    "delivered": EventType.delivered,
    "relayed": EventType.delivered,
    "expanded": EventType.delivered,
}
_ACTION_BY_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}
# A recipient field met again in the same group means a new group began without its blank line.
_GROUP_STARTERS = {"original-recipient", "final-recipient", "action", "status"}
_RECIPIENT_FIELDS = {"original-recipient", "final-recipient", "action"}

_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:(.*)")  # RFC 5322 field name: printable ASCII but ":"
_MSG_ID = re.compile(r"<([!-;=?-~]+)>")  # printable ASCII but "<" and ">"
_OUR_MSG_ID = re.compile(r"(\d{1,18})\.delivery@[!-;=?-~]+")  # mime.message_id's form
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SPACES = re.compile(r"\s+")
_TYPED = re.compile(r"\s*[A-Za-z0-9][A-Za-z0-9._+-]*\s*;(.*)", re.DOTALL)  # "smtp; 550 ..."
# Arrival-Dates from clocks set in the future are not believed beyond this.
_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    """One per-recipient group of a delivery status notification."""

    recipient: str | None  # the address we mailed: Original-Recipient if given, else Final
    action: str  # failed, delayed, delivered, relayed or expanded
    status: str | None  # the enhanced status code as reported: "5.1.1"
    diagnostic: str | None  # the remote server's reply, without its "smtp;" type
    remote_mta: str | None
    final_recipient: str | None = None  # where it ended up, after any forwarding


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """An RFC 3464 delivery status notification."""

    report_id: str  # the report's own Message-ID, else a digest of its body
    reporting_mta: str | None
    arrival_date: datetime | None  # aware UTC
    original_message_id: str | None  # without angle brackets
    recipients: tuple[DsnRecipient, ...]


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """An RFC 5965 feedback report: a reader marked our message as spam (or fraud, virus...)."""

    report_id: str
    feedback_type: str  # abuse, fraud, virus, other
    recipient: str | None
    arrival_date: datetime | None
    original_message_id: str | None
    user_agent: str | None  # the reporter's software, e.g. "Yahoo!-Mail-Feedback/2.0"
    reported_domain: str | None = None
    source_ip: str | None = None


Report = DeliveryReport | FeedbackReport


def events_from_report(data: bytes, received_at: datetime) -> list[InboundEvent]:
    """The events a report message says, one per recipient group (or one complaint); [] for a
    message that is not a report. ``received_at`` stands in for dates the report lacks."""
    report = parse_report(data)
    if isinstance(report, DeliveryReport):
        return [_recipient_event(report, r, received_at) for r in report.recipients]
    if isinstance(report, FeedbackReport):
        return [] if report.feedback_type == "not-spam" else [_complaint(report, received_at)]
    return []


def parse_report(data: bytes) -> Report | None:
    """The delivery or feedback report in a message, or None when it holds neither."""
    try:
        return _parse_message(message_from_bytes(data, policy=compat32), data)
    except Exception as exc:
        # The email package raises on a few pathological inputs (RecursionError on thousands
        # of nested multiparts, LookupError on some charsets). An unreadable message is not a
        # report, and one bad message must not stop the receiver: say so and carry on.
        log.warning("report_unreadable", error=type(exc).__name__, size=len(data))
        return None


def delivery_id_from_message_id(message_id: str | None) -> int | None:
    """Our delivery id from a Message-ID that we made (tidings.delivery.mime.message_id)."""
    match = _OUR_MSG_ID.fullmatch(message_id or "")
    return int(match[1]) if match else None


def _parse_message(message: Message, data: bytes) -> Report | None:
    parts = list(_report_parts(message))
    report_id = _report_id(message, data)
    for part in parts:
        content_type = part.get_content_type()
        if content_type in _STATUS_PARTS:
            return _delivery_report(part, parts, message, report_id)
        if content_type in _FEEDBACK_PARTS:
            return _feedback_report(part, parts, message, report_id)
    return None


def _report_parts(part: Message, depth: int = 0) -> Iterator[Message]:
    """Every part, depth first, without entering attached messages: a report quoted inside the
    returned original is not this report."""
    yield part
    payload = part.get_payload()
    if part.get_content_maintype() != "multipart" or not isinstance(payload, list):
        return
    if depth >= _MAX_DEPTH:
        return
    for child in payload:
        if isinstance(child, Message):
            yield from _report_parts(child, depth + 1)


def _delivery_report(
    status_part: Message, parts: list[Message], message: Message, report_id: str
) -> DeliveryReport:
    groups = _field_groups(_body_text(status_part))
    per_message: dict[str, str] = {}
    recipients: list[DsnRecipient] = []
    for group in groups:
        for name, value in group.items():
            per_message.setdefault(name, value)
        recipient = _dsn_recipient(group)
        if recipient is not None and len(recipients) < MAX_RECIPIENTS:
            recipients.append(recipient)
    # Gmail repeats the original's Message-ID among its per-message fields.
    own_candidates = [per_message.get("x-original-message-id")]
    return DeliveryReport(
        report_id=report_id,
        reporting_mta=_typed_value(per_message.get("reporting-mta")),
        arrival_date=_date(per_message.get("arrival-date")),
        original_message_id=_original_message_id(_returned_headers(parts), message, own_candidates),
        recipients=tuple(recipients),
    )


def _dsn_recipient(group: dict[str, str]) -> DsnRecipient | None:
    """The recipient a group describes, or None for a group that describes none (the
    per-message group, or one without an action we could tell)."""
    if not _RECIPIENT_FIELDS & group.keys():
        return None
    status = _status(group.get("status"))
    action = _action(group.get("action"), status)
    if action is None:
        return None
    final = _address(group.get("final-recipient"))
    return DsnRecipient(
        recipient=_address(group.get("original-recipient")) or final,
        action=action,
        status=status,
        diagnostic=_typed_value(group.get("diagnostic-code")),
        remote_mta=_typed_value(group.get("remote-mta")),
        final_recipient=final,
    )


def _feedback_report(
    feedback_part: Message, parts: list[Message], message: Message, report_id: str
) -> FeedbackReport:
    fields: dict[str, str] = {}
    for group in _field_groups(_body_text(feedback_part)):
        for name, value in group.items():
            fields.setdefault(name, value)
    returned = _returned_headers(parts)
    recipient = _address(fields.get("original-rcpt-to"))
    if recipient is None and returned is not None:
        # Many feedback loops redact Original-Rcpt-To; the returned To may survive.
        recipient = _address(_header(returned, "To"))
    return FeedbackReport(
        report_id=report_id,
        # A report without its (required) type is still a complaint; RFC 5965 calls the
        # unclassifiable kind "other".
        feedback_type=_first_word(fields.get("feedback-type")) or "other",
        recipient=recipient,
        arrival_date=_date(fields.get("arrival-date") or fields.get("received-date")),
        original_message_id=_original_message_id(returned, message, []),
        user_agent=_bounded(fields.get("user-agent")),
        reported_domain=_bounded(fields.get("reported-domain")),
        source_ip=_bounded(fields.get("source-ip")),
    )


def _field_groups(text: str) -> list[dict[str, str]]:
    """The blank-line separated groups of "Name: value" fields of a report part, names
    lowercased, folded values unfolded; the first of a repeated field wins.

    Read from the part's text (see _message_body) rather than from the email package's blocks:
    those come with an empty block for each extra blank line, a block that swallows the next
    group when its blank line was lost, and nothing usable when the part is transfer-encoded.
    """
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        field = _FIELD.fullmatch(line)
        if not line.strip():
            if current:
                groups.append(current)
            current, last = {}, None
        elif line[0] in " \t" or field is None:
            # A folded line, or a wrapped one that lost its indentation: both continue the
            # field above (text before any field is ignored).
            if last is not None:
                current[last] = f"{current[last]} {line.strip()}"
        else:
            name = field[1].lower()
            if name in _GROUP_STARTERS and name in current:
                groups.append(current)
                current = {}
            if name in current:
                last = None  # a repeated field: the first wins, and its folded lines are dropped
            else:
                current[name] = field[2].strip()
                last = name
    if current:
        groups.append(current)
    return groups


def _body_text(part: Message) -> str:
    return _body_bytes(part).decode("utf-8", "replace")


def _body_bytes(part: Message) -> bytes:
    """The decoded body of a part, of any type."""
    if part.get_content_maintype() != "message":
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    return _decode_transfer(_message_body(part), str(part.get("Content-Transfer-Encoding", "")))


def _message_body(part: Message) -> bytes:
    """A message/* part's body put back together as bytes. The email package parses it into
    Message objects (message/delivery-status: one per blank-line separated block) and does not
    undo a transfer encoding, which some MTAs set anyway. Of an attached multipart message only
    the headers are kept: they are all we read of it.

    Header values come from ``raw_items`` (which the package keeps for its generator) as they
    arrived, where ``items`` would garble UTF-8 (RFC 6533 reports). The generator itself would
    refold every field: seconds for a crafted 10 MB part.
    """
    lines: list[bytes] = []
    payload = part.get_payload()
    for block in payload if isinstance(payload, list) else []:
        if isinstance(block, Message):
            lines += [_raw_bytes(f"{name}: {value}") for name, value in block.raw_items()]
            body = block.get_payload(decode=True)  # bytes as they came (None: a multipart)
            lines += [b"", body, b""] if isinstance(body, bytes) else [b""]
    return b"\n".join(lines)


def _raw_bytes(text: str) -> bytes:
    """The bytes the email package read as ``text`` (it keeps non-ASCII ones as surrogates)."""
    return text.encode("utf-8", "surrogateescape")


def _decode_transfer(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "base64":
        try:
            return base64.b64decode(body)  # characters outside the alphabet are skipped
        except binascii.Error:
            return body
    if encoding == "quoted-printable":
        return quopri.decodestring(body)
    return body


def _returned_headers(parts: list[Message]) -> Message | None:
    """The headers of the original message, as returned in the report (whole or headers only)."""
    for part in parts:
        if part.get_content_type() in _RETURNED_PARTS:
            return BytesHeaderParser(policy=compat32).parsebytes(_body_bytes(part))
    return None


def _original_message_id(
    returned: Message | None, message: Message, own_candidates: list[str | None]
) -> str | None:
    """The original's Message-ID: from the returned headers, else the report's own fields,
    else the report's In-Reply-To and References. Ours wins over a stranger's id."""
    candidates = [_header(returned, "Message-ID")] if returned is not None else []
    candidates += own_candidates
    candidates += [_header(message, "In-Reply-To"), _header(message, "References")]
    ids: list[str] = [found for value in candidates for found in _MSG_ID.findall(value or "")]
    ours = [i for i in ids if delivery_id_from_message_id(i) is not None]
    return (ours or ids)[0] if ids else None


def _report_id(message: Message, data: bytes) -> str:
    """What identifies a report when it arrives twice: its own Message-ID, else its body (the
    headers above it gain Received lines on the way)."""
    own = _MSG_ID.search(_header(message, "Message-ID") or "")
    if own:
        return own[1]
    end = _HEADER_END.search(data)
    body = data[end.end() :] if end else data
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _recipient_event(
    report: DeliveryReport, recipient: DsnRecipient, received_at: datetime
) -> InboundEvent:
    event_type = _ACTION_EVENTS[recipient.action]
    return InboundEvent(
        type=event_type,
        occurred_at=_occurred_at(report.arrival_date, received_at),
        source="dsn",
        # By the final recipient: the groups of an expanded alias share their original one.
        source_event_id=_event_id(
            report.report_id, recipient.final_recipient or recipient.recipient, recipient.action
        ),
        delivery_id=delivery_id_from_message_id(report.original_message_id),
        recipient=recipient.recipient,
        bounce=_bounce_kind(event_type, recipient),
        reason=_reason(recipient.status, recipient.diagnostic),
        raw=_compact(
            {
                "report": "delivery-status",
                "reporting_mta": report.reporting_mta,
                "arrival_date": report.arrival_date.isoformat() if report.arrival_date else None,
                "original_message_id": report.original_message_id,
                "final_recipient": recipient.final_recipient,
                "action": recipient.action,
                "status": recipient.status,
                "diagnostic": recipient.diagnostic,
                "remote_mta": recipient.remote_mta,
            }
        ),
    )


def _complaint(report: FeedbackReport, received_at: datetime) -> InboundEvent:
    return InboundEvent(
        type=EventType.complained,
        occurred_at=_occurred_at(report.arrival_date, received_at),
        source="dsn",
        source_event_id=_event_id(report.report_id, report.recipient, "complained"),
        delivery_id=delivery_id_from_message_id(report.original_message_id),
        recipient=report.recipient,
        reason=report.feedback_type,
        raw=_compact(
            {
                "report": "feedback-report",
                "feedback_type": report.feedback_type,
                "user_agent": report.user_agent,
                "reported_domain": report.reported_domain,
                "source_ip": report.source_ip,
                "arrival_date": report.arrival_date.isoformat() if report.arrival_date else None,
                "original_message_id": report.original_message_id,
            }
        ),
    )


def _bounce_kind(event_type: EventType, recipient: DsnRecipient) -> BounceKind | None:
    if event_type is EventType.bounced:
        return classify(
            _specific_status(recipient.status, recipient.diagnostic), recipient.diagnostic
        )
    if event_type is EventType.deferred:
        return BounceKind.soft
    return None


def _specific_status(status: str | None, diagnostic: str | None) -> str | None:
    """The status to classify by. Exim (and others) report the catch-all "5.0.0" and leave the
    real code to the diagnostic ("550 5.1.1 User unknown"); then the diagnostic decides."""
    if status is not None and status.endswith(".0.0") and diagnostic:
        return None
    return status


def _event_id(report_id: str, recipient: str | None, action: str) -> str:
    key = f"{report_id}\n{recipient or ''}\n{action}"
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:_ID_LENGTH]


def _occurred_at(arrival_date: datetime | None, received_at: datetime) -> datetime:
    if arrival_date is None or arrival_date > received_at + _CLOCK_SKEW:
        return received_at
    return arrival_date


def _reason(status: str | None, diagnostic: str | None) -> str | None:
    text = " ".join(value for value in (status, diagnostic) if value)
    return text[:REASON_LIMIT] or None


def _status(value: str | None) -> str | None:
    """The enhanced code of a Status field ("5.1.1 (bad mailbox)" → "5.1.1")."""
    return enhanced_status(value) or _bounded(value)


def _action(value: str | None, status: str | None) -> str | None:
    """The action, lowercased; a missing or unknown one is read from the status class."""
    action = _first_word(value)
    if action in _ACTION_EVENTS:
        return action
    return _ACTION_BY_CLASS.get((status or "")[:1])


def _address(value: str | None) -> str | None:
    """The address of a recipient field: "rfc822; <Ann@Example.org>" → "ann@example.org"."""
    text = _typed_value(value)
    if text is None:
        return None
    bracketed = _MSG_ID.findall(text)  # the same brackets as a Message-ID's
    address = bracketed[0] if bracketed else text.split()[0]  # drop a trailing "(comment)"
    return address.lower()[:_VALUE_LIMIT]


def _typed_value(value: str | None) -> str | None:
    """A field value without its type: "dns; mx.example.org" → "mx.example.org"."""
    typed = _TYPED.fullmatch(value or "")
    return _bounded(typed[1] if typed else value)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000": UTC, with no claim about local time
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError):  # not a date, or one past year 1 or 9999
        return None


def _header(message: Message, name: str) -> str | None:
    """The first ``name`` header as it came, UTF-8 decoded (see _message_body)."""
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return _raw_bytes(str(value)).decode("utf-8", "replace")
    return None


def _first_word(value: str | None) -> str | None:
    words = (value or "").split()
    return words[0].lower()[:_VALUE_LIMIT] if words else None


def _bounded(value: str | None) -> str | None:
    """A value with its whitespace collapsed and its length bounded; None when empty."""
    text = _SPACES.sub(" ", value or "").strip()
    return text[:_VALUE_LIMIT] or None


def _compact(fields: dict[str, str | None]) -> dict[str, str]:
    return {name: value for name, value in fields.items() if value is not None}
