"""Shared fixtures. Service URLs come from env with the machine's defaults."""

from __future__ import annotations
