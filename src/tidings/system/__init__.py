"""System reports: the instance's health, its providers' figures, their warming (seed 002)."""
