"""HTTP/3 CONNECT through zcproxy with aioquic (a QUIC and HTTP/3 stack this project did not
write): opens one QUIC connection, then for each of the given targets a CONNECT tunnel; sends
a byte pattern of the requested size, half-closes, reads the echo to its end and compares.
Also checks that a request without credentials to a proxy that wants them gets 407.

usage: aioquic_connect.py PROXY_HOST:PORT CA_FILE ECHO_HOST:PORT BYTES [USER:PASSWORD]
Exit status 0 when every check passed.
"""

import asyncio
import base64
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


class Tunnel:
    def __init__(self):
        self.headers = asyncio.get_running_loop().create_future()
        self.data = asyncio.Queue()


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.tunnels = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.tunnels:
            self.tunnels[event.stream_id].data.put_nowait(ConnectionResetError())
        for ev in self.h3.handle_event(event):
            t = self.tunnels.get(ev.stream_id)
            if t is None:
                continue
            if isinstance(ev, HeadersReceived):
                t.headers.set_result(dict(ev.headers))
                if ev.stream_ended:
                    t.data.put_nowait(None)
            elif isinstance(ev, DataReceived):
                if ev.data:
                    t.data.put_nowait(ev.data)
                if ev.stream_ended:
                    t.data.put_nowait(None)

    async def open(self, authority, credentials=None):
        stream_id = self._quic.get_next_available_stream_id()
        tunnel = Tunnel()
        self.tunnels[stream_id] = tunnel
        headers = [(b":method", b"CONNECT"), (b":authority", authority.encode())]
        if credentials:
            token = base64.b64encode(credentials.encode()).decode()
            headers.append((b"proxy-authorization", f"Basic {token}".encode()))
        self.h3.send_headers(stream_id, headers, end_stream=False)
        self.transmit()
        response = await asyncio.wait_for(tunnel.headers, 10)
        return stream_id, tunnel, int(response[b":status"])

    async def echo(self, authority, size, credentials):
        stream_id, tunnel, status = await self.open(authority, credentials)
        assert status == 200, f"CONNECT answered {status}"
        data = bytes((i * 31 + 7) % 256 for i in range(size))
        step = 64 * 1024
        for i in range(0, size, step):
            self.h3.send_data(stream_id, data[i : i + step], end_stream=False)
            self.transmit()
            await asyncio.sleep(0)
        self.h3.send_data(stream_id, b"", end_stream=True)
        self.transmit()
        got = bytearray()
        while True:
            piece = await asyncio.wait_for(tunnel.data.get(), 30)
            if piece is None:
                break
            if isinstance(piece, Exception):
                raise piece
            got.extend(piece)
        assert bytes(got) == data, f"echo differs: {len(got)} of {size} bytes back"


async def main():
    proxy, cafile, target, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    credentials = sys.argv[5] if len(sys.argv) > 5 else None
    host, port = proxy.rsplit(":", 1)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile)
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        if credentials:
            _, _, status = await client.open(target)
            assert status == 407, f"no credentials: {status}"
        await client.echo(target, size, credentials)
        await asyncio.gather(*(client.echo(target, 100_000, credentials) for _ in range(10)))
    print("ok")


asyncio.run(main())
