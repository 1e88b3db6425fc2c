"""Promotions (seed 004): a one-way DRAFT → ACTIVE → ENDED lifecycle, and subscriptions to them."""
