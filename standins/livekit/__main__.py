"""`python -m standins.livekit --port N [--host H] [--webhook-url URL]`.

The API key and secret come from `--api-key`/`--api-secret` or `LIVEKIT_API_KEY`/
`LIVEKIT_API_SECRET` (the same pair the API signs tokens with). Prints one line
`livekit stand-in listening on http://H:N` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from aiohttp import web

from standins.livekit.server import LiveKitStandIn


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve until interrupted."""
    p = argparse.ArgumentParser(prog="python -m standins.livekit", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7880)
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY"))
    p.add_argument("--api-secret", default=os.environ.get("LIVEKIT_API_SECRET"))
    p.add_argument("--webhook-url", default=os.environ.get("LIVEKIT_WEBHOOK_URL"))
    args = p.parse_args(argv)
    if not args.api_key or not args.api_secret:
        p.error("--api-key/--api-secret (or LIVEKIT_API_KEY/LIVEKIT_API_SECRET) are required")
    standin = LiveKitStandIn(args.api_key, args.api_secret, webhook_url=args.webhook_url)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(standin, args.host, args.port))
    return 0


async def _serve(standin: LiveKitStandIn, host: str, port: int) -> None:
    """Bind, announce, and serve until SIGINT/SIGTERM."""
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"livekit stand-in listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
