"""Run the FCM stand-in: `python -m standins.fcm [--host H] [--port N]`."""

from __future__ import annotations

import argparse
import contextlib

from standins.fcm import server


def main() -> None:
    """Serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m standins.fcm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=12113)
    args = p.parse_args()
    srv = server(args.host, args.port)
    print(f"[fcm-standin] serving {srv.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        srv.serve_forever()


if __name__ == "__main__":
    main()
