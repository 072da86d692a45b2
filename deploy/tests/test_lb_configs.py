#!/usr/bin/env python3
"""The reference load-balancer configurations of deploy/, run in front of a real relay.

HAProxy's (deploy/haproxy/haproxy.cfg) is also what the cluster tests run; here both
files are checked by their own tools (`haproxy -c`, `nginx -t`), and nginx's is started
with its addresses replaced by a local relay's: an HTTPS request and a device-channel
HELLO go through it to the relay, TLS passed through untouched.

Needs haproxy, nginx with the stream module (Debian: nginx-light, libnginx-mod-stream;
scripts/test.sh installs them) and the debug `noc` binary.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAPROXY_CFG = os.path.join(ROOT, "deploy", "haproxy", "haproxy.cfg")
NGINX_CONF = os.path.join(ROOT, "deploy", "nginx", "nginx.conf")
NOC = os.environ.get("NOC_BIN", os.path.join(ROOT, "target", "debug", "noc"))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


class LoadBalancerConfigs(unittest.TestCase):
    def test_haproxy_accepts_its_reference_configuration(self):
        r = subprocess.run(["haproxy", "-c", "-f", HAPROXY_CFG], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_nginx_accepts_its_reference_configuration_and_passes_both_ports_through(self):
        r = subprocess.run(["nginx", "-t", "-c", NGINX_CONF], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            http, device, admin, lb_http, lb_device = free_ports(5)
            relay = subprocess.Popen(
                [NOC, "serve", "--data-dir", os.path.join(tmp, "data"), "--http-listen", f"127.0.0.1:{http}",
                 "--device-listen", f"127.0.0.1:{device}", "--admin-listen", f"127.0.0.1:{admin}", "--console-listen", "127.0.0.1:0"],
                env={k: v for k, v in os.environ.items() if not k.startswith("NOC_")},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            nginx = None
            try:
                wait_for("the relay", lambda: urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2).status == 200)
                conf = self.local_copy(tmp, lb_http, lb_device, http, device)
                nginx = subprocess.Popen(["nginx", "-c", conf, "-p", tmp, "-g", "daemon off;"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                cert = os.path.join(tmp, "data", "tls", "cert.pem")
                context = ssl.create_default_context(cafile=cert)
                # HTTPS through nginx: the relay's own certificate and answer.
                def https_login():
                    with socket.create_connection(("127.0.0.1", lb_http), timeout=5) as raw:
                        with context.wrap_socket(raw, server_hostname="localhost") as tls:
                            tls.sendall(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                            data = b""
                            while chunk := tls.recv(65536):
                                data += chunk
                            return data
                answer = wait_for("HTTPS through nginx", https_login)
                self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:200])
                self.assertIn(b"action=\"/login\"", answer)
                # The device channel through nginx: HELLO listing version 1, HELLO_ACK back.
                with socket.create_connection(("127.0.0.1", lb_device), timeout=5) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls:
                        tls.sendall(bytes.fromhex("00000008014e4f4344010001"))
                        self.assertEqual(tls.recv(7), bytes.fromhex("00000003020001"))
            finally:
                if nginx is not None:
                    nginx.terminate()
                    nginx.wait(timeout=30)
                relay.terminate()
                relay.wait(timeout=60)

    def local_copy(self, tmp: str, lb_http: int, lb_device: int, http: int, device: int) -> str:
        """The reference file with this test's addresses, pid file and a connection limit
        the machine allows; everything else as shipped."""
        with open(NGINX_CONF) as f:
            text = f.read()
        text = text.replace("listen 443;", f"listen 127.0.0.1:{lb_http};")
        text = text.replace("listen 8444;", f"listen 127.0.0.1:{lb_device};")
        text = text.replace("pid /run/noc-lb.pid;", f"pid {tmp}/nginx.pid;")
        text = text.replace("worker_connections 65535;", "worker_connections 1024;")
        text = re.sub(r"server 10\.0\.0\.1[012]:8443", lambda m: f"server 127.0.0.1:{http}", text)
        text = re.sub(r"server 10\.0\.0\.1[012]:8444", lambda m: f"server 127.0.0.1:{device}", text)
        self.assertNotIn("10.0.0.", text)
        path = os.path.join(tmp, "nginx.conf")
        with open(path, "w") as f:
            f.write(text)
        return path


if __name__ == "__main__":
    unittest.main(verbosity=2)
