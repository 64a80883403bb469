"""Helpers shared by the tests (waiting with deadlines, simulated services, ...)."""
