"""The plain-text part of a message, derived from its HTML with the standard library's parser."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import unquote

_SKIPPED_TAGS = frozenset({"head", "title", "style", "script", "template", "noscript"})
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "hr", "pre"}
)
_LINE_TAGS = frozenset(
    {"div", "tr", "section", "article", "header", "footer", "main", "nav", "aside", "dl",
     "dt", "dd", "figure", "figcaption", "address", "center"}
)  # fmt: skip
# Block boundaries are marked, not written as newlines, so that the whitespace between two tags
# (`</div>\n  <div>`) cannot turn into an empty line; _BREAK_RUN settles each run of markers.
_LINE, _PARAGRAPH = "\ue000", "\ue001"  # private-use characters, removed from the input
_BREAK_RUN = re.compile(
    f"[ \n{_LINE}{_PARAGRAPH}]*[\n{_LINE}{_PARAGRAPH}][ \n{_LINE}{_PARAGRAPH}]*"
)
# Zero-width characters and soft hyphens, used by preheader tricks: invisible, so dropped.
_DROPPED = dict.fromkeys(map(ord, f"\u200b\u200c\u200d\u2060\ufeff\u034f\u00ad{_LINE}{_PARAGRAPH}"))
_WHITESPACE = re.compile(r"\s+")  # \s includes the no-break space of &nbsp;


def html_to_text(html: str) -> str:
    """A readable plain-text version of an HTML message, for its text/plain part.

    Headings and paragraphs become paragraphs (one blank line between), other blocks and
    ``<br>`` line breaks, list items "- item", links "text (url)" (only the url when the text is
    the url, the address for mailto:, only the text for #anchors), images their alt text.
    ``<head>``, ``<style>`` and ``<script>`` are skipped, entities decoded, whitespace collapsed;
    lines are not wrapped.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = _BREAK_RUN.sub(_settle_breaks, "".join(parser.chunks))
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


def _settle_breaks(run: re.Match[str]) -> str:
    paragraph = _PARAGRAPH in run[0] or run[0].count("\n") > 1  # <br><br> is a blank line too
    return "\n\n" if paragraph else "\n"


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []  # text, "\n" for <br>, and _LINE/_PARAGRAPH markers
        self._skipping = 0  # depth inside skipped elements
        self._links: list[tuple[str, int]] = []  # (href, index of the link's first chunk)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag == "body":
            self._skipping = 0  # an unclosed <head> must not hide the body
        if self._skipping:
            return
        if tag == "br":
            self.chunks.append("\n")
        elif tag == "li":
            self.chunks.append(f"{_LINE}- ")
        elif tag in _PARAGRAPH_TAGS:
            self.chunks.append(_PARAGRAPH)
        elif tag in _LINE_TAGS:
            self.chunks.append(_LINE)
        elif tag in ("td", "th"):
            self.chunks.append(" ")
        elif tag == "img":
            self.chunks.append(f" {dict(attrs).get('alt') or ''} ")
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.chunks)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(self._skipping - 1, 0)
        elif self._skipping:
            return
        elif tag == "a" and self._links:
            self._end_link(*self._links.pop())
        elif tag in _PARAGRAPH_TAGS:
            self.chunks.append(_PARAGRAPH)
        elif tag in _LINE_TAGS or tag == "li":
            self.chunks.append(_LINE)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.chunks.append(_WHITESPACE.sub(" ", data.translate(_DROPPED)))

    def _end_link(self, href: str, start: int) -> None:
        text = " ".join("".join(self.chunks[start:]).split())
        target = _link_target(href.strip())
        if not target:
            return
        if not text or _without_scheme(text) == _without_scheme(target):
            self.chunks[start:] = [f" {target} "]
        else:
            self.chunks.append(f" ({target})")


def _link_target(href: str) -> str:
    """What a reader of the text part needs from a link: its address, or nothing for anchors."""
    scheme = href.split(":", 1)[0].lower()
    if not href or href.startswith("#") or scheme == "javascript":
        return ""
    if scheme in ("mailto", "tel"):
        return unquote(href.split(":", 1)[1].split("?", 1)[0])
    return href


def _without_scheme(url: str) -> str:
    return re.sub(r"^[a-z][a-z0-9+.-]*:(//)?", "", url.lower()).rstrip("/")
