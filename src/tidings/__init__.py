"""tidings: a self-hosted newsletter and campaign platform."""

__version__ = "0.1.0"
