#!/usr/bin/env python3
"""Probes a relay the way a hostile client would, from outside, and reports what held.

Starts a release `noc serve` on loopback with its *default* settings (real argon2id cost,
default limits) in a temporary directory, creates one license, then:

  memory      300 failed license logins, 4 at a time: growth of the relay's RSS, against
              the bound workers x argon2 memory + 32 MiB;
  storm       200 concurrent wrong-password clients from 8 addresses: how long a correct
              license login from another address takes meanwhile, and how the wrong ones
              were answered (refused, busy 503, throttled 429);
  guessing    200 wrong license passwords in a row from one address: how many were
              checked before the throttle answered 429;
  enumeration the answers and timings of 10 wrong passwords for an existing and for an
              unknown license name, and for an existing and an unknown account (account
              activation), from fresh addresses;
  flood       5 000 idle TCP sockets (no TLS ClientHello) from 8 loopback addresses:
              latency of GET /rts/v1/connect from another address (median of 10);
  trickle     a chunked body sent one byte every 300 ms: seconds until the relay closes;
  oversize    a chunked body that never ends: bytes the relay took after its 413.

Standard library only. Usage:
  bench/hostile_probes.py [--noc target/release/noc] [--markdown FILE]
With --markdown the results are appended to FILE as a section (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HTTP_PORT, DEVICE_PORT, ADMIN_PORT = 28443, 28444, 29090


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Relay:
    def __init__(self, noc: str, workdir: str):
        self.noc, self.dir = noc, workdir
        self.data = os.path.join(workdir, "data")
        self.log = open(os.path.join(workdir, "relay.log"), "w")
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            [noc, "serve", "--data-dir", self.data, "--http-listen", f"127.0.0.1:{HTTP_PORT}",
             "--device-listen", f"127.0.0.1:{DEVICE_PORT}", "--admin-listen", f"127.0.0.1:{ADMIN_PORT}", "--console-listen", "127.0.0.1:0"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("relay did not become ready; see " + self.log.name)
        self.ca = os.path.join(self.data, "tls", "cert.pem")

    def admin(self, *args: str) -> None:
        subprocess.run([self.noc, "admin", "--data-dir", self.data, *args], check=True,
                       stdout=subprocess.DEVNULL)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN_PORT}/metrics", timeout=5) as r:
            total = 0.0
            for line in r.read().decode().splitlines():
                if line.startswith(name):
                    total += float(line.rsplit(" ", 1)[1])
            return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def tls_context(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def request(ctx: ssl.SSLContext, method: str, path: str, body: bytes = b"", source: str = "127.0.0.1",
            timeout: float = 30) -> tuple[int, bytes]:
    raw = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=timeout, source_address=(source, 0))
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


def license_login(ctx: ssl.SSLContext, password: str, source: str = "127.0.0.1", name: str = "acme") -> int:
    body = json.dumps({"Name": name, "Password": password}).encode()
    return request(ctx, "POST", "/rts/v1/license", body, source=source)[0]


def probe_memory(relay: Relay, ctx: ssl.SSLContext) -> dict:
    license_login(ctx, "acme-license-password")  # warm up: workers and TLS
    before = rss_kib(relay.proc.pid)
    # 300 failures from 30 addresses (10 each, under the per-address budget): all checked.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(
            lambda i: license_login(ctx, f"wrong-{i}", source=f"127.0.1.{i % 30 + 1}", name=f"name-{i}"),
            range(300)))
    after = rss_kib(relay.proc.pid)
    workers = os.cpu_count() or 2
    return {"before_kib": before, "after_kib": after, "growth_kib": after - before,
            "bound_kib": workers * 19 * 1024 + 32 * 1024, "statuses": sorted(set(statuses))}


def probe_storm(relay: Relay, ctx: ssl.SSLContext) -> dict:
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        wrong = [pool.submit(license_login, ctx, f"storm-{i}", f"127.0.2.{i % 8 + 1}") for i in range(200)]
        time.sleep(0.5)
        started = time.monotonic()
        ok = license_login(ctx, "acme-license-password", source="127.0.3.1")
        correct_s = time.monotonic() - started
        statuses = [f.result() for f in wrong]
    return {"correct_status": ok, "correct_seconds": correct_s,
            "wrong_busy": statuses.count(503), "wrong_refused": statuses.count(401),
            "wrong_throttled": statuses.count(429), "rss_kib": rss_kib(relay.proc.pid)}


def probe_guessing(ctx: ssl.SSLContext) -> dict:
    statuses = [license_login(ctx, f"guess-{i}", source="127.0.4.1") for i in range(200)]
    first_throttled = next((i for i, s in enumerate(statuses) if s == 429), None)
    return {"checked": statuses.count(401), "throttled": statuses.count(429), "first_throttled": first_throttled}


def timed(fn) -> tuple[int, float]:
    started = time.monotonic()
    status = fn()
    return status, time.monotonic() - started


def provision_user(ctx: ssl.SSLContext, email: str, password: str) -> None:
    """Plays a VES for one request: license token, an RTS session, ProvisionUser."""
    body = json.dumps({"Name": "acme", "Password": "acme-license-password"}).encode()
    status, answer = request(ctx, "POST", "/rts/v1/license", body, source="127.0.6.1")
    token = json.loads(answer)["LicenseId"]
    params = json.loads(request(ctx, "GET", "/rts/v1/connect", source="127.0.6.1")[1])
    path = "/" + params["EventUrl"].split("/", 3)[3]
    envelope = json.dumps({"RtsConnection": {"Guid": os.urandom(16).hex(), "LicenseId": token}}).encode()
    raw = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=10)
    channel = ctx.wrap_socket(raw, server_hostname="localhost")
    channel.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nX-Rts-Key: {params['Key']}\r\n"
                    f"Content-Length: {len(envelope)}\r\n\r\n".encode() + envelope)
    channel.recv(65536)  # the channel's first lines: the session exists
    provision = json.dumps({"Type": "ProvisionUser", "Email": email, "Password": password,
                            "FirstName": "Bob", "LastName": "Probe"}).encode()
    raw = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(f"POST /rts/v1/data HTTP/1.1\r\nHost: localhost\r\nX-Rts-Key-Id: {params['KeyId']}\r\n"
                  f"X-Rts-Key: {params['Key']}\r\nContent-Length: {len(provision)}\r\nConnection: close\r\n\r\n"
                  .encode() + provision)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    channel.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"provisioning {email} failed: {answer[:200]!r}")


def probe_enumeration(relay: Relay, ctx: ssl.SSLContext) -> dict:
    provision_user(ctx, "bob@example.com", "bob-password-1")
    out = {}
    cases = {
        "license, existing": lambda src: license_login(ctx, "wrong", source=src, name="acme"),
        "license, unknown": lambda src: license_login(ctx, "wrong", source=src, name="no-such-license"),
        "account, existing": lambda src: request(ctx, "POST", "/account/v1/activate", json.dumps(
            {"Login": "bob@example.com", "Password": "wrong", "Msisdn": "+15550100", "TimeZone": "UTC"}).encode(),
            source=src)[0],
        "account, unknown": lambda src: request(ctx, "POST", "/account/v1/activate", json.dumps(
            {"Login": "nobody@example.com", "Password": "wrong", "Msisdn": "+15550100", "TimeZone": "UTC"}).encode(),
            source=src)[0],
    }
    for n, (case, fn) in enumerate(cases.items()):
        results = [timed(lambda: fn(f"127.0.5.{n + 1}")) for _ in range(10)]
        out[case] = {"statuses": [s for s, _ in results],
                     "median_ms_first_5": statistics.median(t for _, t in results[:5]) * 1000}
    return out


def probe_flood(ctx: ssl.SSLContext, sockets: int = 5000) -> dict:
    idle = []
    for i in range(sockets):
        source = f"127.0.0.{2 + i % 8}"
        try:
            idle.append(socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=5, source_address=(source, 0)))
        except OSError:
            break
    latencies = []
    for _ in range(10):
        started = time.monotonic()
        try:
            status, _ = request(ctx, "GET", "/rts/v1/connect", timeout=30)
        except OSError:
            status = 0
        latencies.append(time.monotonic() - started if status == 200 else float("inf"))
    for s in idle:
        s.close()
    return {"idle_sockets": len(idle), "median_seconds": statistics.median(latencies),
            "max_seconds": max(latencies)}


def probe_trickle(ctx: ssl.SSLContext) -> dict:
    raw = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=120)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"POST /rts/v1/license HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    started = time.monotonic()
    closed_after = None
    while time.monotonic() - started < 90:
        try:
            s.sendall(b"1\r\n \r\n")
            s.settimeout(0.3)
            try:
                if s.recv(65536) == b"":
                    closed_after = time.monotonic() - started
                    break
            except socket.timeout:
                pass
        except OSError:
            closed_after = time.monotonic() - started
            break
    s.close()
    return {"closed_after_seconds": closed_after}


def probe_oversize(ctx: ssl.SSLContext) -> dict:
    raw = socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"POST /rts/v1/data HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 20:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    s.close()
    return {"bytes_sent_before_close": sent, "seconds": time.monotonic() - started}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noc", default=os.path.join(ROOT, "target", "release", "noc"))
    ap.add_argument("--markdown")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="noc-probes-")
    relay = Relay(args.noc, work)
    try:
        relay.admin("license", "create", "--name", "acme", "--password", "acme-license-password",
                    "--max-users", "10")
        ctx = tls_context(relay.ca)
        results = {
            "memory": probe_memory(relay, ctx),
            "storm": probe_storm(relay, ctx),
            "guessing": probe_guessing(ctx),
            "enumeration": probe_enumeration(relay, ctx),
            "flood": probe_flood(ctx),
            "trickle": probe_trickle(ctx),
            "oversize": probe_oversize(ctx),
        }
    finally:
        relay.stop()
        shutil.rmtree(work, ignore_errors=True)
    m, st, fl, tr, ov = (results[k] for k in ("memory", "storm", "flood", "trickle", "oversize"))
    gu, en = results["guessing"], results["enumeration"]
    lines = [
        f"## Hostile probes (`bench/hostile_probes.py`), {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"One release node on its defaults, {os.cpu_count()} CPUs ({platform.machine()}), probes from the same machine.",
        "",
        "| probe | measured | target |",
        "|---|---|---|",
        f"| 300 failed logins, 4 at a time | RSS {m['before_kib'] // 1024} → {m['after_kib'] // 1024} MiB "
        f"(+{m['growth_kib'] // 1024} MiB; answers {m['statuses']}) | < +{m['bound_kib'] // 1024} MiB |",
        f"| 200 concurrent wrong passwords | a correct login answered {st['correct_status']} in "
        f"{st['correct_seconds']:.2f} s; wrong ones: {st['wrong_refused']} refused, {st['wrong_busy']} busy, "
        f"{st['wrong_throttled']} throttled; RSS {st['rss_kib'] // 1024} MiB | < 1 s |",
        f"| 200 wrong license passwords from one address | {gu['checked']} checked, {gu['throttled']} answered 429 "
        f"(the first at attempt {gu['first_throttled']}) | throttled |",
    ] + [
        f"| 10 wrong passwords, {case} | answers {r['statuses']}; median of the first 5 {r['median_ms_first_5']:.0f} ms "
        f"| alike for existing and unknown |" for case, r in en.items()
    ] + [
        f"| {fl['idle_sockets']} idle TCP sockets | GET /rts/v1/connect median {fl['median_seconds'] * 1000:.0f} ms, "
        f"max {fl['max_seconds'] * 1000:.0f} ms | median < 2 s |",
        f"| chunked body, 1 byte / 300 ms | closed after {tr['closed_after_seconds']:.1f} s"
        if tr["closed_after_seconds"] is not None else "| chunked body, 1 byte / 300 ms | not closed in 90 s",
    ]
    lines[-1] += " | deadline (30 s) + 5 s |"
    lines.append(f"| endless chunked body | {ov['bytes_sent_before_close'] / 1e6:.1f} MB taken in "
                 f"{ov['seconds']:.1f} s after the refusal, then closed | closed within the 1 s linger (what arrives meanwhile is discarded, so that the 413 is not lost to a reset) |")
    report = "\n".join(lines) + "\n"
    print(report)
    print(json.dumps(results, indent=1), file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
