"""Tracking and unsubscribe tokens: no forged, altered or foreign token is ever accepted."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidings.delivery.links import TRACKING_TOKEN_LENGTH, MailLinks

LINKS = MailLinks(b"k" * 32, "https://mail.example.com")
OTHER = MailLinks(b"j" * 32, "https://mail.example.com")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ids = st.integers(min_value=1, max_value=2**63 - 1)
link_ids = st.integers(min_value=0, max_value=2**32 - 1)


@given(ids, link_ids)
def test_a_token_names_exactly_what_it_was_made_for(delivery_id: int, link_id: int) -> None:
    token = LINKS.tracking_token(delivery_id, link_id)
    assert len(token) == TRACKING_TOKEN_LENGTH
    assert LINKS.tracked(token) == (delivery_id, link_id)
    assert OTHER.tracked(token) is None  # another instance's key
    assert LINKS.delivery_id(token) is None  # not an unsubscribe token either


@given(ids, link_ids, st.integers(min_value=0, max_value=TRACKING_TOKEN_LENGTH - 1), st.data())
def test_changing_any_character_of_a_token_makes_it_worthless(
    delivery_id: int, link_id: int, position: int, data: st.DataObject
) -> None:
    token = LINKS.tracking_token(delivery_id, link_id)
    other = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != token[position]))
    assert LINKS.tracked(token[:position] + other + token[position + 1 :]) is None


@given(st.text(max_size=64))
def test_arbitrary_text_is_never_a_token(text: str) -> None:
    assert LINKS.tracked(text) is None
    assert LINKS.delivery_id(text) is None


@given(st.text(alphabet=ALPHABET, min_size=TRACKING_TOKEN_LENGTH, max_size=TRACKING_TOKEN_LENGTH))
def test_random_well_formed_strings_are_never_tokens(text: str) -> None:
    assert LINKS.tracked(text) is None


@given(ids)
def test_unsubscribe_tokens_are_not_tracking_tokens(delivery_id: int) -> None:
    token = LINKS.token(delivery_id)
    assert LINKS.delivery_id(token) == delivery_id
    assert LINKS.tracked(token) is None
