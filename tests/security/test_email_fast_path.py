"""The fast path for plain addresses agrees with email-validator on everything it accepts."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tidings.security.crypto import _parse_plain_address

LOCAL_CHARS = "abcXYZ019.!#$%&'*+/=?^_`{|}~-\"\\ é"
DOMAIN_CHARS = "abcxyzABC019.-_é"
TLDS = ["com", "org", "io", "museum", "c", "123", "local", "test", "arpa", "onion", "xn--p1ai"]

addresses = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(LOCAL_CHARS, min_size=0, max_size=70),
    st.text(DOMAIN_CHARS, min_size=0, max_size=70),
    st.sampled_from(TLDS),
)


@settings(max_examples=3000, derandomize=True)
@given(text=st.one_of(addresses, st.text(max_size=80)))
@example("a..b@example.com")
@example(".a@example.com")
@example("a@-example.com")
@example("a@ex--ample.com")
@example("a@mail.local")
@example("a" * 65 + "@example.com")
@example("a@" + "b" * 64 + ".com")
@example("a@" + ".".join(["b" * 60] * 5) + ".com")
def test_whatever_the_fast_path_accepts_email_validator_accepts_identically(text: str) -> None:
    fast = _parse_plain_address(text)
    if fast is None:
        return
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AssertionError(f"fast path accepted {text!r}; email-validator: {exc}") from None
    assert fast.address == f"{result.local_part}@{result.ascii_domain}"


def test_the_fast_path_takes_ordinary_addresses() -> None:
    for text in ["ann@example.com", "Ann.Lee+news@Mail.Example.ORG", "x_y-z@a-b.co"]:
        assert _parse_plain_address(text) is not None
