#!/usr/bin/env python3
"""Proxy soak: CLIENTS concurrent clients run a mixed Docker API workload
through the supervisor's mutual-TLS proxy for a fixed time, while the
supervisor's RSS and open file descriptors are sampled.

An error counts against the proxy only when dockerd itself would not have
given it: a transport failure (reset, EOF, timeout), or an answer that did
not come from dockerd. Every answer dockerd makes carries its `Api-Version`
header; the proxy's own answers (a 503 while holding, a refusal) do not.
Answers dockerd gave with an error status are listed apart, not counted.

Usage: proxy_soak.py --addr HOST:PORT --certs CLIENT_CERT_DIR --pid SUPERVISOR_PID
                     --image IMAGE --duration SECONDS [--clients 64] [--sample 5]
                     [--json OUT]
Exit status 1 when any error counted, when a client hangs, or when fds leak:
a client connection still open once every client has gone, more non-socket
fds than before, or more dockerd sockets than the pool keeps (128).
"""
import argparse
import http.client
import json
import os
import random
import socket
import ssl
import statistics
import threading
import time

API = "/v1.41"


def tls_context(certs):
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    ctx.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
    ctx.check_hostname = False
    return ctx


class Tally:
    """What every client saw, shared under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_op = {}
        self.proxy_errors = []  # (op, what): counted
        self.dockerd_errors = {}  # (op, status) -> count: reported only

    def ok(self, op):
        with self.lock:
            self.requests += 1
            self.by_op[op] = self.by_op.get(op, 0) + 1

    def proxy_error(self, op, what):
        with self.lock:
            self.requests += 1
            self.proxy_errors.append((op, what))

    def dockerd_error(self, op, status):
        with self.lock:
            self.requests += 1
            key = f"{op} {status}"
            self.dockerd_errors[key] = self.dockerd_errors.get(key, 0) + 1


class Client:
    """One keep-alive connection, reopened after any failure, as the docker
    CLI and SDKs do."""

    def __init__(self, host, port, ctx, tally, image, n):
        self.host, self.port, self.ctx = host, port, ctx
        self.tally, self.image, self.n = tally, image, n
        self.conn = None

    def connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
        return self.conn

    def call(self, op, method, path, body=None, ok=(200, 201, 204, 304)):
        """One request; returns (status, body bytes), or None after a
        failure, which is tallied."""
        headers = {"Host": "docker"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn = self.connect()
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            self.tally.proxy_error(op, f"{type(e).__name__}: {e}")
            return None
        if resp.getheader("Api-Version") is None:
            self.tally.proxy_error(op, f"{resp.status} not from dockerd: {payload[:200]!r}")
            return None
        if resp.status not in ok:
            self.tally.dockerd_error(op, resp.status)
            return None
        self.tally.ok(op)
        return resp.status, payload

    def lifecycle(self):
        """create, start, wait, logs, rm: a job's `docker run --rm`."""
        name = f"soak-{self.n}-{random.getrandbits(32):08x}"
        body = {"Image": self.image, "Cmd": ["echo", "soak"], "Labels": {"soak": "1"}}
        r = self.call("create", "POST", f"{API}/containers/create?name={name}", body)
        if r is None:
            return
        cid = json.loads(r[1])["Id"]
        if self.call("start", "POST", f"{API}/containers/{cid}/start") is not None:
            self.call("wait", "POST", f"{API}/containers/{cid}/wait")
            self.call("logs", "GET", f"{API}/containers/{cid}/logs?stdout=1&stderr=1")
        self.call("rm", "DELETE", f"{API}/containers/{cid}?force=1")

    def exec_once(self, target):
        """exec create, then start on a hijacked connection of its own (as
        the CLI does), reading the stream to its end."""
        body = {"Cmd": ["echo", "exec"], "AttachStdout": True, "AttachStderr": True}
        r = self.call("exec-create", "POST", f"{API}/containers/{target}/exec", body)
        if r is None:
            return
        eid = json.loads(r[1])["Id"]
        start = json.dumps({"Detach": False, "Tty": False}).encode()
        req = (
            f"POST {API}/exec/{eid}/start HTTP/1.1\r\nHost: docker\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(start)}\r\n"
            "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        ).encode() + start
        try:
            with socket.create_connection((self.host, self.port), timeout=60) as raw:
                with self.ctx.wrap_socket(raw) as s:
                    s.sendall(req)
                    got = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
        except OSError as e:
            self.tally.proxy_error("exec-start", f"{type(e).__name__}: {e}")
            return
        head = got.split(b"\r\n", 1)[0]
        if b" 101 " not in head + b" " or b"api-version" not in got.lower().split(b"\r\n\r\n", 1)[0]:
            self.tally.proxy_error("exec-start", f"unexpected answer {head[:120]!r}")
        elif b"exec" not in got:
            self.tally.proxy_error("exec-start", "the stream ended without the command's output")
        else:
            self.tally.ok("exec-start")

    def step(self, target):
        roll = random.random()
        if roll < 0.30:
            self.call("ping", "GET", "/_ping")
        elif roll < 0.42:
            self.call("version", "GET", f"{API}/version")
        elif roll < 0.52:
            self.call("info", "GET", f"{API}/info")
        elif roll < 0.67:
            self.call("ps", "GET", f"{API}/containers/json?all=1")
        elif roll < 0.77:
            self.call("images", "GET", f"{API}/images/json")
        elif roll < 0.82:
            self.call("inspect", "GET", f"{API}/containers/{target}/json")
        elif roll < 0.87:
            now = int(time.time())
            self.call("events", "GET", f"{API}/events?since={now - 2}&until={now}")
        elif roll < 0.94:
            self.lifecycle()
        else:
            self.exec_once(target)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def tcp_inodes(port):
    """Inodes of the sockets whose local port is `port`: the proxy's
    listener and its client connections."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        found.add(cols[9])
        except FileNotFoundError:
            pass
    return found


def fd_kinds(pid, port):
    """The supervisor's fds: client connections (TCP on the proxy port, the
    listener included), other sockets (dockerd's pooled connections, the
    unix listeners), and the rest."""
    clients = tcp_inodes(port)
    kinds = {"client_tcp": 0, "other_sockets": 0, "other": 0}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            kinds["client_tcp" if target[8:-1] in clients else "other_sockets"] += 1
        else:
            kinds["other"] += 1
    return kinds


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def slope_per_minute(samples, index):
    """Least-squares slope of the second half of the samples, per minute:
    the first half is warm-up (pools, allocator arenas filling)."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return 0.0
    xs = [s[0] for s in half]
    ys = [s[index] for s in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--certs", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--json")
    cfg = ap.parse_args()
    host, port = cfg.addr.rsplit(":", 1)
    port = int(port)
    ctx = tls_context(cfg.certs)
    tally = Tally()

    # A long-running container for exec and inspect.
    setup = Client(host, port, ctx, tally, cfg.image, -1)
    r = setup.call("setup", "POST", f"{API}/containers/create?name=soak-target",
                   {"Image": cfg.image, "Cmd": ["sleep", "100000"], "Labels": {"soak": "1"}})
    if r is None or setup.call("setup", "POST", f"{API}/containers/soak-target/start") is None:
        raise SystemExit(f"cannot start the exec target: {tally.proxy_errors or tally.dockerd_errors}")
    setup.conn.close()
    base_fds, base_rss = fds(cfg.pid), rss_kib(cfg.pid)
    base_kinds = fd_kinds(cfg.pid, port)

    started = time.monotonic()
    stop = threading.Event()

    def worker(n):
        c = Client(host, port, ctx, tally, cfg.image, n)
        while not stop.is_set():
            c.step("soak-target")
        if c.conn is not None:
            c.conn.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(cfg.clients)]
    for t in threads:
        t.start()
    samples = []  # (seconds, rss KiB, fds)
    while True:
        t = time.monotonic() - started
        samples.append((t, rss_kib(cfg.pid), fds(cfg.pid)))
        if t >= cfg.duration:
            break
        time.sleep(min(cfg.sample, cfg.duration - t))
    stop.set()
    for t in threads:
        t.join(timeout=90)
    hung = sum(t.is_alive() for t in threads)

    cleanup = Client(host, port, ctx, Tally(), cfg.image, -2)
    cleanup.call("cleanup", "DELETE", f"{API}/containers/soak-target?force=1")
    cleanup.conn.close()
    # Connections the clients closed are gone from the proxy within
    # moments; allow a few seconds before fds are compared.
    deadline = time.monotonic() + 10
    while fd_kinds(cfg.pid, port)["client_tcp"] > base_kinds["client_tcp"] and time.monotonic() < deadline:
        time.sleep(0.2)
    end_fds, end_rss = fds(cfg.pid), rss_kib(cfg.pid)
    end_kinds = fd_kinds(cfg.pid, port)

    report = {
        "clients": cfg.clients,
        "seconds": round(samples[-1][0], 1),
        "requests": tally.requests,
        "requests_per_second": round(tally.requests / max(samples[-1][0], 1e-9), 1),
        "by_op": tally.by_op,
        "proxy_errors": len(tally.proxy_errors),
        "proxy_error_examples": tally.proxy_errors[:10],
        "dockerd_errors": tally.dockerd_errors,
        "hung_clients": hung,
        "rss_kib": {"baseline": base_rss, "peak": max(s[1] for s in samples), "end": end_rss,
                    "slope_per_min": round(slope_per_minute(samples, 1), 1)},
        "fds": {"baseline": base_fds, "peak": max(s[2] for s in samples), "end": end_fds,
                "slope_per_min": round(slope_per_minute(samples, 2), 2),
                "baseline_kinds": base_kinds, "end_kinds": end_kinds},
        "samples": len(samples),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if cfg.json:
        with open(cfg.json, "w") as f:
            f.write(text + "\n")
    failed = []
    if tally.proxy_errors:
        failed.append(f"{len(tally.proxy_errors)} errors dockerd would not have given")
    if hung:
        failed.append(f"{hung} clients still running 90 s after the end")
    if end_kinds["client_tcp"] > base_kinds["client_tcp"]:
        failed.append(f"{end_kinds['client_tcp'] - base_kinds['client_tcp']} client connections still open after every client left")
    if end_kinds["other"] > base_kinds["other"]:
        failed.append(f"{end_kinds['other']} non-socket fds after the run, {base_kinds['other']} before")
    # dockerd connections are pooled, up to 128 kept idle (proxy/src/forward.rs).
    if end_kinds["other_sockets"] > base_kinds["other_sockets"] + 128:
        failed.append(f"{end_kinds['other_sockets']} other sockets after the run: more than the pool keeps")
    if failed:
        raise SystemExit("proxy soak failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
