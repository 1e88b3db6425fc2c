"""Standard Webhooks signatures (checked against the specification's published test vector) and
the generic inbound event shape."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidings.tracking.events import BounceKind, EventType
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected
from tidings.tracking.webhooks.standard import (
    generate_secret,
    normalize_generic,
    sign,
    verify_standard,
)

# The test vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_NOW = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)


def headers(
    signature: str, message_id: str = VECTOR_ID, timestamp: int = VECTOR_TIMESTAMP
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_signing_reproduces_the_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_published_test_vector_verifies() -> None:
    verify_standard(VECTOR_SECRET, headers(VECTOR_SIGNATURE), VECTOR_BODY, VECTOR_NOW)


def test_any_matching_v1_entry_is_enough_and_other_versions_are_ignored() -> None:
    listed = f"v1a,c29tZXRoaW5n v1,bm9wZQ== {VECTOR_SIGNATURE} v2,xyz"
    verify_standard(VECTOR_SECRET, headers(listed), VECTOR_BODY, VECTOR_NOW)


def test_header_names_are_matched_in_any_case() -> None:
    upper = {name.title(): value for name, value in headers(VECTOR_SIGNATURE).items()}
    verify_standard(VECTOR_SECRET, upper, VECTOR_BODY, VECTOR_NOW)


def test_a_tampered_body_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="no v1 webhook-signature matches"):
        verify_standard(
            VECTOR_SECRET, headers(VECTOR_SIGNATURE), b'{"test": 2432232315}', VECTOR_NOW
        )


def test_another_secret_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="no v1"):
        verify_standard(generate_secret(), headers(VECTOR_SIGNATURE), VECTOR_BODY, VECTOR_NOW)


def test_a_changed_id_breaks_the_signature() -> None:
    with pytest.raises(WebhookRejected, match="no v1"):
        verify_standard(
            VECTOR_SECRET, headers(VECTOR_SIGNATURE, "msg_other"), VECTOR_BODY, VECTOR_NOW
        )


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_stale_and_future_timestamps_are_rejected(offset: timedelta) -> None:
    with pytest.raises(WebhookRejected, match="away from now"):
        verify_standard(VECTOR_SECRET, headers(VECTOR_SIGNATURE), VECTOR_BODY, VECTOR_NOW + offset)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_are_rejected(missing: str) -> None:
    partial = {k: v for k, v in headers(VECTOR_SIGNATURE).items() if k != missing}
    with pytest.raises(WebhookRejected, match=f"missing {missing}"):
        verify_standard(VECTOR_SECRET, partial, VECTOR_BODY, VECTOR_NOW)


def test_a_timestamp_that_is_not_unix_seconds_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="not Unix seconds"):
        verify_standard(
            VECTOR_SECRET,
            {**headers(VECTOR_SIGNATURE), "webhook-timestamp": "1614265330.5"},
            VECTOR_BODY,
            VECTOR_NOW,
        )


def test_a_generated_secret_round_trips() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    now = datetime(2024, 5, 1, tzinfo=UTC)
    signature = sign(secret, "msg_1", int(now.timestamp()), b"{}")
    verify_standard(secret, headers(signature, "msg_1", int(now.timestamp())), b"{}", now)
    assert generate_secret() != secret


def test_an_unconfigured_secret_rejects_everything() -> None:
    with pytest.raises(WebhookRejected, match="not configured"):
        verify_standard("", headers(VECTOR_SIGNATURE), VECTOR_BODY, VECTOR_NOW)


def generic(**fields: Any) -> dict[str, Any]:
    return {"type": "bounced", "id": "evt_1", "occurred_at": "2024-05-01T12:00:00Z", **fields}


def test_a_generic_event_becomes_an_inbound_event() -> None:
    body = generic(
        delivery_id=42, recipient="reader@example.net", bounce="hard", reason="550 5.1.1"
    )
    [event] = normalize_generic(json.dumps(body).encode())
    assert event.type is EventType.bounced
    assert event.source == "generic"
    assert event.source_event_id == "evt_1"
    assert (event.delivery_id, event.recipient) == (42, "reader@example.net")
    assert (event.bounce, event.reason) == (BounceKind.hard, "550 5.1.1")
    assert event.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_a_list_of_events_with_naive_and_offset_times() -> None:
    naive = generic(
        type="opened", message_id="<m@x>", occurred_at="2024-05-01T12:00:00", machine=True
    )
    with_offset = generic(
        type="clicked",
        id="evt_2",
        recipient="r@x.net",
        url="https://e.com",
        occurred_at="2024-05-01T14:00:00+02:00",
    )
    body = [naive, with_offset]
    opened, clicked = normalize_generic(json.dumps(body).encode())
    assert opened.occurred_at == clicked.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert opened.machine and opened.provider_message_id == "<m@x>"
    assert clicked.url == "https://e.com"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not JSON"),
        (b'"bounced"', "an event object or a list"),
        (generic(recipient="r@x.net", type="exploded"), "type: Input should be"),
        (generic(recipient="r@x.net", id=""), "id: String should have at least 1 character"),
        (generic(), "needs at least one of delivery_id, message_id, recipient"),
        (generic(recipient="r@x.net", occurred_at="yesterday"), "occurred_at"),
        (generic(type="opened", recipient="r@x.net", bounce="hard"), "bounce is only for"),
        (generic(recipient="r@x.net", colour="red"), "colour: Extra inputs are not permitted"),
        ([generic(recipient="r@x.net"), generic(delivery_id=-1)], r"\[1\].delivery_id"),
        ([generic(recipient="r@x.net")] * 1001, "at most 1000"),
    ],
)
def test_an_invalid_generic_body_is_malformed_with_a_clear_reason(body: Any, message: str) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(WebhookMalformed, match=message):
        normalize_generic(raw)
