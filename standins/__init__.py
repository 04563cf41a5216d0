"""Local HTTP stand-ins of the external services (Stripe, LiveKit) for tests and `make run`."""
