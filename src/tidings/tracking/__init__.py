"""Feedback: tracking links, unsubscribes, provider webhooks and bounces, as one event stream."""
