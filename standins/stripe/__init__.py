"""A local Stripe API stand-in (`python -m standins.stripe --port N`); see `server.py`."""

from standins.stripe.server import StandinHTTPServer, StripeStandin, sign, start

__all__ = ["StandinHTTPServer", "StripeStandin", "sign", "start"]
