#!/usr/bin/env bash
# End-to-end demo on this machine: a relay, a VES agent with a sample Maildir, an SMTP
# server, and a device. A mail dropped into the Maildir reaches the device encrypted end to
# end; a mail written on the device leaves through the SMTP server. Then the user browses
# the same mailbox on the relay's pages (PC and WAP), answers from the browser, and gets a
# new-mail alert by e-mail, by SMS and as a WAP Push, the last two through a test SMSC
# (SMPP 3.4) that prints what it received. Everything runs on loopback in a temporary directory, which is
# removed at the end (KEEP=1 keeps it).
# Usage: scripts/demo.sh        (RELEASE=1 builds with --release)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"

say "build (noc, ves-agent, noc-device, noc-test-smsc)"
PROFILE_FLAG=""; BIN=target/debug
if [ "${RELEASE:-0}" = 1 ]; then PROFILE_FLAG="--release"; BIN=target/release; fi
cargo build $PROFILE_FLAG -q -p noc -p noc-agent -p noc-device
cargo build $PROFILE_FLAG -q -p noc-test-support --bin noc-test-smsc
BIN=$(cd "$BIN" && pwd)

D=$(mktemp -d -t noc-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_for() { # wait_for SECONDS COMMAND...
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
HTTP=$(free_port); DEV=$(free_port); ADMIN=$(free_port); SMTP=$(free_port); SMSC=$(free_port)
R="https://127.0.0.1:$HTTP"; CA="$D/relay/tls/cert.pem"

say "start a test SMSC (the carrier's, SMPP 3.4) on :$SMSC"
"$BIN/noc-test-smsc" "$SMSC" noc smsc-pw >"$D/smsc.log" 2>&1 &
PIDS+=($!)
wait_for 10 grep -q listening "$D/smsc.log" || die "the test SMSC did not start"

say "start a relay in $D/relay (HTTPS :$HTTP, device channel :$DEV)"
# Its own mail (recovery links, alerts) goes to the same SMTP server as the enterprise's;
# SMS and WAP Push alerts to the test SMSC.
NOC_MAIL__SMTP_HOST=127.0.0.1 NOC_MAIL__SMTP_PORT="$SMTP" NOC_MAIL__SMTP_SECURITY=none \
  NOC_MAIL__FROM="NOC <noc@relay.example>" \
  NOC_ALERTS__SMPP_HOST=127.0.0.1 NOC_ALERTS__SMPP_PORT="$SMSC" NOC_ALERTS__SMPP_PASSWORD=smsc-pw \
  "$BIN/noc" serve --data-dir "$D/relay" --http-listen "127.0.0.1:$HTTP" --device-listen "127.0.0.1:$DEV" \
  --admin-listen "127.0.0.1:$ADMIN" --console-listen 127.0.0.1:0 >"$D/relay.log" 2>&1 &
PIDS+=($!)
wait_for 30 curl -sf "http://127.0.0.1:$ADMIN/readyz" || { cat "$D/relay.log"; die "relay did not start"; }
"$BIN/noc" admin --data-dir "$D/relay" license create --name demo --password demo-license-pw --max-users 10 >/dev/null
echo "license 'demo' created"

say "start an SMTP server (the enterprise mail server) on :$SMTP"
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install --quiet aiosmtpd 2>/dev/null || python3 -m pip install --quiet --break-system-packages aiosmtpd \
    || die "aiosmtpd is needed: python3 -m pip install aiosmtpd"
fi
mkdir -p "$D/smtp/tmp" "$D/smtp/new" "$D/smtp/cur"
python3 -m aiosmtpd -n -l "127.0.0.1:$SMTP" -c aiosmtpd.handlers.Mailbox "$D/smtp" >"$D/smtp.log" 2>&1 &
PIDS+=($!)
wait_for 10 python3 -c "import socket; socket.create_connection(('127.0.0.1', $SMTP))" || die "SMTP server did not start"

say "configure, register and start the VES agent (Maildir: $D/maildir)"
# The enterprise's own CA for the "wifi" certificate profile (any CA certificate and key
# will do; this one is made by the relay's tool).
"$BIN/noc" device-ca create --out "$D/wifi-ca" --name "Example Corp Wi-Fi CA" >/dev/null
cat >"$D/agent.toml" <<EOF
[relay]
url = "$R"
ca_file = "$CA"
heartbeat_tolerance_seconds = 5
[license]
name = "demo"
password = "demo-license-pw"
[mail]
maildir_root = "$D/maildir"
rescan_interval_seconds = 5
[smtp]
host = "127.0.0.1"
port = $SMTP
[welcome]
from = "VES Administrator <ves-admin@example.com>"
[queue]
resend_after_seconds = 5
[state]
dir = "$D/agent"
[[ca.profiles]]
name = "wifi"
require_approval = true
subject_suffix = [["O", "Example Corp"]]
[ca.profiles.authority]
kind = "file"
cert_path = "$D/wifi-ca/tls.crt"
key_path = "$D/wifi-ca/tls.key"
EOF
AGENT=("$BIN/ves-agent" --config "$D/agent.toml")
"${AGENT[@]}" register
"${AGENT[@]}" run >"$D/agent.log" 2>&1 &
PIDS+=($!)
wait_for 30 sh -c "'${AGENT[0]}' --config '$D/agent.toml' status | grep -q '\"Connected\": true'" \
  || { cat "$D/agent.log"; die "agent did not connect"; }
FP=$("${AGENT[@]}" fingerprint)
echo "agent connected; VES key fingerprint: $FP"

say "provision bob@example.com through the running agent (sends the welcome mail)"
"${AGENT[@]}" user add --email bob@example.com --first-name Bob --last-name Ng --password bob-password-1
wait_for 10 sh -c "ls '$D/smtp/new/'* >/dev/null 2>&1" || die "no welcome mail"
echo "--- the welcome mail, as the SMTP server received it:"
sed -n '/^Hello/,$p' "$D"/smtp/new/* | head -20

say "Bob activates his account (binds +15550100) and his device"
curl -sf --cacert "$CA" -X POST "$R/account/v1/activate" \
  -d '{"Login":"bob@example.com","Password":"bob-password-1","Msisdn":"+15550100","TimeZone":"Europe/Paris"}' >/dev/null
DEVICE=("$BIN/noc-device" --state-dir "$D/device")
"${DEVICE[@]}" activate --relay "$R" --ca-file "$CA" --msisdn +15550100 --password bob-password-1 \
  --ves-fingerprint "$FP" --email bob@example.com --name demo-phone --certificate
echo "--- the client certificate the relay issued for the device's own key, checked by openssl:"
openssl verify -purpose sslclient -CAfile "$D/device/management-root.pem" "$D/device/client-cert.pem"
DEVICE_ID=$(python3 -c "import json; print(json.load(open('$D/device/device.json'))['device_id'])")
wait_for 15 sh -c "'${AGENT[0]}' --config '$D/agent.toml' status | grep -q '$DEVICE_ID'" || die "agent did not learn the device"

say "drop a mail into Bob's Maildir and run the device until it has it"
"${DEVICE[@]}" run --until-inbox 1 --timeout-seconds 60 >"$D/device.log" 2>&1 &
DEVICE_PID=$!
PIDS+=($DEVICE_PID)
MSG="$(date +%s).M1P$$.demo"
cat >"$D/maildir/bob@example.com/tmp/$MSG" <<'EOF'
From: Alice <alice@partner.example>
To: Bob Ng <bob@example.com>
Subject: Quarterly numbers
Message-ID: <q3@partner.example>

Hi Bob, revenue is up 12 %. Keep it confidential.
EOF
mv "$D/maildir/bob@example.com/tmp/$MSG" "$D/maildir/bob@example.com/new/$MSG"
wait "$DEVICE_PID" || { cat "$D/device.log"; die "the device did not receive the mail"; }
grep -q 'device channel up.*client certificate' "$D/device.log" \
  || { cat "$D/device.log"; die "the device did not authenticate with its client certificate"; }
echo "--- the device authenticated with its client certificate (mutual TLS, AUTH_CERT):"
"${DEVICE[@]}" status | grep certificate
echo "--- the device's inbox (decrypted on the device, stored locally):"
"${DEVICE[@]}" inbox
echo "--- item 1:"
"${DEVICE[@]}" inbox --show 1

say "Bob answers from the device; the agent submits it to the SMTP server"
"${DEVICE[@]}" send --to alice@partner.example --subject "Re: Quarterly numbers" --body "Thanks Alice, noted."
"${DEVICE[@]}" run --until-outbox-empty --timeout-seconds 60 >>"$D/device.log" 2>&1 || { cat "$D/device.log"; die "not sent"; }
wait_for 15 sh -c "grep -l 'Thanks Alice' '$D'/smtp/new/* >/dev/null 2>&1" || die "the reply did not reach the SMTP server"
echo "--- as the SMTP server received it:"
grep -h -E '^(From|To|Subject|X-MailFrom|X-RcptTo):' $(grep -l 'Thanks Alice' "$D"/smtp/new/*)

say "Bob browses his mailbox on the relay's pages (fetched live from the agent), answers, sets an alert"
python3 - "$R" "$CA" "$D" <<'PY'
import http.cookiejar, json, re, ssl, subprocess, sys, urllib.parse, urllib.request
base, ca, d = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False  # the demo relay's certificate names localhost; we call 127.0.0.1
jar = http.cookiejar.CookieJar()
web = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), urllib.request.HTTPCookieProcessor(jar))
def get(path):
    with web.open(base + path) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()
def post(path, fields):
    req = urllib.request.Request(base + path, urllib.parse.urlencode(fields).encode())
    with web.open(req) as r:
        return r.read().decode()
def csrf(page):
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)
_, login = get("/login")
post("/login", {"csrf": csrf(login), "login": "bob@example.com", "password": "bob-password-1"})
_, inbox = get("/mail/INBOX")
ids = re.findall(r'href="/mail/INBOX/([^"]+)"', inbox)
print("PC inbox:", ", ".join(re.findall(r'<a href="/mail/INBOX/[^"]+">([^<]+)</a>', inbox)))
_, message = get("/mail/INBOX/" + ids[0])
print("PC message:", re.search(r'<pre class="mail-text">([^<]*)</pre>', message).group(1).strip())
kind, deck = get("/wap/mail/INBOX")
print("WAP deck:", kind, "-", len(deck), "bytes")
try:
    dtd = "web/tests/data/wml11.dtd"
    ok = subprocess.run(["xmllint", "--noout", "--nonet", "--dtdvalid", dtd, "-"], input=deck.encode(),
                        capture_output=True).returncode == 0
    print("WAP deck valid against the WML 1.1 DTD:", ok)
except FileNotFoundError:
    print("(xmllint not installed: the WAP deck is not validated here)")
_, compose = get("/mail/compose?mode=reply&folder=INBOX&id=" + ids[0])
post("/mail/compose", {"csrf": csrf(compose), "mode": "reply", "folder": "INBOX", "id": urllib.parse.unquote(ids[0]),
                       "to": "alice@partner.example", "cc": "", "subject": "Re: Quarterly numbers",
                       "body": "Answered from the browser."})
print("reply sent from the browser")
_, alerts = get("/settings/alerts")
post("/settings/alerts", {"csrf": csrf(alerts), "email": "bob-alerts@example.com", "excerpt": "1",
                           "sms": "1", "wap_push": "1"})
# A new alert address is confirmed first: follow the link the relay mailed to it.
import glob, time
link = None
for _ in range(150):
    for f in glob.glob(d + "/smtp/new/*"):
        m = re.search(r"(/alerts/confirm/[0-9a-f.-]+)", open(f, errors="replace").read())
        if m and "bob-alerts@example.com" in open(f, errors="replace").read():
            link = m.group(1)
    if link:
        break
    time.sleep(0.1)
if not link:
    sys.exit("no confirmation mail for the alert address")
_, button = get(link)
done = post(link, {"csrf": csrf(button)})
print("alert address confirmed:", re.search(r"New-mail alerts now go to [^<]+", done).group(0))
_, settings = get("/settings")
post("/settings", {"csrf": csrf(settings), "first_name": "Bob", "last_name": "Ng", "time_zone": "Europe/Paris",
                   "constant_sync": "1", "alerts": "1", "rule_field": "subject", "rule_text": "urgent"})
print("alert rule: Subject contains 'urgent'; alerts go to bob-alerts@example.com and by SMS and WAP Push to +15550100")
PY
wait_for 15 sh -c "grep -l 'Answered from the browser' '$D'/smtp/new/* >/dev/null 2>&1" || die "the browser's reply did not leave"
echo "--- the browser's reply, as the SMTP server received it:"
grep -h -E '^(From|To|Subject|In-Reply-To):' $(grep -l 'Answered from the browser' "$D"/smtp/new/*)
wait_for 15 sh -c "'${AGENT[0]}' --config '$D/agent.toml' status | grep -q urgent" || die "the agent did not learn the rule"
MSG="$(date +%s).M2P$$.demo"
printf 'From: Alice <alice@partner.example>\nTo: bob@example.com\nSubject: URGENT: call me\n\nPlease call me back today.\n' \
  >"$D/maildir/bob@example.com/tmp/$MSG"
mv "$D/maildir/bob@example.com/tmp/$MSG" "$D/maildir/bob@example.com/new/$MSG"
alert_mail() { grep -l 'X-RcptTo: bob-alerts@example.com' "$D"/smtp/new/* 2>/dev/null | xargs -r grep -l 'URGENT: call me'; }
wait_for 30 sh -c "$(declare -f alert_mail); D='$D'; [ -n \"\$(alert_mail)\" ]" || die "no alert mail"
echo "--- the alert, as the SMTP server received it:"
grep -h -E '^(From|To|Subject):|^Please' $(alert_mail)
wait_for 30 sh -c "[ \$(grep -c submit_sm '$D/smsc.log') -ge 2 ]" || { cat "$D/smsc.log"; die "no SMS and WAP Push alerts"; }
echo "--- the SMS and the WAP Push (a Service Indication in WBXML), as the test SMSC received them:"
grep submit_sm "$D/smsc.log"
if grep -q violation "$D/smsc.log"; then grep violation "$D/smsc.log"; die "the SMSC saw PDUs that break SMPP 3.4"; fi

say "Bob's device enrolls a Wi-Fi certificate from the enterprise CA; the administrator approves"
ENROLL_ID=$("${DEVICE[@]}" ca enroll --profile wifi | awk '{print $2}')
"${DEVICE[@]}" run --timeout-seconds 30 >>"$D/device.log" 2>&1 &
RUN_PID=$!
PIDS+=($RUN_PID)
wait_for 20 sh -c "'${AGENT[0]}' --config '$D/agent.toml' ca pending | grep -q '$ENROLL_ID'" \
  || { cat "$D/device.log"; die "the request did not reach the approval queue"; }
echo "--- waiting for approval (ves-agent ca pending):"
"${AGENT[@]}" ca pending | grep -E '"(RequestId|Email|Subject)"'
"${AGENT[@]}" ca approve "$ENROLL_ID" >/dev/null
wait_for 20 sh -c "'${DEVICE[0]}' --state-dir '$D/device' ca list | grep -q issued" \
  || { cat "$D/device.log"; die "the certificate was not issued"; }
kill "$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null || true
echo "--- on the device (noc-device ca list), checked by openssl against the enterprise CA:"
"${DEVICE[@]}" ca list
openssl verify -purpose sslclient -CAfile "$D/wifi-ca/tls.crt" "$D/device/enterprise/wifi-chain.pem"
openssl x509 -noout -subject -in "$D/device/enterprise/wifi-chain.pem"

say "Bob's password is reset: his device is revoked, and its next handshake (mutual TLS) is refused"
"${AGENT[@]}" user reset-password --email bob@example.com >/dev/null
if "${DEVICE[@]}" run --timeout-seconds 20 >"$D/revoked.log" 2>&1; then cat "$D/revoked.log"; die "the revoked device connected"; fi
grep -qi 'revoked' "$D/revoked.log" || { cat "$D/revoked.log"; die "the device was not told it is revoked"; }
echo "--- noc-device run, after the reset:"
grep -i 'revoked' "$D/revoked.log" | tail -1

say "what the relay saw"
curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^noc_frames_relayed_total' || true
echo "(opaque frames only: the relay never had the keys)"
"${AGENT[@]}" status | python3 -c 'import json,sys; s=json.load(sys.stdin)["Stats"]; print("agent:", {k: s[k] for k in ("E2eSessions","ItemsQueued","ItemsDelivered","ItemsReceived","MailsSubmitted","WelcomeMails")})'
say "done"
