#!/usr/bin/env python3
"""The web portal walked in a real browser: headless Chromium over WebDriver (Selenium).

A person's walk, against real processes on loopback: `noc serve` on its embedded store, the
real `ves-agent` with an SMTP server that captures its welcome mail, and Chromium.

  welcome mail -> its activation link -> mobile number, time zone, own password
  -> sign out -> Back does not show the account -> sign in -> an alert rule and
  ConstantSync off on the settings page -> the agent has them (its live command
  channel) -> a real noc-device connected, renamed and signed out on the devices page
  (its client stops: revoked) -> another device erased remotely (its client deletes its data and
  credentials) -> a second node on the same store serves the same session -> that node's
  short inactivity timeout ends it -> "Forgot your password?", the mailed link, a new
  password, signed in with it -> the pages in German once the user chooses it.

And the operators' console on the node's console listener: a NOC administrator made with
`noc admin operator create` signs in with an authenticator code, creates a license and
enrols a CSR (QR code, key and recovery codes shown once); the CSR signs in with a code
from that key and sees only their own licenses; the administrator reads the audit log.

Screenshots of the main pages are written to $NOC_SCREENSHOTS when it is set (the ones
under docs/screenshots/ were made so: `NOC_SCREENSHOTS=docs/screenshots`).

Needs the debug binaries (`cargo build -p noc -p noc-agent -p noc-device`), `chromium` and
`chromium-driver` (Debian), and the Python packages selenium and aiosmtpd; scripts/test.sh
installs them when missing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from aiosmtpd.controller import Controller
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
NOC = os.environ.get("NOC_BIN", os.path.join(TARGET, "debug", "noc"))
AGENT = os.environ.get("VES_AGENT_BIN", os.path.join(TARGET, "debug", "ves-agent"))
DEVICE = os.environ.get("NOC_DEVICE_BIN", os.path.join(TARGET, "debug", "noc-device"))
SHOTS = os.environ.get("NOC_SCREENSHOTS")
DEADLINE = 30.0


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


def eventually(what: str, check, timeout: float = DEADLINE, context=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{context()}")
        time.sleep(0.1)


def gone(element) -> bool:
    """Whether `element`'s page has been replaced (a form posted, the answer loaded): what
    to wait for before reading the next page, so that no element of the old one is read."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        # Caught between the old document and the new one, chromedriver reports the same
        # thing in other words ("Node with given id does not belong to the document").
        if "does not belong to the document" in str(e):
            return True
        raise


def totp(secret_base32: str, at: float | None = None) -> str:
    """The current RFC 6238 code of a base32 key (SHA-1, 6 digits, 30 s), as an app shows it."""
    key = base64.b32decode(secret_base32 + "=" * (-len(secret_base32) % 8))
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


class Sink:
    """An SMTP server keeping every message it receives."""

    def __init__(self):
        self.messages: list[tuple[list[str], str]] = []
        self.port = free_ports(1)[0]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode("utf-8", "replace")))
        return "250 OK"

    def stop(self):
        self.controller.stop()


class Node:
    """One `noc serve` process; several may share one data directory (one store)."""

    def __init__(self, data_dir: str, log_dir: str, name: str, env: dict[str, str]):
        self.data_dir = data_dir
        self.http, self.device, self.admin, self.console = free_ports(4)
        self.url = f"https://localhost:{self.http}"
        self.console_url = f"https://localhost:{self.console}"
        self.log_path = os.path.join(log_dir, f"{name}.log")
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["NOC_PUBLIC__URL"] = self.url
        full_env["NOC_NODE_ID"] = name
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                NOC, "serve",
                "--data-dir", data_dir,
                "--http-listen", f"127.0.0.1:{self.http}",
                "--device-listen", f"127.0.0.1:{self.device}",
                "--admin-listen", f"127.0.0.1:{self.admin}",
                "--console-listen", f"127.0.0.1:{self.console}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited; log:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        eventually(f"{name} ready", ready, 60)

    def read_log(self) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-4000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class PortalInABrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for path in (NOC, AGENT, DEVICE):
            if not os.access(path, os.X_OK):
                raise RuntimeError(f"{path} is missing: cargo build -p noc -p noc-agent -p noc-device")
        cls.dir = tempfile.mkdtemp(prefix="noc-browser-")
        cls.data = os.path.join(cls.dir, "data")
        cls.sink = Sink()
        mail = {"NOC_MAIL__SMTP_HOST": "127.0.0.1", "NOC_MAIL__SMTP_PORT": str(cls.sink.port),
                "NOC_MAIL__SMTP_SECURITY": "none", "NOC_MAIL__FROM": "NOC <noc@relay.example>",
                # The console's usage page shows what the walk relayed without a minute's wait.
                "NOC_ACCOUNTS__USAGE_FLUSH_INTERVAL_SECONDS": "1"}
        cls.a = Node(cls.data, cls.dir, "node-a", mail)
        # The same store, a short inactivity timeout: serves A's sessions, and ends them
        # after 2 s without a request.
        cls.b = Node(cls.data, cls.dir, "node-b", {"NOC_WEB__SESSION_IDLE_TIMEOUT_SECONDS": "2"})
        subprocess.run(
            [NOC, "admin", "--data-dir", cls.data, "license", "create", "--name", "acme",
             "--password", "acme-license-pw", "--max-users", "5"],
            check=True, capture_output=True,
        )
        cls.agent_config = os.path.join(cls.dir, "ves-agent.toml")
        with open(cls.agent_config, "w") as f:
            f.write(
                f"""[relay]
url = "{cls.a.url}"
ca_file = "{os.path.join(cls.data, 'tls', 'cert.pem')}"
heartbeat_tolerance_seconds = 2
reconnect_initial_ms = 100
reconnect_max_seconds = 1
[license]
name = "acme"
password = "acme-license-pw"
[mail]
maildir_root = "{os.path.join(cls.dir, 'maildir')}"
calendar_root = "{os.path.join(cls.dir, 'calendar')}"
contacts_root = "{os.path.join(cls.dir, 'contacts')}"
rescan_interval_seconds = 2
[smtp]
host = "127.0.0.1"
port = {cls.sink.port}
[welcome]
from = "VES Admin <ves-admin@corp.example>"
[state]
dir = "{os.path.join(cls.dir, 'agent')}"
"""
            )
        cls.agent_cli("register")
        cls.agent_log = open(os.path.join(cls.dir, "agent.log"), "wb")
        cls.agent = subprocess.Popen([AGENT, "--config", cls.agent_config, "run"],
                                     stdout=cls.agent_log, stderr=subprocess.STDOUT)
        eventually("the agent's command channel", lambda: cls.status().get("Connected"))

        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--ignore-certificate-errors",
                    "--window-size=1000,900", "--disable-gpu", "--lang=en-US"):
            options.add_argument(arg)
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        cls.browser = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                       options=options)
        cls.browser.set_page_load_timeout(30)

    @classmethod
    def tearDownClass(cls):
        for step in (lambda: cls.browser.quit(), lambda: cls.agent.terminate(), lambda: cls.agent.wait(20),
                     lambda: cls.agent_log.close(), lambda: cls.b.stop(), lambda: cls.a.stop(),
                     lambda: cls.sink.stop()):
            try:
                step()
            except Exception:  # noqa: BLE001 (tear down as much as possible)
                pass
        if os.environ.get("NOC_KEEP"):
            sys.stderr.write(f"\n[browser test files kept in {cls.dir}]\n")
        else:
            shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def agent_cli(cls, *args: str) -> str:
        out = subprocess.run([AGENT, "--config", cls.agent_config, *args], capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"ves-agent {' '.join(args)}: {out.stdout}{out.stderr}")
        return out.stdout

    @classmethod
    def status(cls) -> dict:
        try:
            return json.loads(cls.agent_cli("status"))
        except (RuntimeError, json.JSONDecodeError):
            return {}

    def shot(self, name: str):
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            self.browser.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def page(self) -> str:
        return self.browser.page_source

    def fill(self, field: str, value: str):
        e = self.browser.find_element(By.NAME, field)
        e.clear()
        e.send_keys(value)

    def submit(self, form_action: str):
        self.browser.find_element(By.CSS_SELECTOR, f'form[action="{form_action}"] button[type="submit"]').click()

    def browse_mail_calendar_and_contacts(self):
        b = self.browser
        maildir = os.path.join(self.dir, "maildir", "ann@corp.example")
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        message = ("From: Bob Ng <bob@partner.example>\r\nTo: ann@corp.example\r\n"
                   "Subject: <script>alert(1)</script> Quarterly plan\r\nDate: Fri, 04 Dec 2026 09:30:00 +0000\r\n"
                   "Message-ID: <plan@partner.example>\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/html; charset=utf-8\r\n\r\n"
                   "<p>Hi Ann,</p><p>the <b>plan</b> is attached.<script>alert(2)</script></p>"
                   "<img src=\"https://tracker.example/p.gif\">\r\n")
        with open(os.path.join(maildir, "tmp", "1796376600.M1P1.partner"), "w") as f:
            f.write(message)
        os.rename(os.path.join(maildir, "tmp", "1796376600.M1P1.partner"),
                  os.path.join(maildir, "new", "1796376600.M1P1.partner"))
        calendar = os.path.join(self.dir, "calendar", "ann@corp.example")
        os.makedirs(calendar, exist_ok=True)
        with open(os.path.join(calendar, "board.ics"), "w") as f:
            f.write("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:b1\r\nSUMMARY:Board meeting\r\nLOCATION:Room 4\r\n"
                    "DTSTART;TZID=Europe/Berlin:20261204T140000\r\nDTEND;TZID=Europe/Berlin:20261204T153000\r\n"
                    "END:VEVENT\r\nEND:VCALENDAR\r\n")
        contacts = os.path.join(self.dir, "contacts", "ann@corp.example")
        os.makedirs(contacts, exist_ok=True)
        with open(os.path.join(contacts, "bob.vcf"), "w") as f:
            f.write("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bob Ng\r\nEMAIL:bob@partner.example\r\n"
                    "TEL:+49 30 1234567\r\nORG:Partner GmbH\r\nEND:VCARD\r\n")

        b.find_element(By.LINK_TEXT, "Mail").click()
        eventually("the inbox", lambda: "Quarterly plan" in self.page(), context=self.page)
        self.assertEqual(b.find_elements(By.TAG_NAME, "script"), [], "the subject is text, not a script")
        self.shot("mail")
        b.find_element(By.PARTIAL_LINK_TEXT, "Quarterly plan").click()
        eventually("the message", lambda: b.find_elements(By.CSS_SELECTOR, ".mail-html"), context=self.page)
        html = b.find_element(By.CSS_SELECTOR, ".mail-html")
        self.assertEqual(html.find_elements(By.TAG_NAME, "b")[0].text, "plan")
        self.assertEqual(html.find_elements(By.TAG_NAME, "img"), [], "no image is loaded")
        self.assertEqual(b.find_elements(By.TAG_NAME, "script"), [])
        self.shot("mail-message")
        b.find_element(By.LINK_TEXT, "Reply").click()
        eventually("the reply form", lambda: any(
            "Re:" in (e.get_attribute("value") or "") for e in b.find_elements(By.NAME, "subject")))
        body = b.find_element(By.NAME, "body")
        body.send_keys(Keys.CONTROL, Keys.HOME)
        body.send_keys("Thanks, Bob.")
        self.shot("mail-compose")
        self.submit("/mail/compose")
        eventually("sent", lambda: "The message was sent." in self.page(), context=self.page)
        sent = eventually("the reply at the SMTP server",
                          lambda: next((m for m in self.sink.messages if "bob@partner.example" in m[0]), None))
        self.assertIn("In-Reply-To: <plan@partner.example>", sent[1])
        self.assertIn("Thanks, Bob.", sent[1])

        b.get(self.a.url + "/calendar?day=2026-12-04")
        eventually("the calendar", lambda: "Board meeting" in self.page(), context=self.page)
        self.assertIn("14:00", self.page(), "in Ann's zone (Europe/Berlin)")
        self.shot("calendar")
        b.get(self.a.url + "/contacts")
        eventually("the contacts", lambda: "Bob Ng" in self.page(), context=self.page)
        self.shot("contacts")

    def browse_from_a_pda(self):
        """The same mail, calendar and contacts on the PDA pages, on a PDA-sized screen:
        no scripts, images or styles; a reply sent from there reaches the SMTP server."""
        b = self.browser
        b.set_window_size(320, 480)
        try:
            b.get(self.a.url + "/pda")
            eventually("the PDA folders", lambda: b.current_url.endswith("/pda/mail"), context=self.page)
            b.find_element(By.LINK_TEXT, "Inbox").click()
            eventually("the PDA inbox", lambda: "Quarterly plan" in self.page(), context=self.page)
            for tag in ("script", "img", "style", "link"):
                self.assertEqual(b.find_elements(By.TAG_NAME, tag), [], f"no {tag} on a PDA page")
            self.shot("pda-mail")
            b.find_element(By.PARTIAL_LINK_TEXT, "Quarterly plan").click()
            eventually("the PDA message", lambda: "is attached" in self.page(), context=self.page)
            self.assertEqual(b.find_elements(By.TAG_NAME, "script"), [])
            self.assertEqual(b.find_elements(By.TAG_NAME, "img"), [], "no image is loaded")
            b.find_element(By.LINK_TEXT, "Reply").click()
            eventually("the PDA reply form", lambda: any(
                "Re:" in (e.get_attribute("value") or "") for e in b.find_elements(By.NAME, "subject")))
            self.assertTrue(b.find_element(By.CSS_SELECTOR, 'form[action="/pda/compose"] input[name="csrf"]')
                            .get_attribute("value"), "the form carries the session's CSRF value")
            self.fill("body", "Sent from the PDA.")
            b.find_element(By.CSS_SELECTOR, 'form[action="/pda/compose"] input[type="submit"]').click()
            eventually("sent from the PDA", lambda: "The message was sent." in self.page(), context=self.page)
            sent = eventually("the PDA reply at the SMTP server",
                              lambda: next((m for m in self.sink.messages if "Sent from the PDA." in m[1]), None))
            self.assertIn("In-Reply-To: <plan@partner.example>", sent[1])
            b.get(self.a.url + "/pda/calendar?day=2026-12-04")
            eventually("the PDA calendar", lambda: "Board meeting" in self.page(), context=self.page)
            self.assertIn("14:00", self.page(), "in Ann's zone (Europe/Berlin)")
            self.assertIn("Room 4", self.page())
            self.shot("pda-calendar")
            b.find_element(By.LINK_TEXT, "Contacts").click()
            eventually("the PDA contacts", lambda: "bob@partner.example" in self.page(), context=self.page)
            width = b.execute_script("return document.documentElement.scrollWidth")
            self.assertLessEqual(width, 320, "no horizontal scrolling on a PDA-sized screen")
        finally:
            b.set_window_size(1000, 900)

    def test_a_persons_walk(self):
        b = self.browser
        # The VES administrator adds a user; the welcome mail carries the link and password.
        self.agent_cli("user", "add", "--email", "ann@corp.example", "--first-name", "Ann", "--last-name", "Lee")
        _, mail = eventually("the welcome mail",
                             lambda: next((m for m in self.sink.messages if "ann@corp.example" in m[0]), None))
        link = re.search(r"(https://\S+/activate)\b", mail).group(1)
        password = re.search(r"Password:\s+(\S+)", mail).group(1)
        self.assertTrue(link.startswith(self.a.url), link)

        # Activation: mobile number, time zone, a password of one's own.
        b.get(link)
        self.assertIn("Activate your account", b.title)
        self.fill("login", "ann@corp.example")
        self.fill("password", password)
        self.fill("msisdn", "+4915100000001")
        Select(b.find_element(By.NAME, "time_zone")).select_by_value("Europe/Berlin")
        self.fill("new_password", "anns-own-password")
        self.fill("confirm", "anns-own-password")
        self.shot("activate")
        self.submit("/activate")
        eventually("the account page", lambda: "Your account is active" in self.page(), context=self.page)
        self.assertIn("+4915100000001", self.page())
        self.assertIn("Europe/Berlin", self.page())
        self.shot("account")

        # Sign out; Back must not show the account again (no-store).
        self.submit("/logout")
        eventually("the sign-in page", lambda: "You are signed out." in self.page())
        b.back()
        # Chrome may restore a frozen page from its back/forward cache; the sign-out page
        # makes sure it does not (web/src/views/signout.rs). Give a restore time to show.
        time.sleep(1)
        self.assertNotIn("ann@corp.example", self.page(), "Back after sign-out shows no account")
        self.assertIn("Sign in", self.page(), "Back after sign-out shows the sign-in page")

        # Sign in again with the new password.
        b.get(self.a.url + "/login")
        self.fill("login", "ann@corp.example")
        self.fill("password", "anns-own-password")
        self.shot("signin")
        self.submit("/login")
        eventually("signed in", lambda: "Where you are signed in" in self.page())

        # An alert rule and ConstantSync off reach the agent over its live channel.
        b.get(self.a.url + "/settings")
        rows = b.find_elements(By.NAME, "rule_text")
        Select(b.find_elements(By.NAME, "rule_field")[0]).select_by_value("subject")
        rows[0].send_keys("urgent")
        sync = b.find_element(By.NAME, "constant_sync")
        if sync.is_selected():
            sync.click()
        self.submit("/settings")
        eventually("saved", lambda: "Your settings are saved." in self.page())
        self.shot("settings")

        def agent_has_it():
            for u in self.status().get("Users", []):
                if u["Email"] == "ann@corp.example":
                    return not u["ConstantSync"] and u["FilterRules"] == [{"Field": "subject", "Contains": "urgent"}]
            return False

        eventually("the agent to have the rule and ConstantSync off", agent_has_it)

        # Browse access: mail, calendar and contacts answered live by the agent.
        self.browse_mail_calendar_and_contacts()
        self.browse_from_a_pda()

        # A device: activated with the real client and connected; the devices page shows
        # it, renames it, and signs it out, which ends its live session at once.
        fingerprint = self.agent_cli("fingerprint").strip().splitlines()[-1]
        device_dir = os.path.join(self.dir, "device")
        subprocess.run(
            [DEVICE, "--state-dir", device_dir, "activate", "--relay", self.a.url,
             "--ca-file", os.path.join(self.data, "tls", "cert.pem"), "--msisdn", "+4915100000001",
             "--password", "anns-own-password", "--ves-fingerprint", fingerprint, "--name", "phone"],
            check=True, capture_output=True, timeout=60,
        )
        device_log = open(os.path.join(self.dir, "device.log"), "wb")
        device = subprocess.Popen([DEVICE, "--state-dir", device_dir, "run"], stdout=device_log,
                                  stderr=subprocess.STDOUT)
        try:
            def connected():
                b.get(self.a.url + "/devices")
                return "connected (node-a)" in self.page()

            eventually("the device connected", connected)
            name = b.find_element(By.CSS_SELECTOR, 'form.row input[name="name"]')
            name.clear()
            name.send_keys("Ann's phone")
            b.find_element(By.CSS_SELECTOR, "form.row button").click()
            eventually("renamed", lambda: "The device is renamed." in self.page() and "Ann's phone" in self.page())
            self.shot("devices")
            b.find_element(By.CSS_SELECTOR, 'form[action$="/revoke"] button').click()
            eventually("signed out", lambda: "The device is signed out." in self.page())
            rc = device.wait(timeout=DEADLINE)
            self.assertNotEqual(rc, 0, "the device stops: its credential is revoked")
        finally:
            if device.poll() is None:
                device.kill()
                device.wait()
            device_log.close()
        with open(os.path.join(self.dir, "device.log"), "rb") as f:
            self.assertIn(b"revoked", f.read())

        # A lost phone: activated and connected, then erased from the devices page after
        # the confirmation; the client deletes its data and credentials and stops.
        lost_dir = os.path.join(self.dir, "lost-device")
        subprocess.run(
            [DEVICE, "--state-dir", lost_dir, "activate", "--relay", self.a.url,
             "--ca-file", os.path.join(self.data, "tls", "cert.pem"), "--msisdn", "+4915100000001",
             "--password", "anns-own-password", "--ves-fingerprint", fingerprint, "--name", "lost phone"],
            check=True, capture_output=True, timeout=60,
        )
        lost_log = open(os.path.join(self.dir, "lost-device.log"), "wb")
        lost = subprocess.Popen([DEVICE, "--state-dir", lost_dir, "run"], stdout=lost_log, stderr=subprocess.STDOUT)
        try:
            eventually("the lost phone connected", connected)
            b.find_element(By.LINK_TEXT, "Erase this device…").click()
            eventually("the confirmation", lambda: "Erase lost phone?" in self.page())
            self.shot("wipe")
            b.find_element(By.NAME, "confirm").click()
            self.submit(b.current_url.split(self.a.url, 1)[1])
            rc = lost.wait(timeout=DEADLINE)
            self.assertNotEqual(rc, 0, "the erased device stops")
        finally:
            if lost.poll() is None:
                lost.kill()
                lost.wait()
            lost_log.close()
        with open(os.path.join(self.dir, "lost-device.log"), "rb") as f:
            self.assertIn(b"erased remotely", f.read())
        self.assertEqual(sorted(os.listdir(lost_dir)), [], "its data and credentials are gone")
        b.get(self.a.url + "/devices")
        eventually("the receipt", lambda: "confirmed it erased its data and credentials" in self.page())

        # The second node serves the same session (the store holds it, not node A) ...
        b.get(self.b.url + "/")
        self.assertIn("ann@corp.example", self.page(), "node B serves node A's session")
        # ... and ends it after its 2 s inactivity timeout.
        time.sleep(3)
        b.get(self.b.url + "/")
        self.assertIn("Your session timed out", self.page())
        self.shot("timed-out")
        b.get(self.a.url + "/")
        self.assertNotIn("ann@corp.example", self.page(), "ended for every node")

        # Forgot the password: a link by mail, a new password, signed in with it.
        b.get(self.a.url + "/login")
        b.find_element(By.LINK_TEXT, "Forgot your password?").click()
        eventually("the recovery page", lambda: "Reset your password" in self.page())
        self.fill("login", "+4915100000001")
        self.shot("recover")
        self.submit("/recover")
        eventually("the answer", lambda: "Check your mail" in self.page())
        _, mail = eventually("the recovery mail", lambda: next(
            (m for m in self.sink.messages if "ann@corp.example" in m[0] and "/recover/" in m[1]), None))
        b.get(re.search(r"(https://\S+/recover/[0-9a-f]+)", mail).group(1))
        self.fill("new_password", "anns-recovered-password")
        self.fill("confirm", "anns-recovered-password")
        self.submit(b.current_url.split(self.a.url, 1)[1])
        eventually("back at sign-in", lambda: "Your password is changed." in self.page())
        self.fill("login", "ann@corp.example")
        self.fill("password", "anns-recovered-password")
        self.submit("/login")
        eventually("signed in with the new password", lambda: "Where you are signed in" in self.page())

        # Every page text comes from the message catalogue: the pages in German once the
        # user chooses it (the browser itself prefers English here).
        b.get(self.a.url + "/settings")
        Select(b.find_element(By.NAME, "locale")).select_by_visible_text("Deutsch")
        self.submit("/settings")
        eventually("the settings in German", lambda: "Ihre Einstellungen sind gespeichert." in self.page())
        self.assertEqual(b.find_element(By.TAG_NAME, "html").get_attribute("lang"), "de")
        self.shot("settings-de")

    def fill_id(self, element_id: str, value: str):
        e = self.browser.find_element(By.ID, element_id)
        e.clear()
        e.send_keys(value)

    def console_sign_in(self, name: str, password: str, code: str):
        b = self.browser
        b.get(self.a.console_url + "/console/login")
        self.fill("name", name)
        self.fill("password", password)
        self.fill("code", code)
        self.submit("/console/login")
        # The click only starts the submission: wait for its answer (signed in, or the
        # refusal) before the next navigation, which would otherwise race it.
        eventually("the sign-in's answer",
                   lambda: "Sign out" in self.page() or 'role="alert"' in self.page(), context=self.page)

    def console_sign_out(self):
        self.browser.find_element(By.CSS_SELECTOR, 'form[action="/console/logout"] button').click()
        eventually("the sign-in page", lambda: "Operator sign-in" in self.page())

    def test_operators_console(self):
        b = self.browser
        made = subprocess.run(
            [NOC, "admin", "--data-dir", self.data, "operator", "create", "--name", "root", "--role", "noc-admin",
             "--password-stdin"],
            input="root-operator-password\n", check=True, capture_output=True, text=True,
        ).stdout
        secret = re.search(r"TOTP secret \(.*\): (\S+)", made).group(1)
        recovery = re.findall(r"^  (\S+-\S+)$", made, re.M)
        self.assertEqual(len(recovery), 10, made)

        # A wrong code is refused; the authenticator's code signs in.
        self.console_sign_in("root", "root-operator-password", "000000")
        eventually("the refusal", lambda: "Wrong name, password or code." in self.page())
        self.shot("console-signin")
        self.console_sign_in("root", "root-operator-password", totp(secret))
        eventually("the licenses page", lambda: "New license" in self.page() and "acme" in self.page(),
                   context=self.page)
        self.fill_id("lname", "globex")
        self.fill_id("lpassword", "globex-license-pw")
        self.fill_id("lseats", "40")
        self.submit("/console/licenses")
        eventually("the new license", lambda: "0 / 40" in self.page())
        self.shot("console-licenses")

        # The license of the walk: its enterprise server (the real agent), where it is
        # connected and what it runs; its user and their devices; what they used.
        b.find_element(By.LINK_TEXT, "acme").click()
        eventually("the license page", lambda: "Enterprise servers (VES)" in self.page())
        self.assertIn("ves-agent/", self.page())
        self.assertIn("node-a", self.page())
        self.shot("console-license")
        b.get(self.a.console_url + "/console/users?q=ann%40corp.example")
        b.find_element(By.LINK_TEXT, "ann@corp.example").click()
        eventually("the user page", lambda: "Profile" in self.page() and "Devices" in self.page())
        self.assertNotIn("argon2", self.page())
        # A CSR's grant (white paper 3.7.2): WAP browsing taken away from this user.
        wap = b.find_element(By.CSS_SELECTOR, 'form[action$="/access"] input[name="browse_wap"]')
        self.assertTrue(wap.is_selected())
        wap.click()
        b.find_element(By.CSS_SELECTOR, 'form[action$="/access"] button[type="submit"]').click()
        eventually("the page after saving the access", lambda: gone(wap))
        self.assertFalse(b.find_element(By.CSS_SELECTOR, 'form[action$="/access"] input[name="browse_wap"]')
                         .is_selected(), "saved")
        self.assertTrue(b.find_element(By.CSS_SELECTOR, 'form[action$="/access"] input[name="constant_sync"]').is_selected())
        self.shot("console-user")
        b.get(self.a.console_url + "/console/usage")
        eventually("the usage chart", lambda: "Frames relayed per day" in self.page())
        self.assertTrue(b.find_elements(By.CSS_SELECTOR, ".chart svg rect.to-ves"))
        self.shot("console-usage")
        b.get(self.a.console_url + "/console/nodes")
        eventually("the node list", lambda: "node-a" in self.page(), context=self.page)

        # The administrator enrols a CSR: the QR code is drawn by the server (no script).
        b.get(self.a.console_url + "/console/operators")
        self.fill("name", "carol")
        Select(b.find_element(By.NAME, "role")).select_by_value("csr")
        self.fill("password", "carol-operator-password")
        self.submit("/console/operators")
        eventually("the enrolment", lambda: "Enrolment of carol" in self.page())
        qr = b.find_element(By.CSS_SELECTOR, ".qr svg")
        self.assertGreater(qr.size["width"], 100, "the QR code is drawn")
        carol_secret = b.find_element(By.ID, "totp-secret").text
        self.assertEqual(len(b.find_elements(By.CSS_SELECTOR, "#recovery-codes li")), 10)
        self.shot("console-enrolment")
        self.console_sign_out()

        # The CSR signs in with a code from that key, and sees none of globex.
        self.console_sign_in("carol", "carol-operator-password", totp(carol_secret))
        eventually("carol's licenses", lambda: "No license yet." in self.page(), context=self.page)
        self.assertNotIn("globex", self.page())
        self.fill_id("lname", "initech")
        self.fill_id("lpassword", "initech-license-pw")
        self.fill_id("lseats", "10")
        self.submit("/console/licenses")
        eventually("carol's license", lambda: "initech" in self.page())
        b.get(self.a.console_url + "/console/operators")
        self.assertIn("Your role does not allow this.", self.page())
        b.get(self.a.console_url + "/console/users?q=ann")
        self.shot("console-users")
        b.get(self.a.console_url + "/console/licenses")
        self.console_sign_out()

        # The administrator again (a TOTP code works once: a recovery code now) reads the
        # audit log: carol's license, in her role, from her address.
        self.console_sign_in("root", "root-operator-password", recovery[0])
        b.get(self.a.console_url + "/console/audit?action=license.")
        eventually("the audit log", lambda: "operator:carol" in self.page(), context=self.page)
        self.assertIn("csr", self.page())
        self.assertNotIn("initech-license-pw", self.page())
        self.shot("console-audit")
        self.console_sign_out()

    def test_the_sign_in_page_fits_a_phone(self):
        b = self.browser
        b.set_window_size(390, 844)
        try:
            # The account page (in German after the walk: long words in the header), then
            # the sign-in page.
            for path in ("/", "/devices", "/settings"):
                b.get(self.a.url + path)
                width = b.execute_script("return document.documentElement.scrollWidth")
                self.assertLessEqual(width, 390, f"{path}: no horizontal scrolling on a phone-sized screen")
            b.delete_all_cookies()
            b.get(self.a.url + "/login")
            width = b.execute_script("return document.documentElement.scrollWidth")
            self.assertLessEqual(width, 390, "no horizontal scrolling on a phone-sized screen")
            self.shot("signin-phone")
        finally:
            b.set_window_size(1000, 900)


if __name__ == "__main__":
    unittest.main(verbosity=2)
