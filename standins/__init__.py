"""Local HTTP stand-ins of external services (Stripe), for tests and `make run`."""
