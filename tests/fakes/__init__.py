"""Local stand-ins for external services (real servers on loopback, deterministic answers)."""
