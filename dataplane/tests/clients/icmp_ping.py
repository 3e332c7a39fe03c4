"""One ICMP echo request to an IPv4 address over a raw socket (no ping(8) is installed on
these machines); exit status 0 when the echo reply came back within 5 s.

usage: icmp_ping.py ADDRESS
"""

import os
import select
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main() -> int:
    target = sys.argv[1]
    ident = os.getpid() & 0xFFFF
    payload = b"zcproxy-af-xdp-ping"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, 1) + payload
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.sendto(packet, (target, 0))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data, (source, _) = s.recvfrom(2048)
        ihl = (data[0] & 0x0F) * 4
        kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[ihl : ihl + 8])
        if source == target and kind == 0 and reply_id == ident:
            print("echo reply from", source)
            return 0
    print("no echo reply from", target)
    return 1


if __name__ == "__main__":
    sys.exit(main())
