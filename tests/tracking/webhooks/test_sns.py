"""SNS envelopes signed in the test with a real RSA key, whose certificate is served over real
HTTPS as ``https://sns.us-east-1.amazonaws.com/...pem`` by a local server: the client trusts only
the test CA and its connections to that host are redirected to 127.0.0.1."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.live_server import free_port
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected
from tidings.tracking.webhooks.sns import (
    CertificateCache,
    SnsMessage,
    check_sns_url,
    confirm_subscription,
    verify_sns,
)

SNS_HOST = "sns.us-east-1.amazonaws.com"
CERT_PATH = "/SimpleNotificationService-0000000000000000000000.pem"
CERT_URL = f"https://{SNS_HOST}{CERT_PATH}"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
ALLOWED = {TOPIC}


# --- test PKI and HTTPS server ---------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeSns:
    """The HTTPS server standing in for SNS, and what it saw."""

    port: int
    ca_pem: bytes
    signing_key: rsa.RSAPrivateKey
    hits: Counter[str]


def _handler(signing_pem: bytes, hits: Counter[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            hits[path] += 1
            if path.endswith(".pem") and "missing" not in path:
                self._answer(200, signing_pem)
            elif path == "/" and "Action=ConfirmSubscription" in self.path:
                self._answer(200, b"<ConfirmSubscriptionResponse/>")
            else:
                self._answer(404, b"not found")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def fake_sns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSns]:
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = _certificate("tidings test CA", ca_key, "tidings test CA", ca_key, ca=True)
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = _certificate(SNS_HOST, server_key, "tidings test CA", ca_key, ca=False)
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_cert = _certificate(
        "sns.amazonaws.com", signing_key, "sns.amazonaws.com", signing_key, ca=False
    )

    hits: Counter[str] = Counter()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(_pem(signing_cert), hits))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*_write_chain(server_cert, server_key, tmp_path_factory.mktemp("sns")))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeSns(server.server_address[1], _pem(ca), signing_key, hits)
    finally:
        server.shutdown()
        server.server_close()


def _write_chain(
    certificate: x509.Certificate, key: rsa.RSAPrivateKey, directory: Path
) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(_pem(certificate))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _ToLocalServer(httpcore.AsyncNetworkBackend):
    """Connects every host to the local server; TLS still checks the requested host name."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_tcp("127.0.0.1", self.port, timeout, local_address)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _RedirectedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, port: int, ca_pem: bytes) -> None:
        super().__init__()
        context = ssl.create_default_context(cadata=ca_pem.decode())
        # httpx takes no network backend, so its connection pool is replaced by one with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=_ToLocalServer(port)
        )


@pytest.fixture
async def client(fake_sns: FakeSns) -> AsyncIterator[httpx.AsyncClient]:
    transport = _RedirectedTransport(fake_sns.port, fake_sns.ca_pem)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        yield client


# --- signing as SNS does ---------------------------------------------------------------------

NOTIFICATION_KEYS = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
CONFIRMATION_KEYS = [
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
]  # fmt: skip


def signed(envelope: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> bytes:
    """The envelope with SignatureVersion, SigningCertURL and Signature, as JSON bytes."""
    keys = NOTIFICATION_KEYS if envelope["Type"] == "Notification" else CONFIRMATION_KEYS
    text = "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(text.encode(), padding.PKCS1v15(), algorithm)
    envelope = {
        **envelope,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": envelope.get("SigningCertURL", CERT_URL),
    }
    return json.dumps(envelope).encode()


def notification(**overrides: Any) -> dict[str, Any]:
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps({"eventType": "Send", "mail": {"messageId": "0100abc"}}),
        "Timestamp": "2024-05-01T12:00:00.000Z",
        "UnsubscribeURL": f"https://{SNS_HOST}/?Action=Unsubscribe&SubscriptionArn={TOPIC}:1",
    }
    return {**envelope, **overrides}


def subscription_confirmation() -> dict[str, Any]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the "
        "subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://{SNS_HOST}/?Action=ConfirmSubscription&TopicArn={TOPIC}"
        "&Token=2336412f37fb",
        "Timestamp": "2024-05-01T12:00:00.000Z",
    }


# --- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_notification_signed_by_sns_is_accepted(
    fake_sns: FakeSns, client: httpx.AsyncClient, version: str
) -> None:
    body = signed(notification(), fake_sns.signing_key, version)
    message = await verify_sns(body, CertificateCache(client), ALLOWED)
    assert message.type == "Notification"
    assert message.topic_arn == TOPIC
    assert message.subject == "Amazon SES Email Event Notification"
    assert message.signature_version == version


async def test_a_notification_without_subject_is_signed_without_it(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    envelope = notification()
    del envelope["Subject"]
    message = await verify_sns(
        signed(envelope, fake_sns.signing_key), CertificateCache(client), ALLOWED
    )
    assert message.subject is None


async def test_the_certificate_is_fetched_once_per_url(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    certificates = CertificateCache(client)
    before = fake_sns.hits[CERT_PATH]
    for version in ("1", "2"):
        await verify_sns(
            signed(notification(), fake_sns.signing_key, version), certificates, ALLOWED
        )
    assert certificates.fetches == 1
    assert fake_sns.hits[CERT_PATH] == before + 1


async def test_a_subscription_confirmation_is_verified_and_confirmed(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    body = signed(subscription_confirmation(), fake_sns.signing_key, "2")
    message = await verify_sns(body, CertificateCache(client), ALLOWED)
    assert message.token is not None and message.subscribe_url is not None
    before = fake_sns.hits["/"]
    await confirm_subscription(message, client)
    assert fake_sns.hits["/"] == before + 1


async def test_a_tampered_message_is_rejected(fake_sns: FakeSns, client: httpx.AsyncClient) -> None:
    envelope = json.loads(signed(notification(), fake_sns.signing_key))
    envelope["Message"] = json.dumps({"eventType": "Bounce", "mail": {"messageId": "forged"}})
    with pytest.raises(WebhookRejected, match="signature does not match"):
        await verify_sns(json.dumps(envelope).encode(), CertificateCache(client), ALLOWED)


async def test_a_changed_subject_breaks_the_signature(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    envelope = json.loads(signed(notification(), fake_sns.signing_key))
    envelope["Subject"] = "something else"
    with pytest.raises(WebhookRejected):
        await verify_sns(json.dumps(envelope).encode(), CertificateCache(client), ALLOWED)


async def test_a_message_signed_by_another_key_is_rejected(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(WebhookRejected, match="signature does not match"):
        await verify_sns(signed(notification(), other), CertificateCache(client), ALLOWED)


async def test_a_topic_outside_the_allowlist_is_rejected(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    body = signed(notification(TopicArn="arn:aws:sns:us-east-1:999:other"), fake_sns.signing_key)
    with pytest.raises(WebhookRejected, match="not in the allowed topics"):
        await verify_sns(body, CertificateCache(client), ALLOWED)


async def test_an_empty_allowlist_rejects_everything_and_says_to_configure_it(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    body = signed(notification(), fake_sns.signing_key)
    with pytest.raises(WebhookRejected, match="configure"):
        await verify_sns(body, CertificateCache(client), set())


@pytest.mark.parametrize(
    "url",
    [
        f"http://{SNS_HOST}{CERT_PATH}",
        f"https://{SNS_HOST}.evil.com{CERT_PATH}",
        f"https://evil.com/{SNS_HOST}{CERT_PATH}",
        f"https://evil.com@{SNS_HOST}{CERT_PATH}",
        f"https://{SNS_HOST}@evil.com{CERT_PATH}",
        f"https://{SNS_HOST}:8443{CERT_PATH}",
        f"https://{SNS_HOST}\\@evil.com{CERT_PATH}",
        f"https://evilsns.us-east-1.amazonaws.com{CERT_PATH}",
        f"https://sns.us-east-1.amazonaws.com.{CERT_PATH}",
        f"https://sqs.us-east-1.amazonaws.com{CERT_PATH}",
        f"https://{SNS_HOST}/cert.txt",
        f"https://{SNS_HOST}{CERT_PATH}?x=.pem",
        f" https://{SNS_HOST}{CERT_PATH}",
    ],
)
async def test_a_certificate_url_off_the_sns_hosts_is_rejected_before_any_fetch(
    fake_sns: FakeSns, client: httpx.AsyncClient, url: str
) -> None:
    body = signed(notification(SigningCertURL=url), fake_sns.signing_key)
    certificates = CertificateCache(client)
    with pytest.raises(WebhookRejected, match="SigningCertURL"):
        await verify_sns(body, certificates, ALLOWED)
    assert certificates.fetches == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_hosts_of_other_regions_are_accepted(url: str) -> None:
    check_sns_url(url, "SigningCertURL")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"SignatureVersion": "3"}, "SignatureVersion"),
        ({"Signature": "not base64!"}, "base64"),
        ({"Signature": None}, "no Signature"),
        ({"Type": "Surprise"}, "unknown SNS message Type"),
    ],
)
async def test_unverifiable_envelopes_are_rejected(
    fake_sns: FakeSns, client: httpx.AsyncClient, change: dict[str, Any], reason: str
) -> None:
    envelope = {**json.loads(signed(notification(), fake_sns.signing_key)), **change}
    envelope = {k: v for k, v in envelope.items() if v is not None}
    with pytest.raises(WebhookRejected, match=reason):
        await verify_sns(json.dumps(envelope).encode(), CertificateCache(client), ALLOWED)


async def test_a_body_that_is_not_json_is_rejected(client: httpx.AsyncClient) -> None:
    with pytest.raises(WebhookRejected, match="not JSON"):
        await verify_sns(b"Type=Notification", CertificateCache(client), ALLOWED)


def _message(**fields: Any) -> SnsMessage:
    base: dict[str, Any] = {
        "type": "SubscriptionConfirmation",
        "message_id": "m",
        "topic_arn": TOPIC,
        "message": "",
        "timestamp": "2024-05-01T12:00:00Z",
        "signature_version": "2",
        "signature": "x",
        "signing_cert_url": CERT_URL,
        "subscribe_url": f"https://{SNS_HOST}/?Action=ConfirmSubscription&Token=t",
    }
    return SnsMessage(**{**base, **fields})


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com/?Action=ConfirmSubscription",
        f"http://{SNS_HOST}/?Action=ConfirmSubscription",
        f"https://{SNS_HOST}/?Action=Unsubscribe",
    ],
)
async def test_a_subscribe_url_off_sns_is_never_visited(
    fake_sns: FakeSns, client: httpx.AsyncClient, url: str
) -> None:
    before = sum(fake_sns.hits.values())
    with pytest.raises(WebhookRejected):
        await confirm_subscription(_message(subscribe_url=url), client)
    assert sum(fake_sns.hits.values()) == before


async def test_only_a_subscription_confirmation_is_confirmed(client: httpx.AsyncClient) -> None:
    with pytest.raises(WebhookMalformed):
        await confirm_subscription(_message(type="Notification"), client)


async def test_the_cache_is_bounded(client: httpx.AsyncClient) -> None:
    certificates = CertificateCache(client, max_entries=1)
    other = f"https://{SNS_HOST}/SimpleNotificationService-other.pem"
    for url in (CERT_URL, other, CERT_URL):
        await certificates.public_key(url)
    assert certificates.fetches == 3  # the first was forgotten when the second came


async def test_a_missing_certificate_is_a_rejection(client: httpx.AsyncClient) -> None:
    with pytest.raises(WebhookRejected, match="answered 404"):
        await CertificateCache(client).public_key(f"https://{SNS_HOST}/missing.pem")


async def test_a_confirmation_without_its_token_is_rejected(
    fake_sns: FakeSns, client: httpx.AsyncClient
) -> None:
    envelope = subscription_confirmation()
    del envelope["Token"]
    with pytest.raises(WebhookRejected, match="lacks its signed field Token"):
        await verify_sns(signed(envelope, fake_sns.signing_key), CertificateCache(client), ALLOWED)
