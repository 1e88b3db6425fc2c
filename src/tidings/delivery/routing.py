"""Choosing a provider for one message, in order:

1. recipient-domain rules (``gmail.com`` → provider A), in their ``position`` order;
2. engagement rules (an engagement score of at least N → a named provider, or the usable one
   with the best reputation);
3. weighted load balancing across the usable providers of the highest priority (the lowest
   ``priority`` number with a usable provider: the others are backups).

"Usable" is decided by the caller: enabled, its circuit not open, its quota not spent, not
already failed for this message, and allowed to send for the message's sending domain. A
rule whose provider is not usable falls through to the next step. The answer carries the
reason (the rule's name, or ``weighted``) that is recorded on the delivery.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WEIGHTED = "weighted"


@dataclass(frozen=True)
class Candidate:
    """A provider as routing sees it."""

    id: int
    name: str
    priority: int = 0
    weight: int = 1
    sending_domains: frozenset[str] = frozenset()  # empty: any
    reputation: float = 100.0

    def sends_for(self, sender_domain: str) -> bool:
        return not self.sending_domains or sender_domain in self.sending_domains


@dataclass(frozen=True)
class Rule:
    name: str
    position: int
    recipient_domains: frozenset[str] = frozenset()
    min_engagement_score: float | None = None
    provider_id: int | None = None  # None: the usable provider with the best reputation

    def matches(self, recipient_domain: str, score: float) -> bool:
        if self.recipient_domains and recipient_domain not in self.recipient_domains:
            return False
        return self.min_engagement_score is None or score >= self.min_engagement_score

    @property
    def order(self) -> tuple[int, int]:
        """Domain rules first, then engagement rules; each by position."""
        return (0 if self.recipient_domains else 1, self.position)


@dataclass(frozen=True)
class Route:
    provider: Candidate
    reason: str


class Router:
    def __init__(
        self,
        providers: Sequence[Candidate],
        rules: Sequence[Rule] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.providers = list(providers)
        self.rules = sorted(rules, key=lambda rule: rule.order)
        self._by_id = {p.id: p for p in self.providers}
        self._rng = rng or random.Random()

    def route(
        self,
        recipient_domain: str,
        sender_domain: str,
        score: float,
        usable: Callable[[int], bool] = lambda _: True,
    ) -> Route | None:
        """The provider for one message, or None when no provider is usable for it."""
        eligible = [p for p in self.providers if p.sends_for(sender_domain) and usable(p.id)]
        if not eligible:
            return None
        for rule in self.rules:
            if rule.matches(recipient_domain, score):
                target = self._target(rule, eligible)
                if target is not None:
                    return Route(target, rule.name)
        return Route(self.weighted_pick(eligible), WEIGHTED)

    def serves(self, sender_domain: str) -> bool:
        """Does any provider send mail from this domain (healthy or not)?"""
        return any(p.sends_for(sender_domain) for p in self.providers)

    def weighted_pick(self, eligible: Sequence[Candidate]) -> Candidate:
        """One of the highest-priority providers, drawn in proportion to their weights (all
        alike if none of them has a weight)."""
        first = min(p.priority for p in eligible)
        tier = [p for p in eligible if p.priority == first]
        weights = [p.weight for p in tier]
        if not any(weights):
            return self._rng.choice(tier)
        return self._rng.choices(tier, weights)[0]

    def _target(self, rule: Rule, eligible: Sequence[Candidate]) -> Candidate | None:
        if rule.provider_id is None:
            return max(eligible, key=lambda p: (p.reputation, -p.priority, -p.id))
        target = self._by_id.get(rule.provider_id)
        return target if target is not None and target in eligible else None
