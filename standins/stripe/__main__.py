"""Run the Stripe stand-in: `python -m standins.stripe [--host H] [--port N]
[--webhook-url URL]`.

The secret key it accepts and the webhook signing secret default to `STRIPE_STANDIN_API_KEY`
/ `STRIPE_WEBHOOK_SECRET` (else `sk_test_standin` / `whsec_standin`); webhooks go to
`--webhook-url` (default `STRIPE_STANDIN_WEBHOOK_URL`, else the local API's endpoint).
"""

from __future__ import annotations

import argparse
import os

from standins.stripe.server import StandinHTTPServer, StripeStandin


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m standins.stripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get(
            "STRIPE_STANDIN_WEBHOOK_URL", "http://127.0.0.1:8000/api/v1/payments/webhooks/stripe"
        ),
        help="where signed events are POSTed (empty: keep them, deliver none)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("STRIPE_STANDIN_API_KEY", "sk_test_standin")
    )
    parser.add_argument(
        "--webhook-secret", default=os.environ.get("STRIPE_WEBHOOK_SECRET") or "whsec_standin"
    )
    parser.add_argument("--refund-status", choices=("succeeded", "pending"), default="succeeded")
    args = parser.parse_args(argv)
    standin = StripeStandin(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        webhook_url=args.webhook_url or None,
        refund_status=args.refund_status,
    )
    server = StandinHTTPServer((args.host, args.port), standin)
    print(
        f"[stripe-standin] serving {server.url} (webhooks to {args.webhook_url or 'nowhere'})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        standin.close()
        server.server_close()


if __name__ == "__main__":
    main()
