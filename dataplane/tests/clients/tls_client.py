"""Python's ssl module against the proxy's TLS port.

usage: tls_client.py MODE PROXY_HOST:PORT CA_FILE [ARGS...]

  socks5 TARGET_HOST:PORT   SOCKS5 CONNECT inside TLS, then a GET /hello (Connection: close) through the
                            tunnel; prints the status line and the body length
  socks5-cert CERT KEY TARGET_HOST:PORT
                            the same, presenting the client certificate CERT (key KEY)
                            and offering no authentication method but "none"
  resume                    two handshakes, the second offering the first's session;
                            prints "resumed" or "full"
  peer                      prints the SHA-256 of the certificate the proxy presents

Prints one line; exits non-zero on any failure.
"""
import hashlib
import socket
import ssl
import sys


def connect(proxy, ctx, session=None):
    host, port = proxy.rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def main():
    mode, proxy, ca = sys.argv[1:4]
    ctx = ssl.create_default_context(cafile=ca)
    if mode in ("socks5", "socks5-cert"):
        if mode == "socks5-cert":
            ctx.load_cert_chain(sys.argv[4], sys.argv[5])
            target = sys.argv[6]
        else:
            target = sys.argv[4]
        host, port = target.rsplit(":", 1)
        s = connect(proxy, ctx)
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + int(port).to_bytes(2, "big"))
        reply = s.recv(10)
        assert reply[:2] == b"\x05\x00", reply
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        print(data.split(b"\r\n")[0].decode(), len(data.split(b"\r\n\r\n", 1)[1]))
    elif mode == "resume":
        # TLS 1.3 tickets arrive after the handshake: read once so Python sees one.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        first = connect(proxy, ctx)
        first.sendall(b"GET /resume HTTP/1.1\r\nHost: x\r\n\r\n")
        first.recv(1024)
        session = first.session
        first.close()
        second = connect(proxy, ctx, session=session)
        print("resumed" if second.session_reused else "full")
        second.close()
    elif mode == "peer":
        s = connect(proxy, ctx)
        print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())
        s.close()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
