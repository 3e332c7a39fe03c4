"""Many HTTP/3 CONNECT tunnels on one connection (aioquic, a QUIC stack this project did not
write), each pushing bytes toward a target that never reads them: what the proxy holds is
then bounded only by its QUIC windows and its tunnel buffer budget. Opens STREAMS tunnels,
offers BYTES on each (aioquic sends as flow control allows), holds them HOLD seconds, and
prints "admitted A refused R sent S": tunnels answered 200, refused streams (reset before an
answer), and the bytes aioquic got out in all (acknowledged by the proxy's flow control).

usage: aioquic_flood.py PROXY_HOST:PORT CA_FILE TARGET_HOST:PORT STREAMS BYTES HOLD
"""

import asyncio
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.answers = {}

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            f = self.answers.get(event.stream_id)
            if f is not None and not f.done():
                f.set_result(None)
        for ev in self.h3.handle_event(event):
            f = self.answers.get(getattr(ev, "stream_id", None))
            if isinstance(ev, HeadersReceived) and f is not None and not f.done():
                f.set_result(int(dict(ev.headers)[b":status"]))

    def open(self, authority):
        stream_id = self._quic.get_next_available_stream_id()
        self.answers[stream_id] = asyncio.get_running_loop().create_future()
        headers = [(b":method", b"CONNECT"), (b":authority", authority.encode())]
        self.h3.send_headers(stream_id, headers, end_stream=False)
        return stream_id


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    cafile, target = sys.argv[2], sys.argv[3]
    streams, size, hold = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.load_verify_locations(cafile)
    async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
        ids = [client.open(target) for _ in range(streams)]
        client.transmit()
        results = []
        for i in ids:
            try:
                results.append(await asyncio.wait_for(client.answers[i], 10))
            except asyncio.TimeoutError:
                results.append(None)
        admitted = [i for i, r in zip(ids, results) if r == 200]
        chunk = bytes(64 * 1024)
        for i in admitted:
            for _ in range(size // len(chunk)):
                client.h3.send_data(i, chunk, end_stream=False)
        client.transmit()
        await asyncio.sleep(hold)
        quic = client._quic
        sent = sum(
            s.sender._buffer_start for i, s in quic._streams.items() if i in set(admitted)
        )
        print(f"admitted {len(admitted)} refused {results.count(None)} sent {sent}")


asyncio.run(main())
