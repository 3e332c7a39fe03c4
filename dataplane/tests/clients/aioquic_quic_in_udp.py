"""QUIC carried inside MASQUE CONNECT-UDP through zcproxy, with aioquic at every end: a local
aioquic HTTP/3 server (self-signed, made here) answers GET /; an aioquic client opens a
CONNECT-UDP flow to it through the proxy and runs a second, inner QUIC connection whose
packets travel as HTTP datagrams (context 0) of that flow; the inner HTTP/3 GET must be
answered. Prints "ok <body>" on success.

usage: aioquic_quic_in_udp.py PROXY_HOST:PORT PROXY_CA_FILE
"""

import asyncio
import datetime
import ssl
import sys
import tempfile

from aioquic.asyncio import serve
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BODY = b"hello from inside the tunnel"


def self_signed(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inner.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("inner.test")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = f"{directory}/inner.pem", f"{directory}/inner.key"
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_file, key_file


class InnerServer(QuicConnectionProtocol):
    """Answers every HTTP/3 request with BODY."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived):
                self.h3.send_headers(ev.stream_id, [(b":status", b"200")])
                self.h3.send_data(ev.stream_id, BODY, end_stream=True)
                self.transmit()


class Outer(QuicConnectionProtocol):
    """The client's connection to the proxy: one CONNECT-UDP flow, its datagrams handed to
    `on_datagram`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.response = asyncio.get_running_loop().create_future()
        self.flow = None
        self.on_datagram = None

    def quic_event_received(self, event):
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id == self.flow:
                if not self.response.done():
                    self.response.set_result(dict(ev.headers))
            elif isinstance(ev, DatagramReceived) and ev.stream_id == self.flow:
                if ev.data[:1] == b"\x00" and self.on_datagram:
                    self.on_datagram(ev.data[1:])

    async def connect_udp(self, authority, host, port):
        self.flow = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            self.flow,
            [
                (b":method", b"CONNECT"),
                (b":protocol", b"connect-udp"),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", f"/.well-known/masque/udp/{host}/{port}/".encode()),
                (b"capsule-protocol", b"?1"),
            ],
        )
        self.transmit()
        headers = await asyncio.wait_for(self.response, 10)
        return int(headers[b":status"])

    def send_udp(self, payload):
        self.h3.send_datagram(self.flow, b"\x00" + payload)
        self.transmit()


async def inner_get(outer, loop):
    """Runs an inner QUIC connection over `outer`'s flow and returns the GET's body."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="inner.test")
    config.verify_mode = ssl.CERT_NONE
    inner = QuicConnection(configuration=config)
    h3 = H3Connection(inner)
    # The address is the inner connection's idea of its peer; the flow is the real path.
    peer = ("192.0.2.1", 443)
    done = loop.create_future()
    body = bytearray()
    timer = None

    def pump():
        nonlocal timer
        now = loop.time()
        for data, _ in inner.datagrams_to_send(now=now):
            outer.send_udp(data)
        while (event := inner.next_event()) is not None:
            for ev in h3.handle_event(event):
                if isinstance(ev, DataReceived):
                    body.extend(ev.data)
                    if ev.stream_ended and not done.done():
                        done.set_result(bytes(body))
                elif isinstance(ev, HeadersReceived) and ev.stream_ended and not done.done():
                    done.set_result(bytes(body))
        if timer:
            timer.cancel()
        at = inner.get_timer()
        timer = loop.call_at(at, on_timer) if at is not None else None

    def on_timer():
        inner.handle_timer(now=loop.time())
        pump()

    def on_datagram(data):
        inner.receive_datagram(data, peer, now=loop.time())
        pump()

    outer.on_datagram = on_datagram
    inner.connect(peer, now=loop.time())
    stream = inner.get_next_available_stream_id()
    h3.send_headers(
        stream,
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"inner.test"),
            (b":path", b"/"),
        ],
        end_stream=True,
    )
    pump()
    try:
        return await asyncio.wait_for(done, 20)
    finally:
        if timer:
            timer.cancel()


async def main():
    proxy, cafile = sys.argv[1], sys.argv[2]
    host, port = proxy.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = self_signed(directory)
        server_config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        server_config.load_cert_chain(cert_file, key_file)
        server = await serve("127.0.0.1", 0, configuration=server_config, create_protocol=InnerServer)
        inner_port = server._transport.get_extra_info("sockname")[1]

        # The inner Initial is 1200 bytes: the outer packets must carry more than that.
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            server_name="localhost",
            max_datagram_frame_size=65536,
            max_datagram_size=1400,
        )
        config.load_verify_locations(cafile)
        async with connect(host, int(port), configuration=config, create_protocol=Outer) as outer:
            status = await outer.connect_udp(f"localhost:{port}", "127.0.0.1", inner_port)
            assert status == 200, f"CONNECT-UDP answered {status}"
            got = await inner_get(outer, loop)
            assert got == BODY, got
            print("ok", got.decode())
        server.close()


asyncio.run(main())
