"""Bounce classification: whose fault a failed delivery is, from an RFC 3463 enhanced status code
("5.1.1") and, when there is none, the basic SMTP reply code and the diagnostic's wording.

The rule (the same for SMTP replies, provider payloads and DSN messages):

- ``hard`` (the address is bad: suppress it): 5.1.x (bad mailbox, bad domain), 5.2.1 (mailbox
  disabled), 5.4.4 (no route to the domain);
- ``policy`` (the message or the sender was refused, not the address): 5.7.x, 5.2.3 (too large),
  5.6.x (content);
- ``soft`` (may pass): every 4.x.x, and the other 5.x.x (full mailbox 5.2.2, system 5.3.x,
  network 5.4.x, protocol 5.5.x).

Without an enhanced code, a 5xx reply whose text names an unknown user or domain is hard, one that
names spam, a block list or policy is policy, and anything else is soft: a guess that errs toward
retrying an address rather than dropping it.
"""

from __future__ import annotations

import re

from tidings.tracking.events import BounceKind

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?<!\d)([245])\d\d(?!\d)")
_HARD_WORDS = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address)|does not exist|"
    r"invalid (recipient|mailbox|address)|recipient (address )?rejected|mailbox not found|"
    r"address rejected|host not found|domain not found|no mx",
    re.IGNORECASE,
)
_POLICY_WORDS = re.compile(
    r"spam|block ?list|blacklist|blocked|policy|reputation|dmarc|spf|dkim|not authorized|"
    r"rejected for content|virus",
    re.IGNORECASE,
)
_HARD_CODES = {(2, 1), (4, 4)}  # subject.detail of 5.2.1 and 5.4.4
_POLICY_CODES = {(2, 3)}


def enhanced_status(text: str | None) -> str | None:
    """The first RFC 3463 enhanced status code in ``text`` ("5.1.1"), if any."""
    match = _ENHANCED.search(text or "")
    return match[0] if match else None


def classify(status: str | None, diagnostic: str | None = None) -> BounceKind:
    """Classify a failure from its enhanced ``status`` code (or one found in ``diagnostic``),
    falling back on the basic reply code and the wording of ``diagnostic``."""
    code = enhanced_status(status) or enhanced_status(diagnostic)
    if code is not None:
        return _by_enhanced_code(code)
    basic = _BASIC.search(f"{status or ''} {diagnostic or ''}")
    if basic is None or basic[1] != "5":
        return BounceKind.soft
    text = diagnostic or status or ""
    if _POLICY_WORDS.search(text):
        return BounceKind.policy
    if _HARD_WORDS.search(text):
        return BounceKind.hard
    return BounceKind.soft


def _by_enhanced_code(code: str) -> BounceKind:
    klass, subject, detail = (int(part) for part in code.split("."))
    if klass != 5:
        return BounceKind.soft
    if subject == 1 or (subject, detail) in _HARD_CODES:
        return BounceKind.hard
    if subject in (6, 7) or (subject, detail) in _POLICY_CODES:
        return BounceKind.policy
    return BounceKind.soft
