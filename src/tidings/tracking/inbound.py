"""Mail that comes back: reports to the VERP return path and ``mailto:`` unsubscribes, both
taken by the bounce receiver (``TIDINGS_INBOUND_SMTP_PORT``).

A report counts only when one of our signed tokens vouches for it: the VERP address it was sent
to (``bounces+TOKEN@domain``, see ``MailLinks.return_path``), or the unsubscribe link in the
returned headers of the original message (feedback loops return those). Anyone can send mail to
a return path; without this, a forged report could suppress any address it names.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Sequence

from tidings.db.engine import Database
from tidings.db.types import utcnow
from tidings.delivery.links import TOKEN_LENGTH, MailLinks
from tidings.logs import get_logger
from tidings.tracking.unsubscribe import find_recipient, unsubscribe

log = get_logger(__name__)
_LINK_TOKEN = re.compile(rb"/u/([A-Za-z0-9_-]{%d})(?![A-Za-z0-9_-])" % TOKEN_LENGTH)
_SUBJECT_TOKEN = re.compile(
    rf"\bunsubscribe\s+([A-Za-z0-9_-]{{{TOKEN_LENGTH}}})(?![A-Za-z0-9_-])", re.IGNORECASE
)


class InboundMail:
    def __init__(
        self, links: MailLinks, database: Database, unsubscribe_address: str | None
    ) -> None:
        self._links = links
        self._database = database
        self._unsubscribe = (unsubscribe_address or "").strip().lower()

    def vouch(self, recipients: Sequence[str], data: bytes) -> int | None:
        """The delivery a report is about, by a token we signed, or None."""
        for recipient in recipients:
            delivery_id = self._links.delivery_of_return_path(recipient)
            if delivery_id is not None:
                return delivery_id
        for match in _LINK_TOKEN.finditer(data):
            delivery_id = self._links.delivery_id(match[1].decode("ascii"))
            if delivery_id is not None:
                return delivery_id
        return None

    async def requests(self, recipients: Sequence[str], data: bytes) -> bool:
        """A ``mailto:`` unsubscribe (subject ``unsubscribe TOKEN``, as List-Unsubscribe has
        it): done, and True; False for mail that is not one."""
        if not self._unsubscribe or self._unsubscribe not in (r.lower() for r in recipients):
            return False
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
        match = _SUBJECT_TOKEN.search(str(headers.get("Subject", "")))
        delivery_id = self._links.delivery_id(match[1]) if match else None
        if delivery_id is None:
            log.info("inbound.unsubscribe_without_token")
            return True  # answered, nothing to do: a reply would only bounce
        async with self._database.sessions() as session:
            recipient = await find_recipient(session, delivery_id)
            if recipient is not None:
                await unsubscribe(session, recipient, everything=False, now=utcnow())
        log.info("inbound.unsubscribed", delivery=delivery_id)
        return True
