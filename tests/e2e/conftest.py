"""Fixtures of the end-to-end tests: a private nats-server per test, as the service tests have."""

from __future__ import annotations

from tests.services.conftest import private_nats

__all__ = ["private_nats"]
