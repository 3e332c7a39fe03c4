"""UDP through a SOCKS5 proxy with PySocks (UDP ASSOCIATE), counting what comes back.

usage: pysocks_udp.py PROXY_HOST:PORT DEST_HOST DEST_PORT COUNT SIZE [USER PASSWORD]

Sends COUNT datagrams of SIZE bytes (a sequence number, then a pattern derived from it) to
an echo server at DEST_HOST:DEST_PORT (an IPv4 or IPv6 address or a name) in rounds of 64,
waiting for each round's echoes (up to 2 s) before the next, and prints one JSON line:
sent, received (distinct sequence numbers), corrupt (echoes whose bytes differ), the
addresses the replies named, and the relay address used.
"""
import json
import socket
import struct
import sys
import time

import socks

ROUND = 64


def payload(seq, size):
    head = struct.pack("!Q", seq)
    body = bytes((seq * 7 + i) & 0xFF for i in range(max(size - 8, 0)))
    return (head + body)[:max(size, 8)]


def main():
    proxy, dest_host, dest_port, count, size = sys.argv[1:6]
    creds = sys.argv[6:8]
    host, port = proxy.rsplit(":", 1)
    dest = (dest_host, int(dest_port))
    count, size = int(count), int(size)
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    if creds:
        s.set_proxy(socks.SOCKS5, host, int(port), username=creds[0], password=creds[1])
    else:
        s.set_proxy(socks.SOCKS5, host, int(port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.settimeout(0.2)
    got, corrupt, sources, sent = set(), 0, set(), 0
    expected = {}
    while sent < count:
        n = min(ROUND, count - sent)
        for seq in range(sent, sent + n):
            data = payload(seq, size)
            expected[seq] = data
            s.sendto(data, dest)
        sent += n
        deadline = time.time() + 2
        while len(got) < sent and time.time() < deadline:
            try:
                data, src = s.recvfrom(70000)
            except socket.timeout:
                continue
            sources.add(f"{src[0]}:{src[1]}")
            seq = struct.unpack("!Q", data[:8])[0] if len(data) >= 8 else -1
            if expected.get(seq) != data:
                corrupt += 1
            else:
                got.add(seq)
    print(json.dumps({
        "sent": sent,
        "received": len(got),
        "corrupt": corrupt,
        "sources": sorted(sources),
        # PySocks sends to the relay port at the proxy's host (it ignores BND.ADDR).
        "relay": "%s:%d" % socks._orig_socket.getpeername(s)[:2],
    }))


if __name__ == "__main__":
    main()
