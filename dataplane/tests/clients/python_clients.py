"""Drives a running zcproxy with Python client libraries (requests + PySocks).

Usage: python_clients.py PROXY_HOST:PORT ORIGIN_URL USER PASSWORD
Exits non-zero with a message on the first mismatch.
"""
import socket
import sys

import requests
import socks

proxy, origin, user, password = sys.argv[1:5]
host, port = proxy.rsplit(":", 1)

for scheme in ("socks5", "socks5h", "http"):
    proxies = {"http": f"{scheme}://{user}:{password}@{proxy}"}
    r = requests.get(origin + "/hello", proxies=proxies, timeout=20)
    assert r.status_code == 200 and r.text == "hello\n", (scheme, r.status_code, r.text)
    r = requests.post(origin + "/echo", data=b"x" * 100_000, proxies=proxies, timeout=20)
    assert r.content == b"x" * 100_000, (scheme, "echo")

# A wrong password is refused by every flavour.
r = requests.get(origin + "/hello", proxies={"http": f"http://{user}:wrong@{proxy}"}, timeout=20)
assert r.status_code == 407, r.status_code
try:
    requests.get(origin + "/hello", proxies={"http": f"socks5h://{user}:wrong@{proxy}"}, timeout=20)
    raise AssertionError("socks5 with a wrong password succeeded")
except requests.exceptions.ConnectionError:
    pass

# Raw PySocks: a tunnel used as a plain socket, both ways.
s = socks.socksocket(socket.AF_INET, socket.SOCK_STREAM)
s.set_proxy(socks.SOCKS5, host, int(port), rdns=True, username=user, password=password)
origin_host, origin_port = origin.split("//", 1)[1].rsplit(":", 1)
s.connect((origin_host, int(origin_port)))
s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello\n"), data
print("python clients: ok")
