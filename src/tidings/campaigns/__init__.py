"""Campaigns: templates, schedules and recurrence, the scheduler, and materializing runs."""
