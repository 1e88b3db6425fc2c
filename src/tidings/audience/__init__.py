"""Audience: subscribers, topics and topic subscriptions."""
