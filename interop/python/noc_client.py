#!/usr/bin/env python3
"""An independent client for the NOC push relay, written from docs/protocol.md alone.

Standard library only (Python 3.11+). Two halves:

* ``RtsClient`` -- the enterprise-server (VES) side of the RTS protocol (§4) plus the
  account and device activation endpoints (§5): JSON over HTTPS, a streamed NDJSON
  command channel read by a background thread into a ``queue.Queue``.
* ``DeviceClient`` -- the device channel (§6): length-prefixed binary frames over TLS.

Run ``python3 noc_client.py device --help`` for the command-line device.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import queue
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

# ---------------------------------------------------------------------------
# Constants from the specification
# ---------------------------------------------------------------------------

#: Device-channel versions this client speaks (§1.2).
DEVICE_PROTOCOL_VERSIONS = (1,)
#: RTS version this client understands (§1.2).
RTS_PROTOCOL_VERSION = 1
#: HELLO magic (§6.2).
HELLO_MAGIC = b"NOCD"
#: Maximum ``length`` before AUTH_OK (§6.1, §8).
PRE_AUTH_MAX_LENGTH = 1024
#: Type byte + kind + frame id (§6.2 FORWARD).
FORWARD_OVERHEAD = 10

# Frame type bytes (§6.2).
HELLO = 0x01
HELLO_ACK = 0x02
AUTH_TOKEN = 0x03
AUTH_PASSWORD = 0x04
AUTH_OK = 0x05
CLOSE = 0x06
FORWARD = 0x10
ACK = 0x11
UNDELIVERABLE = 0x12
HEARTBEAT = 0x20

FRAME_NAMES = {
    HELLO: "HELLO",
    HELLO_ACK: "HELLO_ACK",
    AUTH_TOKEN: "AUTH_TOKEN",
    AUTH_PASSWORD: "AUTH_PASSWORD",
    AUTH_OK: "AUTH_OK",
    CLOSE: "CLOSE",
    FORWARD: "FORWARD",
    ACK: "ACK",
    UNDELIVERABLE: "UNDELIVERABLE",
    HEARTBEAT: "HEARTBEAT",
}

# FORWARD kinds (§6.2); the names are the JSON `Kind` values (§2).
KINDS = {1: "WakeUp", 2: "WakeUpAck", 3: "KeyExchange", 4: "Data"}
KIND_NUMBERS = {name: num for num, name in KINDS.items()}

# Close codes (§6.6).
CLOSE_CODES = {
    0: "normal",
    1: "unsupported_version",
    2: "malformed_frame",
    3: "frame_too_large",
    4: "auth_failed",
    5: "handshake_timeout",
    6: "replaced",
    7: "revoked",
    8: "idle_timeout",
    9: "slow_consumer",
    10: "server_draining",
    11: "protocol_violation",
    12: "server_error",
    13: "locked_out",
    14: "service_unavailable",
    15: "too_many_sessions",
    16: "account_suspended",
}
CLOSE_CODE_NUMBERS = {name: num for num, name in CLOSE_CODES.items()}

# Undeliverable reasons (§7.2).
UNDELIVERABLE_REASONS = {
    1: "peer_offline",
    2: "unknown_peer",
    3: "not_owned",
    4: "queue_full",
    5: "peer_disconnected",
    6: "frame_too_large",
    7: "peer_draining",
}
UNDELIVERABLE_REASON_NUMBERS = {name: num for num, name in UNDELIVERABLE_REASONS.items()}


def close_code_name(code: int) -> str:
    """Name of a close code; unknown codes are treated like ``server_error`` (§1.3, §6.6)."""
    return CLOSE_CODES.get(code, "server_error")


def reason_name(reason: int) -> str:
    """Name of an undeliverable reason; unknown ones are treated like ``peer_offline`` (§7.2)."""
    return UNDELIVERABLE_REASONS.get(reason, "peer_offline")


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------


def tls_context(cafile: Optional[str]) -> ssl.SSLContext:
    """A client context that verifies the relay certificate against ``cafile``.

    TLS 1.2 or 1.3 (§1.1). When ``cafile`` is None the system trust store is used.
    """
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (§2)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def uuid_bytes(value: Union[str, uuid.UUID, bytes]) -> bytes:
    """The 16 raw bytes of a UUID in RFC 4122 order (§2)."""
    if isinstance(value, bytes):
        if len(value) != 16:
            raise ValueError("a raw UUID is 16 bytes")
        return value
    if isinstance(value, uuid.UUID):
        return value.bytes
    return uuid.UUID(value).bytes


# ---------------------------------------------------------------------------
# HTTP errors (§3)
# ---------------------------------------------------------------------------


class NocHttpError(Exception):
    """A non-200 answer of the public listener.

    ``status`` is the HTTP status; ``code`` and ``error_message`` come from the
    ``{"Error":{"Code":..,"Message":..}}`` body when it parses (else ``None``);
    ``retry_after`` is the ``Retry-After`` header as an int, if any.
    """

    def __init__(self, status: int, reason: str, headers: dict, body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.code: Optional[str] = None
        self.error_message: Optional[str] = None
        try:
            err = json.loads(body.decode("utf-8"))["Error"]
            self.code = err.get("Code")
            self.error_message = err.get("Message")
        except Exception:  # noqa: BLE001 - §3: fall back on the HTTP status
            pass
        ra = headers.get("retry-after")
        self.retry_after: Optional[int] = int(ra) if ra is not None and ra.strip().isdigit() else None
        super().__init__(f"HTTP {status} {self.code or reason}: {self.error_message or body[:200]!r}")


@dataclass
class HttpResult:
    status: int
    headers: dict  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def _split_url(url: str) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    if u.scheme != "https":
        raise ValueError(f"only https URLs are supported: {url}")
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    return u.hostname or "", u.port or 443, path


def https_request(
    ctx: ssl.SSLContext,
    method: str,
    url: str,
    body: Optional[Union[bytes, dict]] = None,
    headers: Optional[dict] = None,
    timeout: float = 15.0,
) -> HttpResult:
    """One HTTPS request on its own connection; returns whatever the status."""
    host, port, path = _split_url(url)
    hdrs = {"Accept": "application/json"}
    if body is not None:
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return HttpResult(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def _checked(res: HttpResult) -> Any:
    if res.status != 200:
        raise NocHttpError(res.status, http.client.responses.get(res.status, ""), res.headers, res.body)
    return res.json()


# ---------------------------------------------------------------------------
# RTS command channel (§4.3)
# ---------------------------------------------------------------------------


class CommandChannel:
    """The streamed NDJSON response of ``POST {EventUrl}``.

    A background thread reads the body as a byte stream (HTTP/1.1 chunked decoding is
    done here, chunk boundaries carry no meaning), splits it on ``\\n`` and puts every
    command (a dict) on ``self.queue``. When the stream ends, ``None`` is put on the
    queue and ``self.closed`` is set. ``self.history`` keeps every command in order.
    """

    MAX_LINE = 16 * 1024 * 1024

    def __init__(self, sock: ssl.SSLSocket, headers: dict, initial: bytes):
        self.sock = sock
        self.headers = headers
        self.queue: "queue.Queue[Optional[dict]]" = queue.Queue()
        self.history: list[dict] = []
        self.skipped: list[dict] = []
        self.closed = threading.Event()
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._buf = bytearray(initial)
        self._thread = threading.Thread(target=self._run, name="noc-command-channel", daemon=True)
        self._thread.start()

    # -- byte source -------------------------------------------------------
    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream or on stop."""
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except ssl.SSLWantReadError:
                continue
            except (OSError, ValueError):
                return False
            if not data:
                return False
            self._buf.extend(data)
            return True
        return False

    def _read_crlf_line(self) -> Optional[bytes]:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 2]
                return line
            if len(self._buf) > 64 * 1024:
                raise ValueError("chunk header too long")
            if not self._fill():
                return None

    def _read_exact(self, n: int) -> Optional[bytes]:
        while len(self._buf) < n:
            if not self._fill():
                return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _body_pieces(self) -> Iterable[bytes]:
        te = self.headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                size_line = self._read_crlf_line()
                if size_line is None:
                    return
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers until an empty line
                    while True:
                        t = self._read_crlf_line()
                        if not t:
                            return
                data = self._read_exact(size)
                if data is None:
                    return
                yield data
                if self._read_exact(2) is None:  # CRLF after the chunk
                    return
        else:
            length = self.headers.get("content-length")
            remaining = int(length) if length is not None else None
            if self._buf:
                piece = bytes(self._buf if remaining is None else self._buf[:remaining])
                self._buf.clear()
                if remaining is not None:
                    remaining -= len(piece)
                yield piece
            while remaining is None or remaining > 0:
                if not self._fill():
                    return
                piece = bytes(self._buf if remaining is None else self._buf[:remaining])
                self._buf.clear()
                if remaining is not None:
                    remaining -= len(piece)
                yield piece

    def _run(self) -> None:
        line = bytearray()
        try:
            for piece in self._body_pieces():
                line.extend(piece)
                while True:
                    i = line.find(b"\n")
                    if i < 0:
                        break
                    raw = bytes(line[:i])
                    del line[: i + 1]
                    if not raw.strip():
                        continue
                    cmd = json.loads(raw.decode("utf-8"))
                    self.history.append(cmd)
                    self.queue.put(cmd)
                if len(line) > self.MAX_LINE:
                    raise ValueError("command line too long")
        except BaseException as exc:  # noqa: BLE001 - reported through .error
            if not self._stop.is_set():
                self.error = exc
        finally:
            self.closed.set()
            self.queue.put(None)
            try:
                self.sock.close()
            except OSError:
                pass

    # -- consumer API -------------------------------------------------------
    def next(self, timeout: float) -> Optional[dict]:
        """The next command, ``None`` when the channel ended; ``queue.Empty`` on timeout."""
        return self.queue.get(timeout=timeout)

    def wait_for(
        self,
        command: str,
        timeout: float,
        match: Optional[Callable[[dict], bool]] = None,
    ) -> dict:
        """Skip commands until one named ``command`` (and satisfying ``match``) arrives.

        Skipped commands are appended to ``self.skipped``. Raises ``TimeoutError`` or
        ``EOFError`` (channel ended).
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {command} command within {timeout} s")
            try:
                cmd = self.queue.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(f"no {command} command within {timeout} s") from None
            if cmd is None:
                self.queue.put(None)
                raise EOFError(f"command channel ended while waiting for {command}")
            if cmd.get("Command") == command and (match is None or match(cmd)):
                return cmd
            self.skipped.append(cmd)

    def close(self) -> None:
        """Drop the channel (the relay will detach the session, §4.3.6)."""
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self._thread.join(timeout=5)


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; returns (body, complete)."""
    out = bytearray()
    pos = 0
    while True:
        i = data.find(b"\r\n", pos)
        if i < 0:
            return bytes(out), False
        size = int(data[pos:i].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            return bytes(out), True
        start = i + 2
        if len(data) < start + size + 2:
            return bytes(out), False
        out.extend(data[start : start + size])
        pos = start + size + 2


def _read_short_body(sock: ssl.SSLSocket, headers: dict, initial: bytes, timeout: float) -> bytes:
    """Read a complete, short, non-streamed response body (used for error answers)."""
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length")
    data = bytearray(initial)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if chunked:
                body, done = _dechunk(bytes(data))
                if done:
                    return body
            elif length is not None and len(data) >= int(length):
                return bytes(data[: int(length)])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data.extend(chunk)
    except OSError:
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass
    return _dechunk(bytes(data))[0] if chunked else bytes(data)


def open_stream(
    ctx: ssl.SSLContext,
    url: str,
    body: bytes,
    headers: dict,
    timeout: float = 15.0,
) -> CommandChannel:
    """POST ``body`` to ``url`` and return the streamed response as a CommandChannel.

    Non-200 answers raise ``NocHttpError``.
    """
    host, port, path = _split_url(url)
    raw = socket.create_connection((host, port), timeout=timeout)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    host_hdr = host if ":" not in host else f"[{host}]"
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host_hdr}:{port}",
        "Accept: application/x-ndjson",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            sock.close()
            raise ConnectionError("connection closed before the response headers")
        buf.extend(data)
        if len(buf) > 256 * 1024:
            sock.close()
            raise ConnectionError("response headers too long")
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    head_lines = head.decode("latin-1").split("\r\n")
    parts = head_lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    resp_headers: dict = {}
    for h in head_lines[1:]:
        name, _, value = h.partition(":")
        resp_headers[name.strip().lower()] = value.strip()

    if status != 200:
        # Read the (short) error body, then raise.
        raise NocHttpError(status, reason, resp_headers, _read_short_body(sock, resp_headers, rest, timeout))

    sock.settimeout(0.5)  # lets the reader thread notice close()
    return CommandChannel(sock, resp_headers, rest)


# ---------------------------------------------------------------------------
# RTS client (§4, §5)
# ---------------------------------------------------------------------------


class RtsClient:
    """The VES side of RTS, plus the user/device activation endpoints.

    ``base_url`` is the public base, e.g. ``https://localhost:8443``.
    """

    def __init__(self, base_url: str, cafile: Optional[str] = None, timeout: float = 15.0):
        self.base_url = base_url.rstrip("/")
        self.ctx = tls_context(cafile)
        self.timeout = timeout
        self.license_id: Optional[str] = None
        self.params: Optional[dict] = None
        self.key_id: Optional[str] = None
        self.key: Optional[str] = None
        self.event_url: Optional[str] = None
        self.channel: Optional[CommandChannel] = None

    # -- raw access ---------------------------------------------------------
    def request(self, method: str, path_or_url: str, body=None, headers=None) -> HttpResult:
        url = path_or_url if path_or_url.startswith("https://") else self.base_url + path_or_url
        return https_request(self.ctx, method, url, body, headers, self.timeout)

    # -- §4.1 ---------------------------------------------------------------
    def license_login(self, name: str, password: str) -> dict:
        res = _checked(self.request("POST", "/rts/v1/license", {"Name": name, "Password": password}))
        self.license_id = res["LicenseId"]
        return res

    # -- §4.2 ---------------------------------------------------------------
    def connect(self) -> dict:
        res = _checked(self.request("GET", "/rts/v1/connect"))
        if res.get("ProtocolVersion") != RTS_PROTOCOL_VERSION:
            raise RuntimeError(f"relay announces RTS version {res.get('ProtocolVersion')}, this client speaks 1")
        self.params = res
        self.key_id, self.key, self.event_url = res["KeyId"], res["Key"], res["EventUrl"]
        return res

    # -- §4.3 ---------------------------------------------------------------
    def open_command_channel(
        self,
        guid: str,
        license_id: Optional[str] = None,
        agent: Optional[str] = None,
        key: Optional[str] = None,
        event_url: Optional[str] = None,
    ) -> CommandChannel:
        """POST the RtsConnection to the EventUrl; the answer is the command channel.

        ``license_id`` defaults to the token from ``license_login`` (needed on the first
        connection of a GUID). ``key``/``event_url`` override the connect parameters
        (e.g. to test a wrong key).
        """
        conn: dict = {"Guid": guid}
        lic = license_id if license_id is not None else self.license_id
        if lic is not None:
            conn["LicenseId"] = lic
        if agent is not None:
            conn["Agent"] = agent
        body = json.dumps({"RtsConnection": conn}, separators=(",", ":")).encode("utf-8")
        url = event_url or self.event_url
        if url is None:
            raise RuntimeError("call connect() first")
        chan = open_stream(self.ctx, url, body, {"X-Rts-Key": key if key is not None else self.key}, self.timeout)
        self.channel = chan
        return chan

    # -- §4.4 ---------------------------------------------------------------
    def data_raw(self, body: Union[dict, bytes], key_id: Optional[str] = None, key: Optional[str] = None) -> HttpResult:
        headers = {
            "X-Rts-Key-Id": key_id if key_id is not None else (self.key_id or ""),
            "X-Rts-Key": key if key is not None else (self.key or ""),
        }
        return self.request("POST", "/rts/v1/data", body, headers)

    def data(self, body: dict, **kw) -> dict:
        return _checked(self.data_raw(body, **kw))

    def startup_report(self, users: Iterable[tuple]) -> dict:
        """``users``: (user_id, status) or (user_id, status, detail) tuples."""
        entries = []
        for u in users:
            e = {"UserId": str(u[0]), "Status": u[1]}
            if len(u) > 2 and u[2] is not None:
                e["Detail"] = u[2]
            entries.append(e)
        return self.data({"Type": "StartupReport", "Users": entries})

    def provision_user(self, email: str, first_name: str, last_name: str, password: Optional[str] = None) -> dict:
        req = {"Type": "ProvisionUser", "Email": email, "FirstName": first_name, "LastName": last_name}
        if password is not None:
            req["Password"] = password
        return self.data(req)

    def delete_user(self, email: str) -> dict:
        return self.data({"Type": "DeleteUser", "Email": email})

    def reset_password(self, email: str, password: Optional[str] = None) -> dict:
        req = {"Type": "ResetPassword", "Email": email}
        if password is not None:
            req["Password"] = password
        return self.data(req)

    def list_users(self) -> dict:
        return self.data({"Type": "ListUsers"})

    def frames(self, frames: Iterable[tuple]) -> dict:
        """``frames``: (device_id, frame_id, kind, payload_bytes) tuples."""
        return self.data(
            {
                "Type": "Frames",
                "Frames": [
                    {"DeviceId": str(d), "FrameId": int(f), "Kind": k, "Payload": b64encode(p)}
                    for d, f, k, p in frames
                ],
            }
        )

    def acks(self, acks: Iterable[tuple]) -> dict:
        """``acks``: (device_id, frame_id) tuples."""
        return self.data({"Type": "Acks", "Acks": [{"DeviceId": str(d), "FrameId": int(f)} for d, f in acks]})

    # -- §5 -----------------------------------------------------------------
    def activate_account(self, login: str, password: str, msisdn: str, time_zone: str) -> dict:
        return _checked(
            self.request(
                "POST",
                "/account/v1/activate",
                {"Login": login, "Password": password, "Msisdn": msisdn, "TimeZone": time_zone},
            )
        )

    def activate_device(
        self, msisdn: str, password: str, device_name: Optional[str] = None, device_type: Optional[str] = None
    ) -> dict:
        req = {"Msisdn": msisdn, "Password": password}
        if device_name is not None:
            req["DeviceName"] = device_name
        if device_type is not None:
            req["DeviceType"] = device_type
        return _checked(self.request("POST", "/device/v1/activate", req))


# ---------------------------------------------------------------------------
# Device channel frames (§6.1, §6.2)
# ---------------------------------------------------------------------------


class FrameError(Exception):
    """A framing/decoding error; ``code`` is the close code to answer with (§6.1)."""

    def __init__(self, code: int, message: str):
        self.code = code
        super().__init__(f"{close_code_name(code)}: {message}")


@dataclass
class Frame:
    """A decoded device-channel frame. ``type`` is the type byte; other fields by type."""

    type: int
    versions: list = field(default_factory=list)  # HELLO
    version: int = 0  # HELLO_ACK
    device_id: Optional[uuid.UUID] = None  # AUTH_TOKEN / AUTH_PASSWORD
    credential: bytes = b""  # AUTH_TOKEN
    msisdn: str = ""  # AUTH_PASSWORD
    password: str = ""  # AUTH_PASSWORD
    heartbeat_interval_seconds: int = 0  # AUTH_OK
    idle_timeout_seconds: int = 0  # AUTH_OK
    max_frame_bytes: int = 0  # AUTH_OK
    code: int = 0  # CLOSE
    reconnect_after_ms: int = 0  # CLOSE
    message: str = ""  # CLOSE
    kind: int = 0  # FORWARD
    frame_id: int = 0  # FORWARD / ACK / UNDELIVERABLE
    payload: bytes = b""  # FORWARD
    reason: int = 0  # UNDELIVERABLE

    @property
    def name(self) -> str:
        return FRAME_NAMES.get(self.type, f"0x{self.type:02x}")

    @property
    def kind_name(self) -> str:
        return KINDS.get(self.kind, str(self.kind))

    @property
    def code_name(self) -> str:
        return close_code_name(self.code)

    @property
    def reason_name(self) -> str:
        return reason_name(self.reason)

    def to_json(self) -> dict:
        """The one-line JSON form printed by the CLI."""
        d: dict = {"Frame": self.name}
        t = self.type
        if t == HELLO:
            d["Versions"] = list(self.versions)
        elif t == HELLO_ACK:
            d["Version"] = self.version
        elif t == AUTH_TOKEN:
            d.update(DeviceId=str(self.device_id), CredentialHex=self.credential.hex())
        elif t == AUTH_PASSWORD:
            d.update(DeviceId=str(self.device_id), Msisdn=self.msisdn)
        elif t == AUTH_OK:
            d.update(
                HeartbeatIntervalSeconds=self.heartbeat_interval_seconds,
                IdleTimeoutSeconds=self.idle_timeout_seconds,
                MaxFrameBytes=self.max_frame_bytes,
            )
        elif t == CLOSE:
            d.update(
                Code=self.code_name,
                CodeNumber=self.code,
                ReconnectAfterMs=self.reconnect_after_ms,
                Message=self.message,
            )
        elif t == FORWARD:
            d.update(
                Kind=self.kind_name,
                FrameId=self.frame_id,
                Payload=self.payload.decode("utf-8", errors="replace"),
                PayloadHex=self.payload.hex(),
            )
        elif t == ACK:
            d["FrameId"] = self.frame_id
        elif t == UNDELIVERABLE:
            d.update(FrameId=self.frame_id, Reason=self.reason_name, ReasonNumber=self.reason)
        return d


def _str16(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError("str16 longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def _frame(type_byte: int, body: bytes) -> bytes:
    return struct.pack(">IB", 1 + len(body), type_byte) + body


def encode_hello(versions: Iterable[int] = DEVICE_PROTOCOL_VERSIONS) -> bytes:
    v = list(versions)
    return _frame(HELLO, HELLO_MAGIC + struct.pack(">B", len(v)) + b"".join(struct.pack(">H", x) for x in v))


def encode_hello_ack(version: int) -> bytes:
    return _frame(HELLO_ACK, struct.pack(">H", version))


def encode_auth_token(device_id, credential: bytes) -> bytes:
    return _frame(AUTH_TOKEN, uuid_bytes(device_id) + struct.pack(">B", len(credential)) + credential)


def encode_auth_password(device_id, msisdn: str, password: str) -> bytes:
    return _frame(AUTH_PASSWORD, uuid_bytes(device_id) + _str16(msisdn) + _str16(password))


def encode_auth_ok(heartbeat: int, idle: int, max_frame: int) -> bytes:
    return _frame(AUTH_OK, struct.pack(">III", heartbeat, idle, max_frame))


def encode_close(code: int, reconnect_after_ms: int = 0, message: str = "") -> bytes:
    return _frame(CLOSE, struct.pack(">HI", code, reconnect_after_ms) + _str16(message))


def encode_forward(kind: Union[int, str], frame_id: int, payload: bytes) -> bytes:
    k = KIND_NUMBERS[kind] if isinstance(kind, str) else kind
    return _frame(FORWARD, struct.pack(">BQ", k, frame_id) + payload)


def encode_ack(frame_id: int) -> bytes:
    return _frame(ACK, struct.pack(">Q", frame_id))


def encode_undeliverable(frame_id: int, reason: int) -> bytes:
    return _frame(UNDELIVERABLE, struct.pack(">QH", frame_id, reason))


def encode_heartbeat() -> bytes:
    return _frame(HEARTBEAT, b"")


def encode_frame(f: Frame) -> bytes:
    t = f.type
    if t == HELLO:
        return encode_hello(f.versions)
    if t == HELLO_ACK:
        return encode_hello_ack(f.version)
    if t == AUTH_TOKEN:
        return encode_auth_token(f.device_id, f.credential)
    if t == AUTH_PASSWORD:
        return encode_auth_password(f.device_id, f.msisdn, f.password)
    if t == AUTH_OK:
        return encode_auth_ok(f.heartbeat_interval_seconds, f.idle_timeout_seconds, f.max_frame_bytes)
    if t == CLOSE:
        return encode_close(f.code, f.reconnect_after_ms, f.message)
    if t == FORWARD:
        return encode_forward(f.kind, f.frame_id, f.payload)
    if t == ACK:
        return encode_ack(f.frame_id)
    if t == UNDELIVERABLE:
        return encode_undeliverable(f.frame_id, f.reason)
    if t == HEARTBEAT:
        return encode_heartbeat()
    raise ValueError(f"unknown frame type 0x{t:02x}")


class _Body:
    """Bounds-checked reader over one frame body."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise FrameError(2, "body shorter than its layout")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def str16(self) -> str:
        n = self.u16()
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(2, "invalid UTF-8 in a str16") from None

    def rest(self) -> bytes:
        b = self.data[self.pos :]
        self.pos = len(self.data)
        return b

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError(2, "bytes after the end of a fixed layout")


def decode_body(type_byte: int, body: bytes) -> Frame:
    """Decode the body of one frame (§6.2); raises FrameError (malformed_frame)."""
    r = _Body(body)
    f = Frame(type_byte)
    if type_byte == HELLO:
        if r.take(4) != HELLO_MAGIC:
            raise FrameError(2, "HELLO without the NOCD magic")
        count = r.u8()
        if count < 1 or count > 16:
            raise FrameError(2, "HELLO version count must be 1 to 16")
        f.versions = [r.u16() for _ in range(count)]
    elif type_byte == HELLO_ACK:
        f.version = r.u16()
    elif type_byte == AUTH_TOKEN:
        f.device_id = uuid.UUID(bytes=r.take(16))
        n = r.u8()
        if n > 64:
            raise FrameError(2, "credential longer than 64 bytes")
        f.credential = r.take(n)
    elif type_byte == AUTH_PASSWORD:
        f.device_id = uuid.UUID(bytes=r.take(16))
        f.msisdn = r.str16()
        f.password = r.str16()
    elif type_byte == AUTH_OK:
        f.heartbeat_interval_seconds = r.u32()
        f.idle_timeout_seconds = r.u32()
        f.max_frame_bytes = r.u32()
    elif type_byte == CLOSE:
        f.code = r.u16()
        f.reconnect_after_ms = r.u32()
        f.message = r.str16()
    elif type_byte == FORWARD:
        f.kind = r.u8()
        if f.kind not in KINDS:
            raise FrameError(2, f"unknown FORWARD kind {f.kind}")
        f.frame_id = r.u64()
        f.payload = r.rest()
    elif type_byte == ACK:
        f.frame_id = r.u64()
    elif type_byte == UNDELIVERABLE:
        f.frame_id = r.u64()
        f.reason = r.u16()
    elif type_byte == HEARTBEAT:
        pass
    else:
        raise FrameError(2, f"unknown frame type 0x{type_byte:02x}")
    r.end()
    return f


def decode_frame(buf: Union[bytes, bytearray], max_length: int = PRE_AUTH_MAX_LENGTH) -> Optional[tuple[Frame, int]]:
    """Decode the first frame of ``buf``.

    Returns ``(frame, bytes_consumed)``, or ``None`` when more bytes are needed. The
    length is checked as soon as the 4-byte prefix is there (§6.1).
    """
    if len(buf) < 4:
        return None
    (length,) = struct.unpack(">I", bytes(buf[:4]))
    if length == 0:
        raise FrameError(2, "zero length")
    if length > max_length:
        raise FrameError(3, f"length {length} exceeds {max_length}")
    if len(buf) < 4 + length:
        return None
    frame = decode_body(buf[4], bytes(buf[5 : 4 + length]))
    return frame, 4 + length


# ---------------------------------------------------------------------------
# Device client (§6)
# ---------------------------------------------------------------------------


class ConnectionClosedError(ConnectionError):
    """The relay closed the connection (without, or after, a CLOSE frame)."""


class DeviceClient:
    """One device-channel connection.

    Not thread-safe: use it from one thread (send and receive interleaved), since one
    TLS connection must not be read and written concurrently by two threads.
    """

    def __init__(self, host: str, port: int, cafile: Optional[str] = None, server_hostname: Optional[str] = None,
                 connect_timeout: float = 10.0):
        self.host = host
        self.port = port
        self.ctx = tls_context(cafile)
        self.server_hostname = server_hostname or host
        self.connect_timeout = connect_timeout
        self.sock: Optional[ssl.SSLSocket] = None
        self.buf = bytearray()
        self.max_frame = PRE_AUTH_MAX_LENGTH
        self.version: Optional[int] = None
        self.auth_ok: Optional[Frame] = None
        self.eof = False

    # -- connection ---------------------------------------------------------
    def connect(self) -> "DeviceClient":
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        self.sock = self.ctx.wrap_socket(raw, server_hostname=self.server_hostname)
        return self

    def __enter__(self) -> "DeviceClient":
        if self.sock is None:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- sending ------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None, "not connected"
        self.sock.sendall(data)

    def send(self, frame: Union[Frame, bytes]) -> None:
        data = frame if isinstance(frame, (bytes, bytearray)) else encode_frame(frame)
        self.send_raw(bytes(data))

    def send_hello(self, versions: Iterable[int] = DEVICE_PROTOCOL_VERSIONS) -> None:
        self.send_raw(encode_hello(versions))

    def send_auth_token(self, device_id, credential: Union[str, bytes]) -> None:
        cred = bytes.fromhex(credential) if isinstance(credential, str) else credential
        self.send_raw(encode_auth_token(device_id, cred))

    def send_auth_password(self, device_id, msisdn: str, password: str) -> None:
        self.send_raw(encode_auth_password(device_id, msisdn, password))

    def forward(self, kind: Union[int, str], frame_id: int, payload: bytes) -> None:
        data = encode_forward(kind, frame_id, payload)
        if len(data) - 4 > self.max_frame:
            raise ValueError(f"frame length {len(data) - 4} exceeds max_frame_bytes {self.max_frame}")
        self.send_raw(data)

    def ack(self, frame_id: int) -> None:
        self.send_raw(encode_ack(frame_id))

    def heartbeat(self) -> None:
        self.send_raw(encode_heartbeat())

    def close(self, code: int = 0, message: str = "bye") -> None:
        """Send CLOSE (default ``normal``) and close the connection (§6.4.4)."""
        try:
            self.send_raw(encode_close(code, 0, message))
            try:
                self.sock.unwrap()  # type: ignore[union-attr]
            except (OSError, ValueError, ssl.SSLError):
                pass
        except OSError:
            pass
        self.disconnect()

    # -- receiving ----------------------------------------------------------
    def recv(self, timeout: Optional[float] = 10.0) -> Optional[Frame]:
        """The next frame, or ``None`` if none arrived within ``timeout`` seconds.

        Raises ``ConnectionClosedError`` at end of stream and ``FrameError`` on a
        framing/decoding error (the stream position is then lost).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got = decode_frame(self.buf, self.max_frame)
            if got is not None:
                frame, n = got
                del self.buf[:n]
                return frame
            if self.eof:
                raise ConnectionClosedError(
                    "connection closed" + (f" with {len(self.buf)} bytes of a partial frame" if self.buf else "")
                )
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)  # type: ignore[union-attr]
            else:
                self.sock.settimeout(None)  # type: ignore[union-attr]
            try:
                data = self.sock.recv(65536)  # type: ignore[union-attr]
            except (socket.timeout, TimeoutError):
                return None
            except ssl.SSLZeroReturnError:
                data = b""
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                data = b""
            if not data:
                self.eof = True
            else:
                self.buf.extend(data)

    def recv_until_closed(self, timeout: float = 5.0) -> list:
        """Read frames until the connection ends (or ``timeout``); returns them."""
        frames = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                f = self.recv(max(0.0, deadline - time.monotonic()))
            except ConnectionClosedError:
                break
            if f is None:
                break
            frames.append(f)
        return frames

    # -- handshake ----------------------------------------------------------
    def hello(self, versions: Iterable[int] = DEVICE_PROTOCOL_VERSIONS, timeout: float = 10.0) -> Frame:
        """Send HELLO; returns HELLO_ACK or the refusing CLOSE."""
        self.send_hello(versions)
        f = self._expect(timeout, "HELLO_ACK")
        if f.type == HELLO_ACK:
            self.version = f.version
        return f

    def _expect(self, timeout: float, what: str) -> Frame:
        f = self.recv(timeout)
        if f is None:
            raise TimeoutError(f"no answer to {what} within {timeout} s")
        return f

    def _after_auth(self, f: Frame) -> Frame:
        if f.type == AUTH_OK:
            self.auth_ok = f
            self.max_frame = f.max_frame_bytes
        return f

    def auth_token(self, device_id, credential: Union[str, bytes], timeout: float = 10.0) -> Frame:
        """Send AUTH_TOKEN; returns AUTH_OK or the refusing CLOSE."""
        self.send_auth_token(device_id, credential)
        return self._after_auth(self._expect(timeout, "AUTH_TOKEN"))

    def auth_password(self, device_id, msisdn: str, password: str, timeout: float = 10.0) -> Frame:
        """Send AUTH_PASSWORD; returns AUTH_OK or the refusing CLOSE."""
        self.send_auth_password(device_id, msisdn, password)
        return self._after_auth(self._expect(timeout, "AUTH_PASSWORD"))

    def login(self, device_id, credential: Union[str, bytes], timeout: float = 10.0) -> Frame:
        """Connect if needed, HELLO, AUTH_TOKEN. Returns AUTH_OK; raises on refusal."""
        if self.sock is None:
            self.connect()
        f = self.hello(timeout=timeout)
        if f.type != HELLO_ACK:
            raise HandshakeRefused(f)
        f = self.auth_token(device_id, credential, timeout)
        if f.type != AUTH_OK:
            raise HandshakeRefused(f)
        return f


class HandshakeRefused(Exception):
    def __init__(self, frame: Frame):
        self.frame = frame
        super().__init__(f"handshake refused: {frame.to_json()}")


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _print(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_device(args: argparse.Namespace) -> int:
    """The ``device`` subcommand. Exit status: 0 done, 1 error/timeout, 2 handshake refused."""
    stop = threading.Event()

    def on_sigterm(_sig, _frm):
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    dev = DeviceClient(args.host, args.port, args.cafile, server_hostname=args.server_name)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    forwards = 0
    try:
        dev.connect()
        f = dev.hello()
        _print(f.to_json())
        if f.type != HELLO_ACK:
            return 2
        f = dev.auth_token(args.device_id, args.credential)
        _print(f.to_json())
        if f.type != AUTH_OK:
            return 2
        interval = max(1, f.heartbeat_interval_seconds)
        next_hb = time.monotonic() + interval
        if args.send is not None:
            dev.forward(args.kind, args.frame_id, args.send.encode("utf-8"))
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_hb:
                dev.heartbeat()
                next_hb = now + interval
            wait = next_hb - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            wait = max(0.0, min(wait, 0.5))  # wake up regularly to notice SIGTERM
            try:
                f = dev.recv(wait)
            except ConnectionClosedError:
                _print({"Frame": None, "Event": "connection closed"})
                return 0 if args.count is None else 1
            if f is None:
                continue
            _print(f.to_json())
            if f.type == FORWARD:
                dev.ack(f.frame_id)
                forwards += 1
                if args.count is not None and forwards >= args.count:
                    dev.close(0, "done")
                    return 0
            elif f.type == CLOSE:
                dev.disconnect()
                return 0 if args.count is None else 1
        dev.close(0, "bye")
        return 0 if args.count is None else 1
    except KeyboardInterrupt:
        dev.close(0, "interrupted")
        return 0
    except (OSError, FrameError, TimeoutError) as exc:
        sys.stderr.write(f"noc_client: {exc}\n")
        if isinstance(exc, FrameError) and dev.sock is not None:
            try:
                dev.send_raw(encode_close(exc.code, 0, str(exc)[:200]))
            except OSError:
                pass
        dev.disconnect()
        return 1


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description="NOC protocol client (written from docs/protocol.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("device", help="connect a device, optionally send a frame, print received frames")
    d.add_argument("--host", default="localhost")
    d.add_argument("--port", type=int, default=8444)
    d.add_argument("--cafile", help="CA/certificate file to verify the relay (e.g. noc-data/tls/cert.pem)")
    d.add_argument("--server-name", help="TLS server name to verify (default: --host)")
    d.add_argument("--device-id", required=True, help="DeviceId from device activation")
    d.add_argument("--credential", required=True, help="DeviceCredential (64 hex digits) from device activation")
    d.add_argument("--send", metavar="TEXT", help="send one FORWARD with TEXT (UTF-8) as payload")
    d.add_argument("--kind", default="Data", choices=sorted(KIND_NUMBERS), help="kind of the --send frame")
    d.add_argument("--frame-id", type=int, default=1, help="frame id of the --send frame (default 1)")
    d.add_argument("--count", type=int, help="exit after receiving N FORWARD frames")
    d.add_argument("--timeout", type=float, help="exit after SECONDS (status 1 if --count was not reached)")
    args = p.parse_args(argv)
    if args.cmd == "device":
        return run_device(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
