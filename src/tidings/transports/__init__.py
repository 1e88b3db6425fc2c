"""Transports: one module per way of handing mail over, behind one interface."""
