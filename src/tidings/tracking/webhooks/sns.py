"""Amazon SNS HTTP(S) subscriptions, the way SES events reach us: the envelope's RSA signature
checked against the certificate SNS names (fetched only from an SNS host), the topic checked
against an allowlist, and the subscription confirmed by visiting its SubscribeURL.

``normalize_ses`` hands the SES record a notification carries to ``ses.ses_events``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tidings.tracking.events import InboundEvent
from tidings.tracking.webhooks.base import WebhookMalformed, WebhookRejected, WebhookUnavailable
from tidings.tracking.webhooks.payload import Fields, parse_json
from tidings.tracking.webhooks.ses import ses_events

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The fields signed for each message type, in the order AWS documents for the string to sign:
# each present field as "Name\nvalue\n". Subject is signed only when the notification has one.
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    UNSUBSCRIBE_CONFIRMATION: (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_OPTIONAL_SIGNED = {"Subject"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# The whole authority of a URL: "sns.<region>.amazonaws.com" (".com.cn" in the China regions),
# nothing else. Matched against the raw netloc, so userinfo ("evil@"), a port, a suffix
# (".evil.com") or a backslash trick cannot pass.
SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com(?:\.cn)?")
_URL_CHARACTERS = re.compile(r"[!-~]+")  # printable ASCII without spaces


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A verified SNS envelope."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    signature_version: str
    signature: str
    signing_cert_url: str
    subject: str | None = None
    subscribe_url: str | None = None
    unsubscribe_url: str | None = None
    token: str | None = None


class CertificateCache:
    """SNS signing certificates' public keys by URL, fetched once with the injected client.

    Bounded (least recently used first out): SNS rotates its certificate rarely, so a handful of
    entries is plenty, and a flood of distinct (valid-looking) URLs cannot grow it.
    """

    def __init__(self, client: httpx.AsyncClient, max_entries: int = 16) -> None:
        self.client = client
        self.max_entries = max_entries
        self.fetches = 0  # how many certificates were downloaded, for tests and metrics
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = asyncio.Lock()  # concurrent first requests fetch once, not once each

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        check_sns_url(url, "SigningCertURL")
        if url in self._keys:  # the usual case: no waiting behind a fetch of another URL
            self._keys.move_to_end(url)
            return self._keys[url]
        async with self._lock:
            key = self._keys.get(url)
            if key is None:
                key = await self._fetch(url)
                self._keys[url] = key
                while len(self._keys) > self.max_entries:
                    self._keys.popitem(last=False)
            self._keys.move_to_end(url)
            return key

    async def _fetch(self, url: str) -> rsa.RSAPublicKey:
        try:
            response = await self.client.get(url, follow_redirects=False)
        except httpx.HTTPError as error:
            raise WebhookUnavailable(
                f"fetching the SNS certificate {url} failed ({error.__class__.__name__})"
            ) from None
        self.fetches += 1
        if response.status_code >= 500:
            raise WebhookUnavailable(f"the SNS certificate {url} answered {response.status_code}")
        if response.status_code != 200:
            raise WebhookRejected(f"the SNS certificate {url} answered {response.status_code}")
        return public_key_of(response.content, url)


def public_key_of(pem: bytes, url: str) -> rsa.RSAPublicKey:
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise WebhookRejected(f"{url} is not a PEM certificate") from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected(f"the certificate at {url} does not hold an RSA key")
    return key


def check_sns_url(url: str, field: str) -> None:
    """``url`` must be https on an SNS host itself; ``SigningCertURL`` must name a .pem file."""
    if not _URL_CHARACTERS.fullmatch(url):
        raise WebhookRejected(f"{field} contains characters a URL does not")
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise WebhookRejected(f"{field} must use https, got {parts.scheme or 'no scheme'}")
    if not SNS_HOST.fullmatch(parts.netloc):
        raise WebhookRejected(f"{field} is not on an SNS host (sns.<region>.amazonaws.com)")
    if field == "SigningCertURL" and (not parts.path.endswith(".pem") or parts.query):
        raise WebhookRejected("SigningCertURL must name a .pem certificate")


def string_to_sign(fields: Fields, message_type: str) -> bytes:
    """The canonical text SNS signs for ``message_type``."""
    lines = []
    for name in _SIGNED_FIELDS[message_type]:
        value = fields.text(name)
        if value is None:
            if name in _OPTIONAL_SIGNED:
                continue
            raise WebhookRejected(f"the SNS {message_type} lacks its signed field {name}")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


async def verify_sns(
    body: bytes, certificates: CertificateCache, allowed_topics: Collection[str]
) -> SnsMessage:
    """The SNS message in ``body``, once its topic is allowed and its signature is SNS's."""
    fields = _envelope(body)
    message_type = fields.text("Type") or ""
    if message_type not in _SIGNED_FIELDS:
        raise WebhookRejected(f"unknown SNS message Type {message_type[:40]!r}")
    check_topic(fields.text("TopicArn"), allowed_topics)
    cert_url = fields.text("SigningCertURL")
    if not cert_url:
        raise WebhookRejected("the SNS message has no SigningCertURL")
    check_sns_url(cert_url, "SigningCertURL")
    version = fields.text("SignatureVersion") or ""
    algorithm = _HASHES.get(version)
    if algorithm is None:
        raise WebhookRejected(f"unsupported SNS SignatureVersion {version[:8]!r} (1 or 2)")
    signature = _decode_signature(fields.text("Signature"))
    signed = string_to_sign(fields, message_type)
    key = await certificates.public_key(cert_url)
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise WebhookRejected("the SNS signature does not match the message") from None
    return _message_of(fields, message_type)


def _envelope(body: bytes) -> Fields:
    try:
        return Fields(parse_json(body, "SNS message"), "")
    except WebhookMalformed as error:  # nothing unsigned is "authentic but malformed"
        raise WebhookRejected(error.reason) from None


def check_topic(topic_arn: str | None, allowed_topics: Collection[str]) -> None:
    if not allowed_topics:
        raise WebhookRejected(
            "no SNS topic is allowed: configure the ARNs of the topics SES publishes to"
        )
    if topic_arn not in allowed_topics:
        raise WebhookRejected(f"SNS topic {str(topic_arn)[:200]!r} is not in the allowed topics")


def _decode_signature(value: str | None) -> bytes:
    if not value:
        raise WebhookRejected("the SNS message has no Signature")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected("the SNS Signature is not base64") from None


def _message_of(fields: Fields, message_type: str) -> SnsMessage:
    return SnsMessage(
        type=message_type,
        message_id=fields.required_text("MessageId"),
        topic_arn=fields.required_text("TopicArn"),
        message=fields.text("Message") or "",
        timestamp=fields.required_text("Timestamp"),
        signature_version=fields.required_text("SignatureVersion"),
        signature=fields.required_text("Signature"),
        signing_cert_url=fields.required_text("SigningCertURL"),
        subject=fields.text("Subject"),
        subscribe_url=fields.text("SubscribeURL"),
        unsubscribe_url=fields.text("UnsubscribeURL"),
        token=fields.text("Token"),
    )


async def confirm_subscription(message: SnsMessage, client: httpx.AsyncClient) -> None:
    """Confirm a verified SubscriptionConfirmation by visiting its SubscribeURL (checked again
    here: a URL off the SNS hosts would make us a request forwarder)."""
    if message.type != SUBSCRIPTION_CONFIRMATION or not message.subscribe_url:
        raise WebhookMalformed(f"an SNS {message.type} is not a subscription to confirm")
    url = message.subscribe_url
    check_sns_url(url, "SubscribeURL")
    if parse_qs(urlsplit(url).query).get("Action") != ["ConfirmSubscription"]:
        raise WebhookRejected("SubscribeURL is not a ConfirmSubscription request")
    try:
        response = await client.get(url, follow_redirects=False)
    except httpx.HTTPError as error:
        raise WebhookUnavailable(
            f"confirming the SNS subscription failed ({error.__class__.__name__})"
        ) from None
    if response.status_code != 200:
        raise WebhookUnavailable(f"confirming the SNS subscription answered {response.status_code}")


def normalize_ses(message: SnsMessage) -> list[InboundEvent]:
    """The events of the SES record a verified Notification carries; none for a confirmation."""
    if message.type != NOTIFICATION:
        return []
    envelope = Fields({"Timestamp": message.timestamp}, "")
    published_at = envelope.iso_time("Timestamp")
    if published_at is None:
        raise WebhookMalformed("the SNS message has no Timestamp")
    document = parse_json(message.message.encode(), "SNS Message (the SES record)")
    return ses_events(document, message.message_id, published_at)
