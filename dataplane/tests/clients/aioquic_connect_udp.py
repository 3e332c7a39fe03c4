"""MASQUE CONNECT-UDP through zcproxy with aioquic: one extended CONNECT (`:protocol
connect-udp`, the default URI template) to a UDP echo server, then DATAGRAM frames of mixed
sizes (context 0) both ways. Prints how many of the sent datagrams came back; ordering is
not assumed. Also checks a path outside the template (404) and a bad port (400).

usage: aioquic_connect_udp.py PROXY_HOST:PORT CA_FILE ECHO_HOST:PORT COUNT
"""

import asyncio
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.responses = {}
        self.datagrams = {}

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id in self.responses:
                fut = self.responses[ev.stream_id]
                if not fut.done():
                    fut.set_result(dict(ev.headers))
            elif isinstance(ev, DatagramReceived):
                self.datagrams.setdefault(ev.stream_id, []).append(ev.data)

    async def request(self, authority, path):
        stream_id = self._quic.get_next_available_stream_id()
        self.responses[stream_id] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(
            stream_id,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"connect-udp"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"capsule-protocol", b"?1"),
            ],
        )
        self.transmit()
        headers = await asyncio.wait_for(self.responses[stream_id], 10)
        return stream_id, int(headers[b":status"])


async def main():
    proxy, cafile, echo, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    host, port = proxy.rsplit(":", 1)
    echo_host, echo_port = echo.rsplit(":", 1)
    config = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name="localhost", max_datagram_frame_size=65536
    )
    config.load_verify_locations(cafile)
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        authority = f"localhost:{port}"
        _, status = await client.request(authority, "/not/a/template")
        assert status == 404, f"path outside the template: {status}"
        _, status = await client.request(authority, f"/.well-known/masque/udp/{echo_host}/0/")
        assert status == 400, f"port 0: {status}"
        stream_id, status = await client.request(
            authority, f"/.well-known/masque/udp/{echo_host}/{echo_port}/"
        )
        assert status == 200, f"CONNECT-UDP answered {status}"
        sent = set()
        for i in range(count):
            # 1100: aioquic holds back (for good) a datagram that fits no packet.
            size = [1, 64, 512, 1100][i % 4]
            payload = i.to_bytes(4, "big") + bytes((i % 251,)) * (size - 4 if size > 4 else 0)
            payload = payload[:max(size, 4)]
            sent.add(payload)
            client.h3.send_datagram(stream_id, b"\x00" + payload)
            if i % 50 == 49:
                client.transmit()
                await asyncio.sleep(0.005)
        client.transmit()
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            if len(client.datagrams.get(stream_id, [])) >= count:
                break
            await asyncio.sleep(0.05)
        got = client.datagrams.get(stream_id, [])
        assert all(d[:1] == b"\x00" for d in got), "context 0 on every datagram"
        back = {d[1:] for d in got}
        assert back <= sent, "an echoed datagram that was never sent"
        print(f"sent {count} received {len(back)}")


asyncio.run(main())
