"""`api.coalesce`: uvicorn's real HTTP protocols, given our transport, send each response
(status line, headers and body) in one write to the socket's transport, keep the order
of pipelined responses, and send what they hold before a close."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from api.coalesce import (
    HTTP_PROTOCOL,
    CoalescingH11Protocol,
    CoalescingHttpToolsProtocol,
    CoalescingTransport,
)
from api.server import _config


class Recorder(asyncio.Transport):
    """The socket's side: every call that reaches it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("write", b"".join(list_of_data)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def writes(self) -> list[bytes]:
        return [data for kind, data in self.calls if kind == "write"]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the request's path as its body, with a Content-Length."""
    if scope["type"] == "lifespan":
        return
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


async def serve(protocol_class: type[asyncio.Protocol], request: bytes, responses: int) -> Recorder:
    """Feeds `request` to a `protocol_class` over a Recorder; returns it once `responses`
    responses were written (the protocol's tasks run on this loop, nothing is timed)."""
    config = uvicorn.Config(app, http=protocol_class, log_config=None, access_log=False,
                            lifespan="off")  # fmt: skip
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = Recorder()
    protocol.connection_made(transport)
    protocol.data_received(request)  # type: ignore[attr-defined]
    for _ in range(1000):
        if b"".join(transport.writes()).count(b"HTTP/1.1 200") >= responses:
            break
        await asyncio.sleep(0)
    for _ in range(10):  # and let anything written later in the same response arrive
        await asyncio.sleep(0)
    return transport


GET = b"GET /%s HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
async def test_a_response_is_one_write(protocol_class: type[asyncio.Protocol]) -> None:
    transport = await serve(protocol_class, GET % b"one", 1)
    [sent] = transport.writes()
    head, _, body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 4" in head
    assert body == b"/one"


@pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, H11Protocol])
async def test_uvicorn_alone_writes_the_head_and_the_body_apart(
    protocol_class: type[asyncio.Protocol],
) -> None:
    """Why the module exists: without it, the same response is two writes or more (h11
    writes its end of message, empty here, as a third)."""
    transport = await serve(protocol_class, GET % b"one", 1)
    head, body, *rest = transport.writes()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"\r\n\r\n")
    assert body == b"/one"
    assert b"".join(rest) == b""


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
async def test_pipelined_responses_keep_their_order(protocol_class: type[asyncio.Protocol]) -> None:
    transport = await serve(protocol_class, GET % b"first" + GET % b"second", 2)
    sent = b"".join(transport.writes())
    first, second = sent.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert first.endswith(b"\r\n\r\n/first")
    assert second.endswith(b"\r\n\r\n/second")


@pytest.mark.parametrize("protocol_class", [CoalescingHttpToolsProtocol, CoalescingH11Protocol])
async def test_connection_close_sends_the_response_first(
    protocol_class: type[asyncio.Protocol],
) -> None:
    request = b"GET /bye HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    transport = await serve(protocol_class, request, 1)
    kinds = [kind for kind, _ in transport.calls]
    assert kinds == ["write", "close"]
    assert transport.calls[0][1].endswith(b"\r\n\r\n/bye")


async def test_held_bytes_go_out_at_the_end_of_the_pass_and_count_in_the_buffer() -> None:
    inner = Recorder()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"ab")
    transport.write(bytearray(b"cd"))
    transport.writelines([b"e", memoryview(b"f")])
    transport.write(b"")
    assert inner.calls == []
    assert transport.get_write_buffer_size() == 6
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"abcdef")]
    assert transport.get_write_buffer_size() == 0
    transport.write(b"g")
    await asyncio.sleep(0)
    assert inner.calls[1:] == [("write", b"g")]


async def test_abort_drops_what_is_held_and_close_sends_it() -> None:
    inner = Recorder()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"lost")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.calls == [("abort", b"")]

    inner = Recorder()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"kept")
    transport.close()
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"kept"), ("close", b"")]
    transport.write(b"after")  # the socket is closing: dropped, as the transport would
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"kept"), ("close", b"")]


def test_every_server_of_ours_uses_it() -> None:
    assert HTTP_PROTOCOL is CoalescingHttpToolsProtocol
    config = _config("127.0.0.1", 8000)
    config.load()
    assert config.http_protocol_class is CoalescingHttpToolsProtocol
    config = _config("127.0.0.1", 8000, http="h11")  # an explicit choice still wins
    config.load()
    assert config.http_protocol_class is H11Protocol
