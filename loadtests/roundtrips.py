"""Count database round trips on the wire: a TCP relay between an API and PostgreSQL.

A round trip is a turn of the conversation: the client writes, then waits for what the
server answers. The relay counts, per connection, every time data from the client
follows data from the server (or opens the conversation), whatever the messages are:
a statement, the `BEGIN` and `COMMIT` a driver sends on its own, a pool's liveness
ping, or a pipeline of several statements written at once (one turn). Nothing of the
API is instrumented: point its `DATABASE_URL` at `relay.port`.

    relay = TurnCounter("127.0.0.1", 5432)
    relay.start()                 # a thread of its own
    ... API on postgresql://user@127.0.0.1:{relay.port}/db ...
    before = relay.turns; <N requests>; (relay.turns - before) / N
    relay.stop()
"""

from __future__ import annotations

import asyncio
import threading


class TurnCounter:
    """A relay on 127.0.0.1:`port` (an ephemeral port) to `host`:`upstream_port`;
    `turns` counts client turns over every connection since the start."""

    def __init__(self, host: str, upstream_port: int) -> None:
        self.host, self.upstream_port = host, upstream_port
        self.turns = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        """Listen (returns once the port is known)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the round-trip relay did not start")

    def stop(self) -> None:
        """Stop listening and close the loop's thread (open connections are dropped)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            c_writer.close()
            return
        last = ["server"]  # who spoke last on this connection

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       side: str) -> None:  # fmt: skip
            try:
                while data := await reader.read(65536):
                    if side == "client" and last[0] == "server":
                        self.turns += 1
                    last[0] = side
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(c_reader, s_writer, "client"), pump(s_reader, c_writer, "server"))
