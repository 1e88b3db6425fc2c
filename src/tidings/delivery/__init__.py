"""Delivery: building messages, the outbox workers, transports, retries."""
