"""Click and open tracking in outgoing HTML: which links are counted, rewriting them to their
``/t/c/`` URLs, the open pixel, and the ``links`` table that a click token's link id names.

A link is counted when its ``href`` is an http(s) URL that does not point at this instance (our
unsubscribe and view links stay as they are) and its tag has no ``data-notrack`` attribute.
Anchors are found with a regular expression over the rendered HTML, which we produced ourselves:
a parse and re-serialization would cost more and could change markup that mail clients are
picky about.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable, Collection, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from tidings.db.engine import Database
from tidings.tracking.models import Link

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""", re.IGNORECASE)
_NOTRACK = re.compile(r"\sdata-notrack\b", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
CACHED_LINKS = 50_000  # ids and targets kept in memory; past that the cache starts again
MAX_URL_LENGTH = 8_000


def trackable_urls(markup: str, is_ours: Callable[[str], bool]) -> list[str]:
    """The distinct URLs of ``markup``'s counted links, in order of appearance."""
    found: dict[str, None] = {}
    for anchor in _ANCHOR.finditer(markup):
        url = _href(anchor[0])
        if url is not None and _counted(anchor[0], url, is_ours):
            found[url] = None
    return list(found)


def rewrite_links(markup: str, replacement: Callable[[str], str | None]) -> str:
    """``markup`` with each counted link's href replaced by ``replacement(url)`` (None: left
    as it is). Called only for the links the markup has."""

    def rewrite_anchor(anchor: re.Match[str]) -> str:
        tag = anchor[0]
        url = _href(tag)
        new_url = None if url is None or _NOTRACK.search(tag) else replacement(url)
        if new_url is None:
            return tag
        new = html.escape(new_url, quote=True)
        return _HREF.sub(lambda m: f'{m[1]}"{new}"', tag, count=1)

    return _ANCHOR.sub(rewrite_anchor, markup)


def with_open_pixel(markup: str, pixel_url: str) -> str:
    """``markup`` with a 1x1 image that loads ``pixel_url``, at the end of the body."""
    pixel = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px" />'
    )
    ends = list(_BODY_END.finditer(markup))
    if not ends:
        return markup + pixel
    at = ends[-1].start()
    return markup[:at] + pixel + markup[at:]


def with_utm(url: str, utm: Mapping[str, str]) -> str:
    """``url`` with the campaign's UTM parameters added, keeping any it already has."""
    if not utm:
        return url
    parts = urlsplit(url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    extra = {k: utm[k] for k in sorted(utm, key=_utm_order) if k not in present}
    if not extra:
        return url
    query = f"{parts.query}&{urlencode(extra)}" if parts.query else urlencode(extra)
    return urlunsplit(parts._replace(query=query))


def as_location(url: str) -> str:
    """``url`` safe for a Location header: anything outside printable ASCII (spaces, line
    breaks, non-ASCII letters) percent-encoded, the rest as it was."""
    return quote(url, safe="!#$%&'()*+,-./:;=?@[]_~")


def original_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


class LinkRegistry:
    """Link ids by (campaign, URL) for composing, and click targets by link id for redirecting;
    both cached, as links never change once written."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, str], int] = {}
        self._targets: dict[int, str] = {}

    async def ids(
        self,
        session: AsyncSession,
        campaign_id: int,
        urls: Collection[str],
        utm: Mapping[str, str],
    ) -> dict[str, int]:
        """The link id of each URL of the campaign, writing the ones new to it. Commits."""
        missing = [u for u in urls if (campaign_id, u) not in self._ids]
        if missing:
            await self._register(session, campaign_id, missing, utm)
        return {u: self._ids[(campaign_id, u)] for u in urls if (campaign_id, u) in self._ids}

    async def target(self, database: Database, link_id: int) -> str | None:
        """Where a click on link ``link_id`` goes, or None if there is no such link; the
        database is asked only the first time."""
        url = self._targets.get(link_id)
        if url is None:
            async with database.sessions() as session:
                url = await session.scalar(select(Link.url).where(Link.id == link_id))
            if url is not None:
                self._remember_target(link_id, url)
        return url

    async def _register(
        self, session: AsyncSession, campaign_id: int, urls: list[str], utm: Mapping[str, str]
    ) -> None:
        hashes = {original_hash(u): u for u in urls if len(u) <= MAX_URL_LENGTH}
        if not hashes:
            return
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        await session.execute(
            dialect.insert(Link).on_conflict_do_nothing(
                index_elements=["campaign_id", "original_hash"]
            ),
            [
                {
                    "campaign_id": campaign_id,
                    "original_hash": h,
                    "url": as_location(with_utm(u, utm)),
                }
                for h, u in hashes.items()
            ],
        )
        rows = await session.execute(
            select(Link.id, Link.original_hash, Link.url).where(
                Link.campaign_id == campaign_id, Link.original_hash.in_(list(hashes))
            )
        )
        await session.commit()
        if len(self._ids) > CACHED_LINKS:
            self._ids.clear()
        for link_id, digest, target in rows:
            self._ids[(campaign_id, hashes[digest])] = link_id
            self._remember_target(link_id, target)

    def _remember_target(self, link_id: int, url: str) -> None:
        if len(self._targets) > CACHED_LINKS:
            self._targets.clear()
        self._targets[link_id] = url


_UTM_ORDER = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def _utm_order(key: str) -> tuple[int, str]:
    """The usual order of UTM parameters (PostgreSQL's JSONB keeps no order of its own)."""
    return (_UTM_ORDER.index(key) if key in _UTM_ORDER else len(_UTM_ORDER), key)


def _href(tag: str) -> str | None:
    match = _HREF.search(tag)
    if match is None:
        return None
    value = match[2] if match[2] is not None else match[3] if match[3] is not None else match[4]
    return html.unescape(value).strip()


def _counted(tag: str, url: str, is_ours: Callable[[str], bool]) -> bool:
    scheme = url.split(":", 1)[0].lower()
    return scheme in ("http", "https") and not _NOTRACK.search(tag) and not is_ours(url)
