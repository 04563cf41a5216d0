"""Run the SMTP sink: `python -m standins.smtp [--host H] [--port 8025] [--maildir DIR]`;
every message received is printed (From, To, Subject) and kept as DIR/NNNNNN.eml."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from standins.smtp import SmtpSink


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog="python -m standins.smtp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8025)
    p.add_argument("--maildir", type=Path, default=Path("artifacts/mail"))
    args = p.parse_args()
    args.maildir.mkdir(parents=True, exist_ok=True)
    sink = SmtpSink(args.host, args.port, args.maildir).start()
    print(f"[smtp-sink] smtp://{args.host}:{args.port}, messages in {args.maildir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.stop()


if __name__ == "__main__":
    main()
