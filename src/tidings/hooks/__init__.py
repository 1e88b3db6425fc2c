"""Outgoing webhooks: endpoints that receive chosen events, signed per Standard Webhooks,
retried with backoff, and disabled after repeated failure."""
