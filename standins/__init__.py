"""Local HTTP stand-ins of the external services (Stripe, LiveKit, Twilio, FCM) and a local
SMTP sink, for tests and `make run`."""
