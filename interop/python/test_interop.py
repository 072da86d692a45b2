#!/usr/bin/env python3
"""Interoperability tests: a real `noc` relay driven only through noc_client.py.

    python3 interop/python/test_interop.py -v

Environment:
    NOC_BIN               relay binary (default: <repo>/target/debug/noc; built with
                          `cargo build -p noc` when missing)
    NOC_INTEROP_KEEP=1    keep the relay's temporary data directory and log
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import noc_client as nc  # noqa: E402

NOC_BIN = os.environ.get("NOC_BIN", os.path.join(REPO, "target", "debug", "noc"))
KEEP = os.environ.get("NOC_INTEROP_KEEP") == "1"
HB_INTERVAL = 2  # rts.heartbeat_interval_seconds for the test relay


# ---------------------------------------------------------------------------
# Relay launcher
# ---------------------------------------------------------------------------


def ensure_binary() -> str:
    if not os.path.exists(NOC_BIN):
        if "NOC_BIN" in os.environ:
            raise RuntimeError(f"NOC_BIN={NOC_BIN} does not exist")
        subprocess.run(["cargo", "build", "-p", "noc"], cwd=REPO, check=True)
    return NOC_BIN


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Relay:
    """One `noc serve` process on loopback with a temporary data directory."""

    def __init__(self, env: dict):
        self.bin = ensure_binary()
        self.dir = tempfile.mkdtemp(prefix="noc-interop-")
        self.data_dir = os.path.join(self.dir, "data")
        self.http_port, self.device_port, self.admin_port = free_ports(3)
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "relay.log")
        self.cafile = os.path.join(self.data_dir, "tls", "cert.pem")
        self.base_url = f"https://localhost:{self.http_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"

    def start(self, ready_timeout: float = 60.0) -> "Relay":
        env = dict(os.environ)
        env.update(self.env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.bin,
                "serve",
                "--data-dir", self.data_dir,
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--device-listen", f"127.0.0.1:{self.device_port}",
                "--admin-listen", f"127.0.0.1:{self.admin_port}", "--console-listen", "127.0.0.1:0",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited with {self.proc.returncode}; log:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.admin_url + "/readyz", timeout=2) as r:
                    if r.status == 200 and os.path.exists(self.cafile):
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("relay not ready in time; log:\n" + self.read_log())
            time.sleep(0.1)
        return self

    def read_log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def admin(self, *args: str) -> str:
        out = subprocess.run(
            [self.bin, "admin", "--data-dir", self.data_dir, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"noc admin {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def create_license(self, name: str, password: str, max_users: int = 5) -> None:
        self.admin("license", "create", "--name", name, "--password", password, "--max-users", str(max_users))

    def stop(self) -> int | None:
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        elif self.proc is not None:
            rc = self.proc.returncode
        if getattr(self, "log", None):
            self.log.close()
        if KEEP:
            sys.stderr.write(f"\n[relay data and log kept in {self.dir}]\n")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc


# ---------------------------------------------------------------------------
# Byte-exact examples of §6.5 (no relay needed)
# ---------------------------------------------------------------------------


def hx(s: str) -> bytes:
    return bytes.fromhex(re.sub(r"\s+", "", s))


class WireLayoutTests(unittest.TestCase):
    DEV = "6f1c2a4e-8d1b-4c47-9b7e-1f0e2d3c4b5a"

    def roundtrip(self, data: bytes, max_length: int = 65536) -> nc.Frame:
        f, n = nc.decode_frame(data, max_length)
        self.assertEqual(n, len(data))
        self.assertEqual(nc.encode_frame(f), data)
        return f

    def test_examples(self):
        self.assertEqual(nc.encode_hello([1]), hx("00000008 01 4e4f4344 01 0001"))
        self.assertEqual(nc.encode_forward("Data", 7, b"hi"), hx("0000000c 10 04 0000000000000007 6869"))
        self.assertEqual(nc.encode_ack(7), hx("00000009 11 0000000000000007"))
        self.assertEqual(nc.encode_heartbeat(), hx("00000001 20"))
        self.assertEqual(nc.encode_hello_ack(1), hx("00000003 02 0001"))
        auth = nc.encode_auth_token(self.DEV, bytes(range(32)))
        self.assertEqual(len(auth), 54)
        self.assertEqual(
            auth,
            hx("00000032 03 6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a 20" + bytes(range(32)).hex()),
        )
        self.assertEqual(
            nc.encode_auth_password(self.DEV, "+15550100", "secret-pw"),
            hx("00000027 04 6f1c2a4e8d1b4c479b7e1f0e2d3c4b5a 0009 2b3135353530313030 0009 7365637265742d7077"),
        )
        self.assertEqual(nc.encode_auth_ok(60, 180, 65536), hx("0000000d 05 0000003c 000000b4 00010000"))
        self.assertEqual(
            nc.encode_close(10, 2500, "server_draining"),
            hx("00000018 06 000a 000009c4 000f 7365727665725f647261696e696e67"),
        )
        self.assertEqual(nc.encode_undeliverable(9, 1), hx("0000000b 12 0000000000000009 0001"))

    def test_decode_roundtrip(self):
        f = self.roundtrip(hx("00000018 06 000a 000009c4 000f 7365727665725f647261696e696e67"))
        self.assertEqual((f.code_name, f.reconnect_after_ms, f.message), ("server_draining", 2500, "server_draining"))
        f = self.roundtrip(hx("0000000b 12 0000000000000009 0001"))
        self.assertEqual((f.frame_id, f.reason_name), (9, "peer_offline"))
        f = self.roundtrip(nc.encode_auth_token(self.DEV, bytes(range(32))))
        self.assertEqual(str(f.device_id), self.DEV)
        f = self.roundtrip(nc.encode_forward("KeyExchange", 2**64 - 1, b""))
        self.assertEqual((f.kind_name, f.frame_id, f.payload), ("KeyExchange", 2**64 - 1, b""))

    def test_decode_errors(self):
        cases = {
            "zero length": (b"\x00\x00\x00\x00", 2),
            "unknown type": (hx("00000001 7f"), 2),
            "bad magic": (hx("00000008 01 4e4f4358 01 0001"), 2),
            "count 0": (hx("00000006 01 4e4f4344 00"), 2),
            "short body": (hx("00000002 11 00"), 2),
            "trailing": (hx("0000000a 11 0000000000000007 00"), 2),
            "unknown kind": (hx("0000000a 10 09 0000000000000007"), 2),
            "too large": (b"GET / HTTP/1.1", 3),
            "bad utf8": (hx("0000000b 06 0000 00000000 0002 fffe"), 2),
        }
        for name, (data, code) in cases.items():
            with self.subTest(name):
                with self.assertRaises(nc.FrameError) as cm:
                    nc.decode_frame(data, 1024)
                self.assertEqual(cm.exception.code, code)
        self.assertIsNone(nc.decode_frame(hx("00000009 11 0000"), 1024))  # incomplete
        # unknown close code / reason values are accepted (§1.3)
        self.assertEqual(nc.decode_frame(nc.encode_close(999, 0, ""), 1024)[0].code_name, "server_error")
        self.assertEqual(nc.decode_frame(nc.encode_undeliverable(1, 99), 1024)[0].reason_name, "peer_offline")


# ---------------------------------------------------------------------------
# Against a live relay
# ---------------------------------------------------------------------------


class RelayTestCase(unittest.TestCase):
    relay: Relay
    _counter = 0

    @classmethod
    def setUpClass(cls):
        env = {
            # §8 / README spelling of rts.heartbeat_interval_seconds.
            "NOC_RTS__HEARTBEAT_INTERVAL_SECONDS": str(HB_INTERVAL),
        }
        cls.relay = Relay(env).start()

    @classmethod
    def tearDownClass(cls):
        t0 = time.monotonic()
        rc = cls.relay.stop()
        if rc != 0:
            sys.stderr.write(f"\n[relay exited with status {rc} after SIGTERM]\n")
        if time.monotonic() - t0 > 30:
            sys.stderr.write(f"\n[relay took {time.monotonic() - t0:.0f} s to stop]\n")

    # -- helpers ------------------------------------------------------------
    @classmethod
    def unique(cls) -> int:
        RelayTestCase._counter += 1
        return RelayTestCase._counter

    def rts(self) -> nc.RtsClient:
        return nc.RtsClient(self.relay.base_url, self.relay.cafile)

    def new_license(self, max_users: int = 5) -> tuple[str, str]:
        n = self.unique()
        name, password = f"lic-{n}-{secrets.token_hex(3)}", f"license-pw-{n}"
        self.relay.create_license(name, password, max_users)
        return name, password

    def new_ves(self, max_users: int = 5):
        """License → connect → command channel; returns (client, channel, opening commands, guid)."""
        name, password = self.new_license(max_users)
        rts = self.rts()
        rts.license_login(name, password)
        rts.connect()
        guid = secrets.token_hex(16)
        ch = rts.open_command_channel(guid, agent="interop-python/1")
        self.addCleanup(ch.close)
        opening = [ch.next(10) for _ in range(5)]
        self.assertEqual([c["Command"] for c in opening], ["Session", "ActivateUsers", "HB", "FilterRules", "ConstantSync"])
        return rts, ch, opening, guid

    def new_user_with_device(self, rts: nc.RtsClient, ch: nc.CommandChannel | None = None):
        """Provision + account activation + device activation; returns (user, device, msisdn, password)."""
        n = self.unique()
        email, password, msisdn = f"user{n}.{secrets.token_hex(3)}@example.com", f"user-password-{n}", f"+1555{secrets.randbelow(10**7):07d}{n:03d}"
        user = rts.provision_user(email, "User", str(n), password)
        rts.activate_account(email, password, msisdn, "Europe/Paris")
        device = rts.activate_device(msisdn, password, "phone")
        if ch is not None:
            ch.wait_for("DeviceActivated", 10, lambda c: c["DeviceId"] == device["DeviceId"])
        return user, device, msisdn, password

    def device(self) -> nc.DeviceClient:
        d = nc.DeviceClient("localhost", self.relay.device_port, self.relay.cafile)
        self.addCleanup(d.disconnect)
        return d

    def assertHttpError(self, status: int, code: str, fn, *args, **kw) -> nc.NocHttpError:
        with self.assertRaises(nc.NocHttpError) as cm:
            fn(*args, **kw)
        e = cm.exception
        self.assertEqual((e.status, e.code), (status, code), f"{e} body={e.body!r}")
        return e

    def expect_close(self, dev: nc.DeviceClient, code: str, timeout: float = 5.0) -> nc.Frame:
        frames = dev.recv_until_closed(timeout)
        self.assertTrue(frames, "no frame before the connection ended")
        last = frames[-1]
        self.assertEqual(last.type, nc.CLOSE, [f.to_json() for f in frames])
        self.assertEqual(last.code_name, code, last.to_json())
        self.assertTrue(dev.eof, "the relay should close the connection after CLOSE")
        return last

    # -- (a) full flow ----------------------------------------------------------
    def test_a_full_flow(self):
        """License → session → HB → provision → activations → device ↔ VES frames and acks."""
        name, password = self.new_license()
        rts = self.rts()
        lic = rts.license_login(name, password)
        self.assertRegex(lic["LicenseId"], r"^[0-9a-f]{64}$")
        self.assertEqual((lic["MaxUsers"], lic["UsedUsers"], lic["ExpiresAt"]), (5, 0, None))
        # §4.1: the token expires accounts.license_token_ttl_seconds after issue (24 h default).
        ttl_ms = lic["LicenseIdExpiresAt"] - int(time.time() * 1000)
        self.assertTrue(86_400_000 - 60_000 < ttl_ms <= 86_400_000, ttl_ms)

        params = rts.connect()
        self.assertRegex(params["KeyId"], r"^[0-9a-f]{32}$")
        self.assertRegex(params["Key"], r"^[0-9a-f]{32}$")
        self.assertTrue(params["EventUrl"].startswith("https://"))
        self.assertTrue(params["EventUrl"].endswith("/rts/v1/event/" + params["KeyId"]))
        self.assertEqual(params["ProtocolVersion"], 1)
        self.assertIsInstance(params["ReplyTime"], int)

        guid = secrets.token_hex(16).upper()  # either case is allowed (§2)
        ch = rts.open_command_channel(guid, agent="interop-python/1")
        self.addCleanup(ch.close)
        self.assertEqual(ch.headers.get("content-type"), "application/x-ndjson")
        self.assertEqual(ch.headers.get("cache-control"), "no-store")

        # Opening sequence, in the documented order (§4.3.5).
        session, au, hb1, fr, cs = (ch.next(10) for _ in range(5))
        self.assertEqual(session["Command"], "Session")
        self.assertEqual(session["KeyId"], params["KeyId"])
        self.assertEqual(str(uuid.UUID(session["VesId"])), session["VesId"])
        self.assertEqual(session["HeartbeatIntervalSeconds"], HB_INTERVAL)
        self.assertEqual(session["ReplyTime"], params["ReplyTime"])
        self.assertIs(session["Resumed"], False)
        self.assertEqual(au, {"Command": "ActivateUsers", "Users": [], "Complete": True})
        self.assertEqual(hb1["Command"], "HB")
        self.assertEqual((hb1["Seq"], hb1["NextInSeconds"]), (1, HB_INTERVAL))
        self.assertAlmostEqual(hb1["Now"] / 1000, time.time(), delta=60)
        self.assertEqual(fr, {"Command": "FilterRules", "Users": []})
        self.assertEqual(cs, {"Command": "ConstantSync", "Users": []})

        # The next HB within NextInSeconds + tolerance (§4.3.6: another interval, at least 5 s).
        t0 = time.monotonic()
        hb2 = ch.wait_for("HB", hb1["NextInSeconds"] + max(5, hb1["NextInSeconds"]))
        self.assertGreater(hb2["Seq"], hb1["Seq"])
        self.assertLess(time.monotonic() - t0, hb1["NextInSeconds"] + 5)

        # Provision (§4.4.3): e-mail normalised, no Password echoed when we chose it.
        n = self.unique()
        email = f"Bob.{n}@Example.COM"
        msisdn = f"+1555{n:04d}{secrets.randbelow(1000):03d}"
        user = rts.provision_user(email, " Bob ", "Ng", "bob-password-1")
        self.assertEqual(user["Email"], email.lower())
        self.assertNotIn("Password", user)
        self.assertTrue(user["ActivationUrl"].startswith("https://") and user["ActivationUrl"].endswith("/activate"))
        self.assertEqual((user["UsedUsers"], user["MaxUsers"]), (1, 5))
        uid = user["UserId"]
        listed = rts.list_users()["Users"]
        self.assertEqual(len(listed), 1)
        self.assertEqual(
            listed[0],
            {"UserId": uid, "Email": email.lower(), "FirstName": "Bob", "LastName": "Ng", "Msisdn": None,
             "Status": "provisioned", "Devices": 0, "Ready": False},
        )

        # Account activation (§5.1) → ActivateUsers increment + FilterRules + ConstantSync, consecutively.
        acc = rts.activate_account(email, "bob-password-1", " " + msisdn + " ", "Europe/Paris")
        self.assertEqual(acc, {"UserId": uid, "Email": email.lower(), "Msisdn": msisdn, "TimeZone": "Europe/Paris"})
        au = ch.wait_for("ActivateUsers", 10)
        self.assertIs(au["Complete"], False)
        self.assertEqual(
            au["Users"],
            [{"UserId": uid, "Email": email.lower(), "FirstName": "Bob", "LastName": "Ng", "Msisdn": msisdn,
              "TimeZone": "Europe/Paris", "CalendarDaysAhead": 30}],
        )
        self.assertEqual(ch.next(5), {"Command": "FilterRules", "Users": [{"UserId": uid, "Rules": []}]})
        self.assertEqual(ch.next(5), {"Command": "ConstantSync", "Users": [{"UserId": uid, "Enabled": True}]})

        self.assertEqual(rts.startup_report([(uid, "ready")]), {"Ready": 1, "Unavailable": 0, "Unknown": []})
        listed = rts.list_users()["Users"][0]
        self.assertEqual((listed["Status"], listed["Ready"], listed["Msisdn"]), ("active", True, msisdn))

        # Device activation (§5.2) → DeviceActivated.
        dev_info = rts.activate_device(msisdn, "bob-password-1", "phone")
        dev_id = dev_info["DeviceId"]
        self.assertRegex(dev_info["DeviceCredential"], r"^[0-9a-f]{64}$")
        self.assertEqual(dev_info["DevicePort"], self.relay.device_port)
        self.assertEqual((dev_info["FullName"], dev_info["ServiceType"], dev_info["UserId"]), ("Bob Ng", "constant_sync", uid))
        act = ch.wait_for("DeviceActivated", 10)
        self.assertEqual(act, {"Command": "DeviceActivated", "DeviceId": dev_id, "UserId": uid, "Name": "phone", "DeviceType": None})
        self.assertEqual(rts.list_users()["Users"][0]["Devices"], 1)

        # Device login (§6.3) at the host and port device activation gave us.
        dev = nc.DeviceClient(dev_info["DeviceHost"], dev_info["DevicePort"], self.relay.cafile)
        self.addCleanup(dev.disconnect)
        dev.connect()
        ack = dev.hello()
        self.assertEqual((ack.name, ack.version), ("HELLO_ACK", 1))
        ok = dev.auth_token(dev_id, dev_info["DeviceCredential"])
        self.assertEqual(ok.name, "AUTH_OK", ok.to_json())
        self.assertEqual((ok.heartbeat_interval_seconds, ok.idle_timeout_seconds, ok.max_frame_bytes), (60, 180, 65536))
        pres = ch.wait_for("DevicePresence", 10)
        self.assertEqual(pres, {"Command": "DevicePresence", "DeviceId": dev_id, "UserId": uid, "Online": True})

        # Device → VES.
        dev.forward("Data", 1, b"hello relay \x00\xff")
        df = ch.wait_for("DeviceFrame", 10)
        self.assertEqual(
            df,
            {"Command": "DeviceFrame", "DeviceId": dev_id, "UserId": uid, "FrameId": 1, "Kind": "Data",
             "Payload": base64.b64encode(b"hello relay \x00\xff").decode()},
        )
        dev.forward("WakeUp", 2, b"")
        df = ch.wait_for("DeviceFrame", 10)
        self.assertEqual((df["FrameId"], df["Kind"], df["Payload"]), (2, "WakeUp", ""))

        # VES acks → device receives ACK.
        self.assertEqual(rts.acks([(dev_id, 1), (dev_id, 2)]), {"Forwarded": 2, "Undeliverable": []})
        got = [self.recv_non_heartbeat(dev) for _ in range(2)]
        self.assertEqual([(f.name, f.frame_id) for f in got], [("ACK", 1), ("ACK", 2)])

        # VES → device, device ACK → Ack command. Includes the largest u64 frame id.
        big = 2**64 - 1
        res = rts.frames([(dev_id, 42, "Data", b"hello device"), (dev_id, big, "KeyExchange", b"k" * 1000)])
        self.assertEqual(
            res,
            {"Results": [{"DeviceId": dev_id, "FrameId": 42, "Status": "accepted"},
                         {"DeviceId": dev_id, "FrameId": big, "Status": "accepted"}]},
        )
        f1, f2 = self.recv_non_heartbeat(dev), self.recv_non_heartbeat(dev)
        self.assertEqual((f1.name, f1.kind_name, f1.frame_id, f1.payload), ("FORWARD", "Data", 42, b"hello device"))
        self.assertEqual((f2.name, f2.kind_name, f2.frame_id, f2.payload), ("FORWARD", "KeyExchange", big, b"k" * 1000))
        dev.ack(42)
        dev.ack(big)
        self.assertEqual(ch.wait_for("Ack", 10), {"Command": "Ack", "DeviceId": dev_id, "FrameId": 42})
        self.assertEqual(ch.wait_for("Ack", 10), {"Command": "Ack", "DeviceId": dev_id, "FrameId": big})

        # Device logs off (§6.4.4) → DevicePresence offline.
        dev.close(0, "bye")
        pres = ch.wait_for("DevicePresence", 10)
        self.assertEqual(pres, {"Command": "DevicePresence", "DeviceId": dev_id, "UserId": uid, "Online": False})
        res = rts.frames([(dev_id, 43, "Data", b"late")])
        self.assertEqual(res["Results"][0]["Reason"], "peer_offline")

    def recv_non_heartbeat(self, dev: nc.DeviceClient, timeout: float = 10.0) -> nc.Frame:
        deadline = time.monotonic() + timeout
        while True:
            f = dev.recv(max(0.0, deadline - time.monotonic()))
            if f is None:
                self.fail("no frame from the relay in time")
            if f.type != nc.HEARTBEAT:
                return f

    def test_a2_cli_device(self):
        """The README step 5 CLI: --send, print frames as JSON lines, ACK, exit after --count."""
        rts, ch, _, _ = self.new_ves()
        user, dev_info, _, _ = self.new_user_with_device(rts, ch)
        dev_id = dev_info["DeviceId"]
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "noc_client.py"), "device", "--host", "localhost",
             "--port", str(self.relay.device_port), "--cafile", self.relay.cafile, "--device-id", dev_id,
             "--credential", dev_info["DeviceCredential"], "--send", "hello from the device",
             "--count", "1", "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            self.assertTrue(ch.wait_for("DevicePresence", 10)["Online"])
            df = ch.wait_for("DeviceFrame", 10)
            self.assertEqual((df["DeviceId"], df["FrameId"], df["Kind"]), (dev_id, 1, "Data"))
            self.assertEqual(base64.b64decode(df["Payload"]), b"hello from the device")
            res = rts.frames([(dev_id, 1, "Data", b"hello device")])
            self.assertEqual(res["Results"][0]["Status"], "accepted")
            self.assertEqual(ch.wait_for("Ack", 10), {"Command": "Ack", "DeviceId": dev_id, "FrameId": 1})
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, err)
        lines = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(lines[0], {"Frame": "HELLO_ACK", "Version": 1})
        self.assertEqual(lines[1]["Frame"], "AUTH_OK")
        fwd = [x for x in lines if x["Frame"] == "FORWARD"]
        self.assertEqual(
            fwd, [{"Frame": "FORWARD", "Kind": "Data", "FrameId": 1, "Payload": "hello device",
                   "PayloadHex": b"hello device".hex()}]
        )
        self.assertFalse(ch.wait_for("DevicePresence", 10)["Online"])

    def test_a3_auth_password_and_violations(self):
        """AUTH_PASSWORD (§6.2) login; a HELLO after AUTH_OK is a protocol_violation (§6.4.1)."""
        rts, ch, _, _ = self.new_ves()
        _, dev_info, msisdn, password = self.new_user_with_device(rts, ch)
        dev = self.device().connect()
        self.assertEqual(dev.hello().name, "HELLO_ACK")
        ok = dev.auth_password(dev_info["DeviceId"], msisdn, password)
        self.assertEqual(ok.name, "AUTH_OK", ok.to_json())
        self.assertTrue(ch.wait_for("DevicePresence", 10)["Online"])
        dev.heartbeat()  # allowed, not answered
        dev.send_hello()
        close = self.expect_close(dev, "protocol_violation")
        self.assertEqual(close.reconnect_after_ms, 0)
        self.assertIn("not allowed after authentication", close.message)

        dev2 = self.device().connect()
        dev2.hello()
        refused = dev2.auth_password(dev_info["DeviceId"], msisdn, "wrong-password")
        self.assertEqual((refused.name, refused.code_name), ("CLOSE", "auth_failed"))

        # A frame above max_frame_bytes after AUTH_OK → CLOSE frame_too_large (§6.4.1).
        dev3 = self.device()
        ok = dev3.login(dev_info["DeviceId"], dev_info["DeviceCredential"])
        dev3.send_raw(struct.pack(">IB", ok.max_frame_bytes + 1, nc.FORWARD))
        self.expect_close(dev3, "frame_too_large")

    def test_a4_resume_and_replacement(self):
        """Resume on the same EventUrl (§4.3.6); a new session for the GUID replaces it (§4.3.7)."""
        rts, ch, opening, guid = self.new_ves()
        ch.wait_for("HB", 10)
        last_seq = max(c["Seq"] for c in ch.history if c["Command"] == "HB")
        ch.close()
        ch2 = rts.open_command_channel(guid, license_id=None)
        self.addCleanup(ch2.close)
        s = ch2.next(10)
        self.assertEqual((s["Command"], s["Resumed"], s["KeyId"]), ("Session", True, rts.key_id))
        self.assertEqual(s["VesId"], opening[0]["VesId"])
        rest = [ch2.next(10) for _ in range(4)]
        self.assertEqual([c["Command"] for c in rest], ["ActivateUsers", "HB", "FilterRules", "ConstantSync"])
        self.assertGreater(rest[1]["Seq"], last_seq)  # Seq continues across resumes
        self.assertEqual(rts.list_users(), {"Users": []})  # data channel still works

        # A new session (fresh connect parameters) for the same GUID, without LicenseId.
        old_key_id, old_key = rts.key_id, rts.key
        rts2 = self.rts()
        rts2.connect()
        ch3 = rts2.open_command_channel(guid)
        self.addCleanup(ch3.close)
        s3 = ch3.next(10)
        self.assertEqual((s3["Resumed"], s3["VesId"]), (False, opening[0]["VesId"]))
        close = ch2.wait_for("Close", 10)
        self.assertEqual(
            close,
            {"Command": "Close", "Code": "replaced", "Message": "a newer RTS session for this VES took over", "ReconnectAfterMs": 0},
        )
        self.assertIsNone(ch2.next(10))  # the response ends right after Close
        self.assertHttpError(401, "invalid_session", rts.data, {"Type": "ListUsers"}, key_id=old_key_id, key=old_key)

    def test_a5_device_replaced(self):
        """A second connection of the same device id takes over (§6.4.4, §9 note 3)."""
        rts, ch, _, _ = self.new_ves()
        _, dev_info, _, _ = self.new_user_with_device(rts, ch)
        d1 = self.device()
        d1.login(dev_info["DeviceId"], dev_info["DeviceCredential"])
        self.assertTrue(ch.wait_for("DevicePresence", 10)["Online"])
        d2 = self.device()
        d2.login(dev_info["DeviceId"], dev_info["DeviceCredential"])
        close = self.expect_close(d1, "replaced")
        self.assertEqual(close.message, "a newer session for this device took over")
        self.assertTrue(ch.wait_for("DevicePresence", 10)["Online"])
        res = rts.frames([(dev_info["DeviceId"], 5, "Data", b"to the new one")])
        self.assertEqual(res["Results"][0]["Status"], "accepted")
        f = self.recv_non_heartbeat(d2)
        self.assertEqual((f.name, f.frame_id, f.payload), ("FORWARD", 5, b"to the new one"))

    def test_a6_delete_user_revokes_device(self):
        """DeleteUser closes the device with CLOSE revoked; DeviceRevoked then DeactivateUsers (§4.4.4)."""
        rts, ch, _, _ = self.new_ves()
        user, dev_info, _, _ = self.new_user_with_device(rts, ch)
        dev = self.device()
        dev.login(dev_info["DeviceId"], dev_info["DeviceCredential"])
        ch.wait_for("DevicePresence", 10)
        res = rts.delete_user(user["Email"])
        self.assertEqual(res, {"UserId": user["UserId"], "RevokedDevices": 1})
        self.expect_close(dev, "revoked")
        rev = ch.wait_for("DeviceRevoked", 10)
        self.assertEqual(rev, {"Command": "DeviceRevoked", "DeviceId": dev_info["DeviceId"], "UserId": user["UserId"]})
        deact = ch.wait_for("DeactivateUsers", 10)
        self.assertEqual(deact["UserIds"], [user["UserId"]])
        skipped_names = [c["Command"] for c in ch.skipped]
        self.assertNotIn("DeactivateUsers", skipped_names)
        again = self.device()
        again.connect()
        again.hello()
        refused = again.auth_token(dev_info["DeviceId"], dev_info["DeviceCredential"])
        self.assertEqual(refused.code_name, "auth_failed")  # deleted → unknown, not revoked
        res = rts.frames([(dev_info["DeviceId"], 1, "Data", b"x")])
        self.assertEqual(res["Results"][0]["Reason"], "unknown_peer")

    # -- (b) undeliverable --------------------------------------------------
    def test_b_offline_and_unknown_device(self):
        """Activated but not connected → peer_offline; unknown id → unknown_peer (§4.4.7, §7.2)."""
        rts, ch, _, _ = self.new_ves()
        _, dev_info, _, _ = self.new_user_with_device(rts, ch)
        dev_id, stranger = dev_info["DeviceId"], str(uuid.uuid4())
        res = rts.frames([(dev_id, 1, "Data", b"hi"), (stranger, 2, "WakeUp", b""), (dev_id, 3, "Data", b"")])
        self.assertEqual(
            res,
            {"Results": [
                {"DeviceId": dev_id, "FrameId": 1, "Status": "undeliverable", "Reason": "peer_offline"},
                {"DeviceId": stranger, "FrameId": 2, "Status": "undeliverable", "Reason": "unknown_peer"},
                {"DeviceId": dev_id, "FrameId": 3, "Status": "undeliverable", "Reason": "peer_offline"},
            ]},
        )
        res = rts.acks([(dev_id, 7), (stranger, 8)])
        self.assertEqual(res["Forwarded"], 0)
        self.assertEqual(
            res["Undeliverable"],
            [{"DeviceId": dev_id, "FrameId": 7, "Status": "undeliverable", "Reason": "peer_offline"},
             {"DeviceId": stranger, "FrameId": 8, "Status": "undeliverable", "Reason": "unknown_peer"}],
        )
        self.assertEqual(rts.frames([]), {"Results": []})

        # A device of another VES that is connected → not_owned (§7.2, §9 note 2).
        rts2, ch2, _, _ = self.new_ves()
        _, other, _, _ = self.new_user_with_device(rts2, ch2)
        od = self.device()
        od.login(other["DeviceId"], other["DeviceCredential"])
        ch2.wait_for("DevicePresence", 10)
        res = rts.frames([(other["DeviceId"], 1, "Data", b"not yours")])
        self.assertEqual(res["Results"][0]["Reason"], "not_owned")

        # Payload longer than max_frame_bytes - 10 → frame_too_large.
        res = rts.frames([(dev_id, 9, "Data", b"x" * (65536 - 9))])
        self.assertEqual(res["Results"][0]["Reason"], "frame_too_large")

    def test_b2_device_frame_when_ves_detached(self):
        """A device FORWARD while the VES command channel is detached → UNDELIVERABLE peer_offline (§6.4.1)."""
        rts, ch, _, guid = self.new_ves()
        _, dev_info, _, _ = self.new_user_with_device(rts, ch)
        dev = self.device()
        dev.login(dev_info["DeviceId"], dev_info["DeviceCredential"])
        ch.wait_for("DevicePresence", 10)
        ch.close()
        # The relay notices the dropped channel at its next write (an HB at the latest).
        # A frame queued before that and lost with the channel comes back
        # peer_disconnected (§6.4.1); once the channel is known detached, frames are
        # refused at once with peer_offline.
        deadline = time.monotonic() + 3 * HB_INTERVAL + 5
        fid, result = 100, None
        while time.monotonic() < deadline and result is None:
            fid += 1
            dev.forward("Data", fid, b"anyone there?")
            f = dev.recv(1.0)
            while f is not None and (
                f.type == nc.HEARTBEAT or (f.name == "UNDELIVERABLE" and f.reason_name == "peer_disconnected")
            ):
                f = dev.recv(1.0)
            if f is not None:
                result = f
        self.assertIsNotNone(result, "no UNDELIVERABLE after the command channel was dropped")
        self.assertEqual((result.name, result.reason_name), ("UNDELIVERABLE", "peer_offline"), result.to_json())
        self.assertEqual(result.frame_id, fid)

        # Resume: after the opening sequence, a DevicePresence Online for every connected
        # device of the VES's users (§4.3.4), so the VES learns what is online.
        ch2 = rts.open_command_channel(guid, license_id=None)
        self.addCleanup(ch2.close)
        opening = [ch2.next(10) for _ in range(5)]
        self.assertEqual([c["Command"] for c in opening], ["Session", "ActivateUsers", "HB", "FilterRules", "ConstantSync"])
        self.assertIs(opening[0]["Resumed"], True)
        self.assertEqual(len(opening[1]["Users"]), 1)
        pres = ch2.wait_for("DevicePresence", 10)
        self.assertEqual((pres["DeviceId"], pres["Online"]), (dev_info["DeviceId"], True))
        dev.forward("Data", fid + 1, b"back again")
        self.assertEqual(ch2.wait_for("DeviceFrame", 10)["FrameId"], fid + 1)

    # -- (c) device handshake refusals ------------------------------------------
    def test_c_handshake_refusals(self):
        """unsupported_version, auth_failed, and the documented codes for garbage (§6.1, §6.3)."""
        # Garbage whose length prefix is in range but whose body never comes: the relay
        # waits for the rest of the frame, then the handshake deadline (10 s) → CLOSE
        # handshake_timeout (§6.3). Started first, checked last.
        slow = self.device().connect()
        slow.send_raw(b"\x00\x00\x01\x00\xee\x01\x02")
        slow_started = time.monotonic()

        rts, ch, _, _ = self.new_ves()
        _, dev_info, _, _ = self.new_user_with_device(rts, ch)

        d = self.device().connect()
        close = d.hello([4, 7])
        self.assertEqual((close.name, close.code, close.code_name), ("CLOSE", 1, "unsupported_version"))
        self.assertEqual(close.message, "no common protocol version; this relay speaks [1, 2, 3]")
        self.assertEqual(close.reconnect_after_ms, 0)
        self.assertEqual(d.recv_until_closed(5), [])
        self.assertTrue(d.eof)

        d = self.device().connect()
        self.assertEqual(d.hello([4, 1, 2]).version, 2)  # highest common version

        for label, device_id in (("wrong credential", dev_info["DeviceId"]), ("unknown device", str(uuid.uuid4()))):
            with self.subTest(label):
                d = self.device().connect()
                self.assertEqual(d.hello().name, "HELLO_ACK")
                close = d.auth_token(device_id, secrets.token_bytes(32))
                self.assertEqual((close.name, close.code, close.code_name), ("CLOSE", 4, "auth_failed"))
                self.assertEqual(close.reconnect_after_ms, 0)

        garbage = {
            "HTTP request": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "frame_too_large"),
            "length above 1024": (struct.pack(">I", 1025) + b"\x01", "frame_too_large"),
            "random bytes, small length": (b"\x00\x00\x00\x05\xee" + secrets.token_bytes(4), "malformed_frame"),
            "zero length": (b"\x00\x00\x00\x00", "malformed_frame"),
            "HELLO without magic": (hx("00000008 01 58585858 01 0001"), "malformed_frame"),
            "HELLO with 0 versions": (hx("00000006 01 4e4f4344 00"), "malformed_frame"),
            "HEARTBEAT first": (nc.encode_heartbeat(), "protocol_violation"),
            "CLOSE first": (nc.encode_close(0, 0, "hi"), "protocol_violation"),
        }
        for label, (data, code) in garbage.items():
            with self.subTest(label):
                d = self.device().connect()
                d.send_raw(data)
                close = self.expect_close(d, code)
                self.assertEqual(close.reconnect_after_ms, 0)

        with self.subTest("credential longer than 64"):
            d = self.device().connect()
            d.hello()
            d.send_raw(nc._frame(nc.AUTH_TOKEN, uuid.uuid4().bytes + bytes([65]) + bytes(65)))
            self.expect_close(d, "malformed_frame")

        with self.subTest("partial frame until the handshake deadline"):
            close = self.expect_close(slow, "handshake_timeout", timeout=20)
            self.assertGreaterEqual(time.monotonic() - slow_started, 5)
            self.assertTrue(1000 <= close.reconnect_after_ms <= 5000, close.to_json())

    # -- (d) HTTP errors ---------------------------------------------------------
    def test_d_http_errors(self):
        """§3 error codes on the license, event URL and data channel endpoints."""
        name, password = self.new_license()
        rts = self.rts()
        self.assertHttpError(401, "invalid_credentials", rts.license_login, name, "wrong-password")
        self.assertHttpError(401, "invalid_credentials", rts.license_login, name + "-nope", password)
        rts.license_login(name, password)
        rts.connect()
        guid = secrets.token_hex(16)

        # Wrong Key → 401 invalid_session, and the parameters are not consumed (§4.2).
        self.assertHttpError(401, "invalid_session", rts.open_command_channel, guid, key="0" * 32)
        # Unknown field in the envelope → 400 (not consumed either, §4.3.2 step 2).
        res = nc.https_request(rts.ctx, "POST", rts.event_url,
                               {"RtsConnection": {"Guid": guid, "LicenseId": rts.license_id, "Extra": 1}},
                               {"X-Rts-Key": rts.key})
        self.assertEqual((res.status, res.json()["Error"]["Code"]), (400, "bad_request"))
        ch = rts.open_command_channel(guid)
        self.addCleanup(ch.close)
        self.assertEqual(ch.next(10)["Command"], "Session")
        # Unknown GUID without LicenseId → 401 invalid_credentials; malformed GUID likewise.
        rts_b = self.rts()
        rts_b.connect()
        self.assertHttpError(401, "invalid_credentials", rts_b.open_command_channel, secrets.token_hex(16), license_id=None)
        rts_b.connect()
        self.assertHttpError(401, "invalid_credentials", rts_b.open_command_channel, "xyz", license_id=rts.license_id)
        rts_b.connect()
        self.assertHttpError(401, "invalid_credentials", rts_b.open_command_channel, secrets.token_hex(16), license_id="0" * 64)

        # Data channel authentication.
        self.assertHttpError(401, "invalid_session", rts.data, {"Type": "ListUsers"}, key="0" * 32)
        self.assertHttpError(401, "invalid_session", rts.data, {"Type": "ListUsers"}, key_id="0" * 32)
        self.assertHttpError(401, "invalid_session", rts.data, {"Type": "ListUsers"}, key_id="", key="")
        # Strict requests.
        self.assertHttpError(400, "bad_request", rts.data, {"Type": "ListUsers", "Extra": True})
        self.assertHttpError(400, "bad_request", rts.data, {"Type": "NoSuchThing"})
        self.assertHttpError(400, "bad_request", rts.data, {"Type": "ProvisionUser", "Email": "not-an-address", "FirstName": "", "LastName": ""})
        self.assertHttpError(400, "bad_request", rts.data, {"Type": "ProvisionUser", "Email": "a@b.example", "FirstName": "", "LastName": "", "Password": "short"})
        e = self.assertHttpError(400, "bad_request", rts.data, {"Type": "Frames", "Frames": [
            {"DeviceId": str(uuid.uuid4()), "FrameId": 1, "Kind": "Data", "Payload": "aGk"}]})  # unpadded
        self.assertIn("Frames[0].Payload", e.error_message)
        self.assertHttpError(400, "bad_request", rts.data, {"Type": "Frames", "Frames": [
            {"DeviceId": str(uuid.uuid4()), "FrameId": 1, "Kind": "Telepathy", "Payload": ""}]})
        res = rts.data_raw(b"{not json")
        self.assertEqual((res.status, json.loads(res.body)["Error"]["Code"]), (400, "bad_request"))
        # Wrong method → 404, admin paths are not public (§1.4, §9 note 13).
        for method, path in (("GET", "/rts/v1/data"), ("GET", "/rts/v1/license"), ("POST", "/rts/v1/connect"),
                             ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/no/such/path")):
            with self.subTest(f"{method} {path}"):
                res = rts.request(method, path, b"{}" if method == "POST" else None)
                self.assertEqual(res.status, 404, res.body)
                self.assertEqual(json.loads(res.body)["Error"]["Code"], "not_found")

        # Seats: 5 users, the 6th → 409 seats_full; duplicate e-mail → 409 conflict.
        emails = [f"seat{i}.{secrets.token_hex(3)}@example.com" for i in range(5)]
        for i, email in enumerate(emails):
            gen = rts.provision_user(email, "Seat", str(i))  # no password: relay generates one
            self.assertRegex(gen["Password"], r"^[A-Za-z0-9]{12}$")
            self.assertEqual(gen["UsedUsers"], i + 1)
        e = self.assertHttpError(409, "seats_full", rts.provision_user, "sixth@example.com", "Six", "Th", "password-6")
        self.assertIsNone(e.retry_after)
        rts.delete_user(emails[0])
        self.assertHttpError(409, "conflict", rts.provision_user, emails[1].upper(), "Dup", "Licate", "password-7")
        self.assertHttpError(404, "not_found", rts.delete_user, "nobody@example.com")

        # Activation errors (§5).
        self.assertHttpError(401, "invalid_credentials", rts.activate_account, emails[1], "wrong-password", "+15550999", "UTC")
        self.assertHttpError(400, "bad_request", rts.activate_account, emails[1], "x", "12ab", "UTC")
        self.assertHttpError(400, "bad_request", rts.activate_account, emails[1], "x", "+15550999", "Not A Zone!")
        self.assertHttpError(401, "invalid_credentials", rts.activate_device, "+19999999999", "whatever-pw")

    # -- (e) the curl walk ----------------------------------------------------
    def test_e_curl_walk(self):
        """README step 3 / §4.5 with curl: license, connect, command channel, an HB within 12 s."""
        if shutil.which("curl") is None:
            self.skipTest("curl not installed")
        name, password = self.new_license()
        R, CA = self.relay.base_url, self.relay.cafile

        def curl(*args: str) -> str:
            out = subprocess.run(["curl", "-s", "--cacert", CA, *args], capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, 0, out.stderr)
            return out.stdout

        lic = json.loads(curl("-X", "POST", f"{R}/rts/v1/license", "-d", json.dumps({"Name": name, "Password": password})))
        token = lic["LicenseId"]
        params = json.loads(curl(f"{R}/rts/v1/connect"))
        guid = secrets.token_hex(16)
        body = json.dumps({"RtsConnection": {"Guid": guid, "LicenseId": token}})
        proc = subprocess.Popen(
            ["curl", "-sN", "--cacert", CA, "-X", "POST", "-H", f"X-Rts-Key: {params['Key']}", params["EventUrl"], "-d", body],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        lines: "queue.Queue[bytes]" = queue.Queue()
        threading.Thread(target=lambda: [lines.put(l) for l in iter(proc.stdout.readline, b"")], daemon=True).start()
        try:
            t0 = time.monotonic()
            cmds = []
            while time.monotonic() - t0 < 12:
                try:
                    cmds.append(json.loads(lines.get(timeout=max(0.0, 12 - (time.monotonic() - t0)))))
                except queue.Empty:
                    break
                if len([c for c in cmds if c["Command"] == "HB"]) >= 2:
                    break
            names = [c["Command"] for c in cmds]
            self.assertEqual(names[:5], ["Session", "ActivateUsers", "HB", "FilterRules", "ConstantSync"], cmds)
            self.assertIn("HB", names[5:], f"no periodic HB within 12 s: {cmds}")

            # §4.5 step 4: the data channel with curl, -H Content-Type as in the spec.
            D = lambda b: json.loads(curl("-X", "POST", f"{R}/rts/v1/data", "-H", f"X-Rts-Key-Id: {params['KeyId']}",
                                          "-H", f"X-Rts-Key: {params['Key']}", "-H", "Content-Type: application/json", "-d", b))
            self.assertEqual(D('{"Type":"ListUsers"}'), {"Users": []})
            err = json.loads(curl("-X", "POST", f"{R}/rts/v1/data", "-H", f"X-Rts-Key-Id: {params['KeyId']}",
                                  "-H", "X-Rts-Key: nope", "-d", '{"Type":"ListUsers"}'))
            self.assertEqual(err["Error"]["Code"], "invalid_session")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()


class DocumentedConfigTests(unittest.TestCase):
    """§8: `NOC_<SECTION>__<KEY>` environment variables, with a relay of their own."""

    def test_h_documented_env_var_spelling(self):
        """The documented spelling NOC_RTS__HEARTBEAT_INTERVAL_SECONDS=2 reaches Session/HB."""
        relay = Relay({"NOC_RTS__HEARTBEAT_INTERVAL_SECONDS": "2"}).start()
        try:
            relay.create_license("envtest", "envtest-password", 5)
            rts = nc.RtsClient(relay.base_url, relay.cafile)
            rts.license_login("envtest", "envtest-password")
            rts.connect()
            ch = rts.open_command_channel(secrets.token_hex(16))
            try:
                session = ch.next(10)
                self.assertEqual(session["HeartbeatIntervalSeconds"], 2, session)
            finally:
                ch.close()
        finally:
            relay.stop()


if __name__ == "__main__":
    unittest.main()
