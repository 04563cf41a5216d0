"""Run the Twilio stand-in: `python -m standins.twilio [--host H] [--port N]`."""

from __future__ import annotations

import argparse
import contextlib

from standins.twilio import server


def main() -> None:
    """Serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m standins.twilio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12112)
    args = p.parse_args()
    srv = server(args.host, args.port)
    print(f"[twilio-standin] serving {srv.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


if __name__ == "__main__":
    main()
