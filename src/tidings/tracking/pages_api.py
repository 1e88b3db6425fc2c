"""Public pages behind each message's links (no API key; the link's token is the credential):
``/u/{token}`` unsubscribes (RFC 8058 one-click by POST, or a small page by GET), and
``/u/{token}/preferences`` lets the subscriber choose their topics."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from tidings.db.types import utcnow
from tidings.deps import SessionDep
from tidings.pages import message_page, page
from tidings.tracking.endpoints import Tracker
from tidings.tracking.unsubscribe import (
    Recipient,
    choose_topics,
    find_recipient,
    topic_choices,
    unsubscribe,
)

router = APIRouter(prefix="/u", tags=["public"], include_in_schema=False)
ONE_CLICK = ("List-Unsubscribe", "One-Click")
NOT_OURS = message_page(
    "Link not valid", "This link is not valid. Use the link in a recent message."
)
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.get("/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, request: Request, session: SessionDep) -> Response:
    """What the unsubscribe link in a message opens: the choices, nothing done yet (a link
    scanner that follows it unsubscribes nobody)."""
    recipient = await _recipient(request, session, token)
    if recipient is None:
        return _html(NOT_OURS, 404)
    if not recipient.can_be_mailed:
        return _html(message_page("Unsubscribed", "This address receives no mail from us."))
    lists = ", ".join(t.name for t in recipient.topics)
    body = [f"<p>You receive this mail at {escape(_masked(recipient))}.</p>"]
    if lists:
        body.append(_button("list", f"Unsubscribe from {lists}"))
    body.append(_button("all", "Unsubscribe from everything"))
    body.append(f"<p><a href='{escape(token)}/preferences'>Choose your topics instead</a></p>")
    return _html(page("Unsubscribe", "".join(body)))


@router.post("/{token}")
async def unsubscribe_now(token: str, request: Request, session: SessionDep) -> Response:
    """RFC 8058 one-click (``List-Unsubscribe=One-Click``): done at once, 200, no redirect;
    or the page's buttons (``scope=list`` or ``scope=all``)."""
    recipient = await _recipient(request, session, token)
    if recipient is None:
        return _html(NOT_OURS, 404)
    form = await request.form()
    if form.get(ONE_CLICK[0]) == ONE_CLICK[1]:
        await unsubscribe(session, recipient, everything=False, now=utcnow())
        return PlainTextResponse("unsubscribed\n", headers=NO_STORE)
    scope = form.get("scope")
    if scope not in ("list", "all"):
        message = "Send List-Unsubscribe=One-Click, or scope=list or scope=all."
        return _html(message_page("Nothing done", message), 400)
    await unsubscribe(session, recipient, everything=scope == "all", now=utcnow())
    done = "You will receive no more mail from us." if scope == "all" or not recipient.topics else (
        f"You will receive no more of {', '.join(t.name for t in recipient.topics)}."
    )  # fmt: skip
    return _html(message_page("Unsubscribed", done))


@router.get("/{token}/preferences", response_class=HTMLResponse)
async def preferences_page(token: str, request: Request, session: SessionDep) -> Response:
    recipient = await _recipient(request, session, token)
    if recipient is None:
        return _html(NOT_OURS, 404)
    choices = await topic_choices(session, recipient.subscriber.id)
    boxes = "".join(
        f"<p><label><input type=checkbox name=topic value={topic.id}"
        f"{' checked' if member else ''}> {escape(topic.name)}</label>"
        f"{'<br><small>' + escape(topic.description) + '</small>' if topic.description else ''}"
        "</p>"
        for topic, member in choices
    )
    form = f"<form method=post>{boxes or '<p>There are no topics to choose.</p>'}"
    form += "<p><button type=submit>Save</button></p></form>"
    return _html(page("Your topics", form))


@router.post("/{token}/preferences", response_class=HTMLResponse)
async def save_preferences(token: str, request: Request, session: SessionDep) -> Response:
    recipient = await _recipient(request, session, token)
    if recipient is None:
        return _html(NOT_OURS, 404)
    form = await request.form()
    wanted = {int(v) for v in form.getlist("topic") if isinstance(v, str) and v.isdigit()}
    await choose_topics(session, recipient, wanted, utcnow())
    return _html(message_page("Saved", "Your topics are saved."))


async def _recipient(request: Request, session: SessionDep, token: str) -> Recipient | None:
    tracker: Tracker = request.app.state.tracker
    delivery_id = tracker.links.delivery_id(token)
    return None if delivery_id is None else await find_recipient(session, delivery_id)


def _masked(recipient: Recipient) -> str:
    """j•••@example.org: enough to recognize, not enough to learn an address from a link."""
    local, _, domain = recipient.subscriber.email.partition("@")
    return f"{local[:1]}•••@{domain}"


def _button(scope: str, label: str) -> str:
    return (
        f"<form method=post><input type=hidden name=scope value={scope}>"
        f"<p><button type=submit>{escape(label)}</button></p></form>"
    )


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=NO_STORE)
