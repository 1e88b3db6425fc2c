"""Benchmark: building a 20 KB multipart/alternative message with tidings' assembler against the
standard library's ``EmailMessage`` (``set_content`` + ``add_alternative`` + ``as_bytes``), in the
same run. Run: ``.venv/bin/python bench/mime.py [--messages N]``; writes bench/results/mime.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP

from _scratch import machine, write_result

from tidings.delivery.mime import MessageHeaders, build_message, message_id

PARAGRAPH = (
    "<p>Hello Ann, here is this week's news from the team: new features, fixes, and a few "
    "stories from our readers. <a href='https://example.com/read?id=1'>Read more</a> — "
    "thanks for being with us.</p>\n"
)


def content(size: int) -> tuple[str, str]:
    html = "<html><body>" + PARAGRAPH * (size // len(PARAGRAPH)) + "</body></html>"
    text = html.replace("<p>", "").replace("</p>", "")
    return text[: size // 2], html


def headers(i: int) -> MessageHeaders:
    return MessageHeaders(
        from_address="news@example.com",
        to_address=f"reader{i}@example.org",
        subject=f"Weekly news for reader {i} — héllo",
        message_id=message_id(i, "example.com"),
        date=datetime.now(UTC),
        from_name="Example News",
        list_unsubscribe_url=f"https://example.com/u/{i}",
    )


def with_tidings(count: int, text: str, html: str) -> float:
    start = time.perf_counter()
    for i in range(count):
        build_message(headers(i), text, html)
    return time.perf_counter() - start


def with_stdlib(count: int, text: str, html: str) -> float:
    start = time.perf_counter()
    for i in range(count):
        h = headers(i)
        message = EmailMessage(policy=SMTP)
        message["From"] = f"{h.from_name} <{h.from_address}>"
        message["To"] = h.to_address
        message["Subject"] = h.subject
        message["Message-ID"] = h.message_id
        message["List-Unsubscribe"] = f"<{h.list_unsubscribe_url}>"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        message.as_bytes()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=20_000, help="bytes of HTML")
    args = parser.parse_args()
    text, html = content(args.size)
    stdlib = with_stdlib(args.messages, text, html)
    ours = with_tidings(args.messages, text, html)
    result = {
        "benchmark": "mime",
        "messages": args.messages,
        "html_bytes": len(html),
        "tidings_per_second": round(args.messages / ours),
        "stdlib_per_second": round(args.messages / stdlib),
        "speedup": round(stdlib / ours, 1),
        "machine": machine(),
    }
    print(
        f"{args.messages:,} messages of {len(html):,} B HTML + text: tidings "
        f"{result['tidings_per_second']:,}/s, email.message {result['stdlib_per_second']:,}/s "
        f"({result['speedup']}x)"
    )
    print(f"wrote {write_result('mime', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
