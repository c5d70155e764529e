#!/usr/bin/env python3
"""Opens N mutual-TLS keep-alive connections to the proxy, makes one request
on each, holds them idle, and prints the supervisor's RSS while they are open.

Usage: idle_conns.py HOST PORT CERTDIR SUPERVISOR_PID [N]
"""
import socket
import ssl
import sys
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    host, port, certdir, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    ctx = ssl.create_default_context(cafile=f"{certdir}/ca.pem")
    ctx.load_cert_chain(f"{certdir}/cert.pem", f"{certdir}/key.pem")
    before = rss_kib(pid)
    conns = []
    started = time.monotonic()
    for _ in range(n):
        raw = socket.create_connection((host, port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname=host)
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        answer = b""
        while not answer.endswith(b"OK"):
            chunk = tls.recv(4096)
            if not chunk:
                raise RuntimeError("connection closed before the answer")
            answer += chunk
        conns.append(tls)
    opened = time.monotonic() - started
    time.sleep(1)
    held = rss_kib(pid)
    # Every connection must still be usable after idling.
    for c in conns[:: max(1, n // 20)]:
        c.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        if not c.recv(4096):
            raise RuntimeError("an idle connection was closed")
    for c in conns:
        c.close()
    print(f"{n} {before} {held} {opened:.2f}")


if __name__ == "__main__":
    main()
