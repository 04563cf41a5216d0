"""One send per response: the status line and headers leave with the body.

uvicorn's HTTP protocols write a response's status line and headers when the app sends
`http.response.start`, and its body when the app sends `http.response.body`: two
`transport.write` calls, and uvloop's transport (like asyncio's) sends each at once when
its buffer is empty. With TCP_NODELAY set, that is two `send` syscalls, two TCP segments
and, often, two reads by the client per response; py-spy put 13 % of an API worker's
samples on the first of the two writes under the search benchmark (README, session 10).
Node.js's http module does it the other way: "The first time response.write() is
called, it will send the buffered header information and the first chunk of the body to
the client" (nodejs.org/api/http.html, `response.write`).

`CoalescingTransport` holds the writes made within one pass of the event loop and sends
them with one `writelines` (one `writev` on uvloop) from a callback scheduled by the
first of them (`loop.call_soon`, which runs after the callbacks already ready: the app's
task finishes its step, both of uvicorn's writes included, before it). Closing, aborting
and `write_eof` keep their order with the held bytes. The HTTP protocol classes below
put it under uvicorn's protocols; `api.server` configures every server with one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard] brings httptools; without it uvicorn serves with h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a dependency of ours
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class CoalescingTransport(asyncio.Transport):
    """A transport over `transport` whose writes within one event-loop pass go out in one
    `writelines` at the end of that pass (`loop`: the running loop). Every other call is
    passed on; `close`, `write_eof` and `set_protocol` first send what is held, `abort`
    drops it (as the wrapped transport drops its own buffer)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold `data` (copied when mutable, as the caller may reuse its buffer) until the
        end of this event-loop pass."""
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._flush)
        chunk = data if isinstance(data, bytes) else bytes(data)
        self._held.append(chunk)
        self._held_bytes += len(chunk)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held, self._held_bytes = [], 0
        if self._transport.is_closing():
            return  # the wrapped transport would drop (and warn about) them too
        if len(held) == 1:
            self._transport.write(held[0])
        else:
            self._transport.writelines(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()  # a protocol switch (WebSocket upgrade): the held bytes go first
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class CoalescingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol over a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))


if HttpToolsProtocol is not None:

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol over a `CoalescingTransport`."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescingTransport(transport, asyncio.get_running_loop()))

    HTTP_PROTOCOL: type[asyncio.Protocol] = CoalescingHttpToolsProtocol
else:  # pragma: no cover
    HTTP_PROTOCOL = CoalescingH11Protocol
