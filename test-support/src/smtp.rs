//! A real SMTP server for end-to-end tests: Python's `aiosmtpd`, started as a child
//! process, writing each message it accepts (envelope and data) as a JSON file. Not a
//! mock: the agent speaks SMTP over TCP to it exactly as to an enterprise mail server.
//! `scripts/test.sh` installs `aiosmtpd` when it is missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

const SINK: &str = r#"
import json, os, socket, sys, time
from aiosmtpd.controller import Controller

out = sys.argv[1]

class Sink:
    async def handle_DATA(self, server, session, envelope):
        n = time.time_ns()
        tmp = os.path.join(out, ".%d.tmp" % n)
        with open(tmp, "w") as f:
            json.dump({"MailFrom": envelope.mail_from, "RcptTos": envelope.rcpt_tos,
                       "Data": envelope.content.decode("utf-8", "replace")}, f)
        os.rename(tmp, os.path.join(out, "%d.json" % n))
        return "250 Message accepted for delivery"

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
print(port, flush=True)
sys.stdin.read()          # until the test drops us
controller.stop()
"#;

/// A message the sink accepted.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SmtpMessage {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
}

/// The running sink; killed on drop.
pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    /// Starts `python3` with aiosmtpd on an ephemeral loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("smtp_sink.py");
        std::fs::write(&script, SINK)?;
        let out = dir.path().join("messages");
        std::fs::create_dir_all(&out)?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!(
                    "the SMTP sink did not start (is aiosmtpd installed? `python3 -m pip install aiosmtpd`); got {line:?}"
                );
            }
        };
        Ok(SmtpSink { port, dir, child })
    }

    fn messages_dir(&self) -> PathBuf {
        self.dir.path().join("messages")
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.messages_dir())
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|p| std::fs::read(p).ok()).filter_map(|b| serde_json::from_slice(&b).ok()).collect()
    }

    /// Waits until a message satisfies `pred`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&SmtpMessage) -> bool) -> Option<SmtpMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| pred(m)) {
                return Some(m);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
