"""The SES v2 transport: its SigV4 signer against botocore's, its sends against moto in server
mode (which checks every signature with botocore, stores the raw message and refuses unverified
senders), and SES's own error answers against tests/fakes/ses.py (throttling, 5xx, timeouts,
paused accounts, unknown configuration sets), which moto does not produce."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import botocore.auth
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

from tests.fakes.ses import FakeSes
from tests.live_server import free_port
from tests.transports.api_messages import outcomes, send_and_close
from tidings.transports import ses
from tidings.transports.base import Outcome, OutgoingMessage
from tidings.transports.ses import AwsCredentials, SesTransport, without_our_dkim

REGION = "eu-west-1"
SENDER = "bounces@example.com"
CREDENTIALS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
MOMENT = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def message(i: int, recipient: str | None = None, sender: str = SENDER) -> OutgoingMessage:
    to = recipient or f"reader{i}@example.org"
    data = (
        f"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=news; h=from:to; b=c2ln{i}\r\n"
        f"From: News <news@example.com>\r\nTo: {to}\r\nSubject: news {i}\r\n"
        f"Message-ID: <{i}.delivery@example.com>\r\n\r\nHello reader {i}.\r\n"
    ).encode()
    return OutgoingMessage(delivery_id=i, sender=sender, recipient=to, data=data)


# The signer, with botocore as its oracle --------------------------------------------------------


def botocore_signed(request: httpx.Request, region: str, now: datetime) -> dict[str, str]:
    """X-Amz-Date and Authorization as botocore signs the same request at the same time."""
    headers = {name: request.headers[name] for name in ("content-type", "host")}
    url = str(request.url.copy_with(query=None))
    params = request.url.params.multi_items()
    aws = AWSRequest(request.method, url, data=request.content, headers=headers, params=params)
    credentials = Credentials(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key)
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive_now):
        botocore.auth.SigV4Auth(credentials, "ses", region).add_auth(aws)
    return {"X-Amz-Date": aws.headers["X-Amz-Date"], "Authorization": aws.headers["Authorization"]}


def our_signed(request: httpx.Request, region: str, now: datetime) -> dict[str, str]:
    ses.sign_request(request, CREDENTIALS, region, "ses", now)
    return {k: request.headers[k] for k in ("X-Amz-Date", "Authorization")}


def test_a_send_email_request_is_signed_exactly_as_botocore_signs_it() -> None:
    transport = SesTransport(credentials=CREDENTIALS, region=REGION)
    request = transport.build_request([message(1)])
    expected = botocore_signed(request, REGION, MOMENT)
    assert our_signed(request, REGION, MOMENT) == expected
    assert expected["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260314/eu-west-1/ses/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, Signature="
    )


SEGMENT = st.text(string.ascii_letters + string.digits + "-_.~ %@+:=,!$'()*", min_size=1).filter(
    lambda s: s not in {".", ".."}
)
QUERY_TEXT = st.text(string.printable, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=3000),
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    query=st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT), max_size=3),
    region=st.sampled_from(["eu-west-1", "us-east-1", "ap-southeast-2", "us-gov-west-1"]),
    now=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.just(UTC)),
    content_type=st.sampled_from(["application/json", "  text/plain;   charset=utf-8 "]),
)
def test_any_body_path_query_and_time_is_signed_as_botocore_signs_it(
    body: bytes,
    segments: list[str],
    query: list[tuple[str, str]],
    region: str,
    now: datetime,
    content_type: str,
) -> None:
    url = httpx.URL(f"https://email.{region}.amazonaws.com/" + "/".join(segments), params=query)
    request = httpx.Request("POST", url, content=body, headers={"Content-Type": content_type})
    assert our_signed(request, region, now) == botocore_signed(request, region, now)


def test_the_secret_key_stays_out_of_reprs_and_requests() -> None:
    transport = SesTransport(credentials=CREDENTIALS, region=REGION)
    request = transport.build_request([message(1)])
    ses.sign_request(request, CREDENTIALS, REGION, "ses", MOMENT)
    assert CREDENTIALS.secret_access_key not in repr(CREDENTIALS)
    assert CREDENTIALS.secret_access_key not in str(request.headers) + str(request.url)


def test_a_region_that_is_not_an_aws_region_is_refused_before_it_reaches_a_url() -> None:
    with pytest.raises(ValueError, match=r"unknown AWS region 'evil\.example/x'"):
        SesTransport(credentials=CREDENTIALS, region="evil.example/x")


# Against moto in server mode --------------------------------------------------------------------


@dataclass(frozen=True)
class Moto:
    url: str
    sender: AwsCredentials  # an IAM user allowed ses:SendEmail
    reader: AwsCredentials  # an IAM user without any SES permission

    def transport(self, credentials: AwsCredentials | None = None) -> SesTransport:
        secrets = {
            "access_key_id": (credentials or self.sender).access_key_id,
            "secret_access_key": (credentials or self.sender).secret_access_key,
        }
        return ses.from_provider({"region": REGION, "endpoint_url": self.url}, secrets, 5.0)

    def raw_messages(self) -> dict[str, dict[str, Any]]:
        """What moto's SES backend stored, by message id."""
        stored = httpx.get(f"{self.url}/moto-api/data.json").json()["ses"]["RawMessage"]
        return {m["id"]: m for m in stored}


def iam_user(iam: Any, name: str, actions: list[str]) -> AwsCredentials:
    iam.create_user(UserName=name)
    if actions:
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        iam.put_user_policy(UserName=name, PolicyName="send", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return AwsCredentials(key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    """moto on a free port with example.com verified; then with moto's IAM checks on (its
    INITIAL_NO_AUTH_ACTION_COUNT), so each request's signature and permission are checked."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    admin = {"aws_access_key_id": "AKIDADMIN", "aws_secret_access_key": "admin"}
    try:
        iam = boto3.client("iam", endpoint_url=url, region_name=REGION, **admin)
        sender, reader = iam_user(iam, "sender", ["ses:SendEmail"]), iam_user(iam, "reader", [])
        sesv2 = boto3.client("sesv2", endpoint_url=url, region_name=REGION, **admin)
        sesv2.create_email_identity(EmailIdentity="example.com")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
            yield Moto(url, sender, reader)
    finally:
        server.stop()


async def test_a_message_reaches_moto_raw_for_its_recipient_with_the_ses_message_id(
    moto: Moto,
) -> None:
    sent = message(1, "first@example.org")
    [result] = await send_and_close(moto.transport(), [sent])
    assert result.outcome == Outcome.accepted, result.detail
    assert result.provider_message_id is not None
    stored = moto.raw_messages()[result.provider_message_id]
    assert stored["raw_data"].encode() == without_our_dkim(sent.data)  # SES signs instead
    assert stored["source"] == SENDER
    assert "first@example.org" in stored["destinations"]


async def test_a_batch_of_60_is_60_send_email_calls_each_result_in_batch_order(
    moto: Moto,
) -> None:
    batch = [message(i, f"batch{i}@example.org") for i in range(60)]
    results = await send_and_close(moto.transport(), batch)
    assert [r.delivery_id for r in results] == list(range(60))
    assert set(outcomes(results)) == {Outcome.accepted}
    stored = moto.raw_messages()
    for sent, result in zip(batch, results, strict=True):
        assert result.provider_message_id is not None
        assert stored[result.provider_message_id]["raw_data"].encode() == without_our_dkim(
            sent.data
        )
    assert len({r.provider_message_id for r in results}) == 60


async def test_an_unverified_sender_is_message_rejected_and_permanent_alone(moto: Moto) -> None:
    batch = [message(1), message(2, sender="news@unverified.test"), message(3)]
    results = await send_and_close(moto.transport(), batch)
    assert outcomes(results) == [Outcome.accepted, Outcome.permanent, Outcome.accepted]
    assert results[1].detail.startswith("400 MessageRejected: Did not have authority")
    assert results[1].retry_after is None


async def test_a_wrong_secret_key_fails_moto_signature_check_permanently(moto: Moto) -> None:
    wrong = AwsCredentials(moto.sender.access_key_id, "not-the-secret-key")
    [result] = await send_and_close(moto.transport(wrong), [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("403 SignatureDoesNotMatch")
    assert "not-the-secret-key" not in result.detail


async def test_an_unknown_access_key_is_permanent(moto: Moto) -> None:
    unknown = AwsCredentials("AKIAUNKNOWNKEY000000", "whatever")
    [result] = await send_and_close(moto.transport(unknown), [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("403 InvalidClientTokenId")


async def test_a_user_without_ses_send_permission_is_denied_permanently(moto: Moto) -> None:
    [result] = await send_and_close(moto.transport(moto.reader), [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail.startswith("403 AccessDenied")


# SES's error answers, from the fake -------------------------------------------------------------


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSes]:
    with FakeSes(CREDENTIALS.access_key_id, CREDENTIALS.secret_access_key, REGION) as server:
        yield server


@pytest.fixture(autouse=True)
def no_leftover_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").recover()


def fake_transport(fake: FakeSes, **options: Any) -> SesTransport:
    options.setdefault("timeout", 5.0)
    return SesTransport(credentials=CREDENTIALS, region=REGION, endpoint_url=fake.url, **options)


async def test_the_payload_carries_raw_mime_sender_tag_and_configuration_set(
    fake: FakeSes,
) -> None:
    sent = message(7, "payload@example.org")
    transport = fake_transport(fake, configuration_set="newsletters")
    [result] = await send_and_close(transport, [sent])
    assert result.outcome == Outcome.accepted, result.detail
    [accepted] = [a for a in fake.accepted if a.recipient == "payload@example.org"]
    assert accepted.message_id == result.provider_message_id
    # Our DKIM signature is left out (SES rewrites Date and Message-ID, which it covers).
    assert sent.data.startswith(b"DKIM-Signature:")
    assert accepted.payload["raw"] == sent.data.partition(b"\r\n")[2]
    assert accepted.payload["FromEmailAddress"] == SENDER
    assert accepted.payload["ConfigurationSetName"] == "newsletters"
    assert accepted.payload["EmailTags"] == [{"Name": "delivery_id", "Value": "7"}]


async def test_throttling_is_transient_and_keeps_ses_retry_after(fake: FakeSes) -> None:
    fake.reject_next("TooManyRequestsException", 429, retry_after="7")
    [result] = await send_and_close(fake_transport(fake), [message(1)])
    assert (result.outcome, result.retry_after) == (Outcome.transient, 7.0)
    assert result.detail == "429 TooManyRequestsException: injected TooManyRequestsException"


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
        ("LimitExceededException", 400),  # the daily quota: a 400 that passes with time
        ("SendingPausedException", 400),  # account-wide: an operator resumes sending
        ("AccountSuspendedException", 400),  # account-wide: not this message's fault
    ],
)
async def test_service_and_account_wide_errors_are_transient(
    fake: FakeSes, error_type: str, status: int
) -> None:
    fake.reject_next(error_type, status)
    [result] = await send_and_close(fake_transport(fake), [message(1)])
    assert result.outcome == Outcome.transient
    assert result.detail.startswith(f"{status} {error_type}: ")


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("MessageRejected", 400),
        ("MailFromDomainNotVerifiedException", 400),
        ("BadRequestException", 400),
        ("NotFoundException", 404),
        ("InvalidSignatureException", 403),
        ("UnrecognizedClientException", 403),
        ("AccessDeniedException", 403),
    ],
)
async def test_message_and_credential_errors_are_permanent(
    fake: FakeSes, error_type: str, status: int
) -> None:
    fake.reject_next(error_type, status, retry_after="5")
    [result] = await send_and_close(fake_transport(fake), [message(1)])
    assert (result.outcome, result.retry_after) == (Outcome.permanent, None)
    assert result.detail.startswith(f"{status} {error_type}: ")


async def test_an_error_type_given_only_in_the_body_is_read_there(fake: FakeSes) -> None:
    fake.reject_next("com.amazonaws.sesv2#SendingPausedException", 400, type_in_body=True)
    [result] = await send_and_close(fake_transport(fake), [message(1)])
    assert result.outcome == Outcome.transient
    assert result.detail.startswith("400 SendingPausedException: ")


async def test_an_untyped_5xx_is_transient_and_an_untyped_400_permanent(fake: FakeSes) -> None:
    fake.fail_next(502)
    fake.fail_next(400)
    transport = fake_transport(fake, concurrency=1)
    results = await send_and_close(transport, [message(1), message(2)])
    assert outcomes(results) == [Outcome.transient, Outcome.permanent]


async def test_no_answer_within_the_timeout_is_transient(fake: FakeSes) -> None:
    fake.fail_next(200, delay=1.0)
    [result] = await send_and_close(fake_transport(fake, timeout=0.2), [message(1)])
    assert result.outcome == Outcome.transient
    assert result.detail == "no answer from 127.0.0.1 within 0.2 s"


async def test_an_unknown_configuration_set_is_permanent(fake: FakeSes) -> None:
    transport = fake_transport(fake, configuration_set="no-such-set")
    [result] = await send_and_close(transport, [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail == "404 NotFoundException: no-such-set does not exist"


async def test_a_wrong_secret_is_refused_by_the_fake_in_ses_terms(fake: FakeSes) -> None:
    wrong = AwsCredentials(CREDENTIALS.access_key_id, "wrong-secret")
    transport = SesTransport(credentials=wrong, region=REGION, endpoint_url=fake.url)
    [result] = await send_and_close(transport, [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail == "403 InvalidSignatureException: signature does not match"


async def test_a_clock_20_minutes_off_gets_an_expired_signature(fake: FakeSes) -> None:
    late = datetime.now(UTC) - timedelta(minutes=20)
    transport = fake_transport(fake, clock=lambda: late)
    [result] = await send_and_close(transport, [message(1)])
    assert result.outcome == Outcome.permanent
    assert result.detail == "403 InvalidSignatureException: Signature expired"


async def test_each_request_is_signed_when_it_leaves_not_when_it_is_built(
    fake: FakeSes,
) -> None:
    signed_at: list[datetime] = []

    def clock() -> datetime:
        signed_at.append(datetime.now(UTC))
        return signed_at[-1]

    fake.fail_next(200, delay=0.3)  # holds the first request while the second waits for a slot
    transport = fake_transport(fake, concurrency=1, clock=clock)
    results = await send_and_close(transport, [message(1), message(2)])
    assert outcomes(results) == [Outcome.accepted, Outcome.accepted]
    assert signed_at[1] - signed_at[0] >= timedelta(seconds=0.25)


def test_from_provider_reads_the_stored_settings_and_secrets() -> None:
    secrets = {"access_key_id": "AKIDSTORED", "secret_access_key": "stored-secret"}
    settings_ = {"region": "us-east-1", "configuration_set": "news"}
    transport = ses.from_provider(settings_, secrets, timeout=12.0)
    assert str(transport.client.base_url) == "https://email.us-east-1.amazonaws.com"
    assert transport.configuration_set == "news"
    assert transport.client.timeout.read == 12.0
