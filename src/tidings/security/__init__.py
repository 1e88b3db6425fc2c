"""Security: PII encryption and blind index, API keys, audit log."""
