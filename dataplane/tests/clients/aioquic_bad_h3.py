"""Malformed HTTP/3 sent to zcproxy over real QUIC (aioquic), one fresh connection per case:
broken control streams and SETTINGS, frames out of order on a request stream, undecodable
QPACK, and malformed capsules on a CONNECT-UDP flow. Prints one line per case, "CASE CODE",
where CODE is the error code the proxy closed the connection with (or "open" when it kept
it, as for capsules it skips, or "echo" when a datagram still came back after them).

usage: aioquic_bad_h3.py PROXY_HOST:PORT CA_FILE UDP_ECHO_HOST:PORT
"""

import asyncio
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated


def frame(kind, payload):
    return encode_uint_var(kind) + encode_uint_var(len(payload)) + payload


def settings(pairs):
    return frame(0x4, b"".join(encode_uint_var(k) + encode_uint_var(v) for k, v in pairs))


CONTROL = encode_uint_var(0x00)


class Raw(QuicConnectionProtocol):
    """A QUIC connection speaking bytes, not HTTP/3: reports how it was closed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and not self.closed.done():
            self.closed.set_result(event.error_code)

    def uni(self, data):
        stream = self._quic.get_next_available_stream_id(is_unidirectional=True)
        self._quic.send_stream_data(stream, data)
        self.transmit()

    def bidi(self, data):
        stream = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream, data)
        self.transmit()


class H3(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.headers = asyncio.get_running_loop().create_future()
        self.datagrams = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated) and not self.closed.done():
            self.closed.set_result(event.error_code)
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and not self.headers.done():
                self.headers.set_result(dict(ev.headers))
            elif isinstance(ev, DatagramReceived):
                self.datagrams.put_nowait(ev.data)


def config(cafile, datagrams=False):
    c = QuicConfiguration(
        is_client=True,
        alpn_protocols=H3_ALPN,
        server_name="localhost",
        max_datagram_frame_size=65536 if datagrams else None,
    )
    c.load_verify_locations(cafile)
    return c


async def raw_case(host, port, cafile, act):
    async with connect(host, port, configuration=config(cafile), create_protocol=Raw) as c:
        act(c)
        try:
            return str(await asyncio.wait_for(asyncio.shield(c.closed), 5))
        except asyncio.TimeoutError:
            return "open"


async def capsules(host, port, cafile, echo):
    """Unknown and oversized capsules on a CONNECT-UDP flow are skipped; a DATAGRAM
    capsule after them still reaches the echo, and the answer comes back."""
    echo_host, echo_port = echo.rsplit(":", 1)
    async with connect(
        host, port, configuration=config(cafile, datagrams=True), create_protocol=H3
    ) as c:
        stream = c._quic.get_next_available_stream_id()
        c.h3.send_headers(
            stream,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"connect-udp"),
                (b":scheme", b"https"),
                (b":authority", f"localhost:{port}".encode()),
                (b":path", f"/.well-known/masque/udp/{echo_host}/{echo_port}/".encode()),
                (b"capsule-protocol", b"?1"),
            ],
        )
        c.transmit()
        headers = await asyncio.wait_for(c.headers, 5)
        if headers[b":status"] != b"200":
            return "status " + headers[b":status"].decode()
        unknown = encode_uint_var(0x2A) + encode_uint_var(5) + b"abcde"
        oversized = encode_uint_var(0x00) + encode_uint_var(70_000) + b"\x00" + bytes(69_999)
        good = encode_uint_var(0x00) + encode_uint_var(5) + b"\x00ping"
        c.h3.send_data(stream, unknown + oversized + good, end_stream=False)
        c.transmit()
        try:
            got = await asyncio.wait_for(c.datagrams.get(), 5)
        except asyncio.TimeoutError:
            return "no echo"
        return "echo" if got == b"\x00ping" else f"wrong {got!r}"


async def main():
    proxy, cafile, echo = sys.argv[1], sys.argv[2], sys.argv[3]
    host, port = proxy.rsplit(":", 1)
    port = int(port)
    cases = {
        # The control stream must open with SETTINGS (RFC 9114 §6.2.1).
        "data_on_control": lambda c: c.uni(CONTROL + frame(0x0, b"xx")),
        # A setting may appear once (§7.2.4).
        "duplicate_setting": lambda c: c.uni(CONTROL + settings([(0x6, 100), (0x6, 200)])),
        # HTTP/2 settings are forbidden in HTTP/3 (§7.2.4.1).
        "h2_setting": lambda c: c.uni(CONTROL + settings([(0x2, 1)])),
        # One control stream per peer (§6.2.1).
        "second_control": lambda c: (c.uni(CONTROL + settings([])), c.uni(CONTROL + settings([]))),
        # A request opens with HEADERS (§4.1).
        "data_before_headers": lambda c: (c.uni(CONTROL + settings([])), c.bidi(frame(0x0, b"body"))),
        # A field section QPACK cannot decode (RFC 9204 §2.2).
        "bad_qpack": lambda c: (
            c.uni(CONTROL + settings([])),
            c.bidi(frame(0x1, b"\x00\x00\xff\xff\xff\xff\xff")),
        ),
        # A frame whose length runs past what the stream then ends with (§7.1).
        "truncated_frame": lambda c: (
            c.uni(CONTROL + settings([])),
            c._quic.send_stream_data(
                c._quic.get_next_available_stream_id(),
                encode_uint_var(0x1) + encode_uint_var(10) + b"\x00\x00\x00",
                end_stream=True,
            ),
            c.transmit(),
        ),
    }
    for name, act in cases.items():
        print(name, await raw_case(host, port, cafile, act), flush=True)
    print("capsules", await capsules(host, port, cafile, echo), flush=True)


asyncio.run(main())
