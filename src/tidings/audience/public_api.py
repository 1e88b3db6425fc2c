"""Public routes (no API key): sign-up from a plain HTML form or JSON, and confirmation links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from tidings.audience import public
from tidings.audience.models import Topic
from tidings.audience.schemas import PublicSignup, PublicTopicOut
from tidings.deps import HttpProblem, SessionDep, get_runtime
from tidings.pages import message_page
from tidings.runtime import Runtime
from tidings.security.crypto import InvalidEmail, parse_email
from tidings.security.ratelimit import RateLimits
from tidings.security.tokens import InvalidToken

router = APIRouter(prefix="/public", tags=["public"])

THANKS = (
    "Thanks! If this address can receive mail from us, you are subscribed, or a message "
    "to confirm your subscription is on its way."
)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _rate_limits(request: Request) -> RateLimits:
    limits: RateLimits | None = getattr(request.app.state, "rate_limits", None)
    if limits is None:
        limits = RateLimits(get_runtime(request).settings.rate_limit_storage)
        request.app.state.rate_limits = limits
    return limits


@router.get("/topics", response_model=list[PublicTopicOut])
async def public_topics(session: SessionDep) -> object:
    """The topics anyone may sign up for (to build a form)."""
    return (await session.scalars(select(Topic).where(Topic.is_public).order_by(Topic.id))).all()


@router.post(
    "/subscribe",
    status_code=202,
    responses={429: {"description": "Too many sign-ups from this client or for this address."}},
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": PublicSignup.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": PublicSignup.model_json_schema()},
            }
        }
    },
)
async def subscribe(request: Request, session: SessionDep) -> Response:
    """Sign up for a public topic. The answer is the same whether or not the address is known."""
    runtime = get_runtime(request)
    from_form = request.headers.get("content-type", "").split(";")[0].strip() in FORM_TYPES
    signup = await _read_signup(request, from_form)
    limits = _rate_limits(request)
    settings = runtime.settings
    client = request.client.host if request.client else "unknown"
    wait = await limits.retry_after(settings.public_subscribe_limits, "signup-ip", client)
    if wait is None:
        wait = await limits.retry_after(
            settings.public_address_limits, "signup-address", _address_key(runtime, signup.email)
        )
    if wait is not None:
        raise HttpProblem(
            429,
            "rate_limited",
            f"too many sign-ups; try again in {wait} s",
            {"Retry-After": str(wait)},
        )
    await public.public_subscribe(
        session,
        settings,
        runtime.signer,
        email=signup.email,
        name=signup.name,
        topic_id=signup.topic_id,
    )
    if from_form:
        return HTMLResponse(message_page("Almost there", THANKS), status_code=202)
    return JSONResponse({"detail": THANKS}, status_code=202)


async def _read_signup(request: Request, from_form: bool) -> PublicSignup:
    try:
        if from_form:
            form = await request.form(max_files=0, max_fields=10)
            return PublicSignup.model_validate(
                {k: v for k, v in form.items() if k in PublicSignup.model_fields}
            )
        return PublicSignup.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise HttpProblem(422, "validation_error", problems) from None


def _address_key(runtime: Runtime, email: str) -> str:
    # Limits are counted per blind index: the limiter's storage never sees an address.
    try:
        return runtime.cipher.blind_index(parse_email(email).index_key)
    except InvalidEmail:
        return "invalid"


@router.get("/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request, session: SessionDep, token: Annotated[str, Query(max_length=2000)]
) -> HTMLResponse:
    """The link in the confirmation mail: activates the pending subscription."""
    runtime = get_runtime(request)
    try:
        row = await public.confirm_subscription(session, runtime.signer, token)
    except InvalidToken as exc:
        return HTMLResponse(message_page("Link not valid", exc.detail), status_code=400)
    topic = await session.get(Topic, row.topic_id)
    name = topic.name if topic else "the newsletter"
    return HTMLResponse(message_page("Subscription confirmed", f"You will now receive {name}."))
