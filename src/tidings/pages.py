"""The few HTML pages subscribers see (confirmations, unsubscribing, preferences): one plain,
readable layout, no scripts, no external resources."""

from __future__ import annotations

from html import escape


def page(title: str, body: str) -> str:
    """A whole page; ``body`` is HTML the caller has escaped."""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<meta name=robots content=noindex>"
        f"<title>{escape(title)}</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;"
        "padding:0 1rem;line-height:1.5'>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def message_page(title: str, message: str) -> str:
    return page(title, f"<p>{escape(message)}</p>")
