//! The local administration channel: a Unix socket `<state.dir>/control.sock` (0600, in a
//! 0700 directory), one JSON request line and one JSON response line per connection.
//!
//! White paper §3.2: the administrative interface runs only locally on the VES host. A
//! Unix socket cannot be reached over the network, and file permissions restrict it to the
//! agent's own account. The commands act through the running agent's RTS session, so they
//! need no credentials of their own and see exactly what the agent sees.
//!
//! ```text
//! {"Op":"UserAdd","Email":"bob@example.com","FirstName":"Bob","LastName":"Ng","Password":null,"Welcome":true}
//! {"Op":"UserList"} {"Op":"UserDelete","Email":"…"} {"Op":"UserResetPassword","Email":"…","Password":null}
//! {"Op":"Status"}
//! {"Op":"CaPending"} {"Op":"CaList"} {"Op":"CaApprove","RequestId":"…"} {"Op":"CaReject","RequestId":"…","Reason":"…"}
//! → {"Ok":true,"Result":{…}} | {"Ok":false,"Error":"…"}
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use noc_protocol::rts::{DataRequest, DeletedUser, PasswordReset, ProvisionedUser, Secret, UserList};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::engine::{AgentStatus, EngineEvent};
use crate::error::AgentError;
use crate::rts_client::DataChannel;
use crate::smtp::{Mailer, Welcome, welcome_message};
use crate::stats::{AgentStats, inc};

/// Largest request line.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a command waits for the RTS session when the agent is (re)connecting.
const SESSION_WAIT: Duration = Duration::from_secs(15);

/// A request on the control socket.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "Op", deny_unknown_fields)]
pub enum ControlRequest {
    #[serde(rename_all = "PascalCase")]
    UserAdd {
        email: String,
        first_name: String,
        last_name: String,
        /// `None`: the relay generates one.
        #[serde(default)]
        password: Option<String>,
        /// `Some(false)`: no welcome mail for this user.
        #[serde(default)]
        welcome: Option<bool>,
    },
    UserList,
    #[serde(rename_all = "PascalCase")]
    UserDelete {
        email: String,
    },
    #[serde(rename_all = "PascalCase")]
    UserResetPassword {
        email: String,
        #[serde(default)]
        password: Option<String>,
    },
    Status,
    /// Certificate requests waiting for an administrator.
    CaPending,
    /// Every certificate request and where it stands (issued, revoked, …).
    CaList,
    #[serde(rename_all = "PascalCase")]
    CaApprove {
        request_id: String,
    },
    #[serde(rename_all = "PascalCase")]
    CaReject {
        request_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
}

impl std::fmt::Debug for ControlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlRequest::UserAdd { email, .. } => write!(f, "UserAdd({email})"),
            ControlRequest::UserList => f.write_str("UserList"),
            ControlRequest::UserDelete { email } => write!(f, "UserDelete({email})"),
            ControlRequest::UserResetPassword { email, .. } => write!(f, "UserResetPassword({email})"),
            ControlRequest::Status => f.write_str("Status"),
            ControlRequest::CaPending => f.write_str("CaPending"),
            ControlRequest::CaList => f.write_str("CaList"),
            ControlRequest::CaApprove { request_id } => write!(f, "CaApprove({request_id})"),
            ControlRequest::CaReject { request_id, .. } => write!(f, "CaReject({request_id})"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ControlResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub result: serde_json::Value,
}

/// What the control server needs.
#[derive(Clone)]
pub struct ControlCtx {
    pub config: Arc<AgentConfig>,
    pub data: DataChannel,
    pub mailer: Mailer,
    pub fingerprint: String,
    pub engine: mpsc::Sender<EngineEvent>,
    pub stats: Arc<AgentStats>,
    pub enrollment: crate::enroll::Enrollment,
}

/// Binds the socket (replacing a stale one) and serves until `shutdown`.
pub async fn serve(path: &Path, ctx: ControlCtx, shutdown: CancellationToken) -> Result<(), AgentError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::Control(format!("{}: another agent is running here", path.display())));
        }
        std::fs::remove_file(path).map_err(|e| AgentError::Control(format!("{}: {e}", path.display())))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| AgentError::Control(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| AgentError::Control(format!("{}: {e}", path.display())))?;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = std::fs::remove_file(path);
                return Ok(());
            }
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let ctx = ctx.clone();
                tokio::spawn(async move { handle_conn(stream, ctx).await });
            }
        }
    }
}

async fn handle_conn(stream: UnixStream, ctx: ControlCtx) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let response = match reader.read_line(&mut line).await {
        Err(e) => failure(format!("reading the request: {e}")),
        Ok(_) => match serde_json::from_str::<ControlRequest>(line.trim()) {
            Err(e) => failure(format!("bad request: {e}")),
            Ok(req) => {
                tracing::debug!(request = ?req, "control request");
                match handle(req, &ctx).await {
                    Ok(result) => ControlResponse { ok: true, error: None, result },
                    Err(e) => failure(e.to_string()),
                }
            }
        },
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}

fn failure(e: String) -> ControlResponse {
    ControlResponse { ok: false, error: Some(e), result: serde_json::Value::Null }
}

async fn handle(req: ControlRequest, ctx: &ControlCtx) -> Result<serde_json::Value, AgentError> {
    match req {
        ControlRequest::UserAdd { email, first_name, last_name, password, welcome } => {
            let provisioned: ProvisionedUser = ctx
                .data
                .request_when_open(
                    &DataRequest::ProvisionUser {
                        email,
                        password: password.clone().map(Secret),
                        first_name: first_name.clone(),
                        last_name: last_name.clone(),
                    },
                    SESSION_WAIT,
                )
                .await?;
            let effective = password.or_else(|| provisioned.password.clone());
            let w = &ctx.config.welcome;
            let mut welcome_sent = false;
            let mut welcome_error = None;
            if w.enabled && welcome.unwrap_or(true) {
                let name = format!("{first_name} {last_name}");
                let message = welcome_message(&Welcome {
                    from: &w.from,
                    subject: &w.subject,
                    to_name: &name,
                    to_email: &provisioned.email,
                    password: if w.include_password { effective.as_deref() } else { None },
                    activation_url: &provisioned.activation_url,
                    relay_url: &ctx.config.relay.url,
                    fingerprint: &ctx.fingerprint,
                })?;
                match ctx.mailer.send(message).await {
                    Ok(()) => {
                        welcome_sent = true;
                        inc(&ctx.stats.welcome_mails);
                    }
                    Err(e) => welcome_error = Some(e.to_string()),
                }
            }
            // The administrator sees a generated password only if the user will not get it
            // in the welcome mail.
            let show = provisioned.password.is_some() && !(welcome_sent && w.include_password);
            Ok(json!({
                "UserId": provisioned.user_id,
                "Email": provisioned.email,
                "ActivationUrl": provisioned.activation_url,
                "Password": if show { provisioned.password } else { None },
                "WelcomeSent": welcome_sent,
                "WelcomeError": welcome_error,
                "Fingerprint": ctx.fingerprint,
                "UsedUsers": provisioned.used_users,
                "MaxUsers": provisioned.max_users,
            }))
        }
        ControlRequest::UserList => {
            let list: UserList = ctx.data.request_when_open(&DataRequest::ListUsers {}, SESSION_WAIT).await?;
            Ok(serde_json::to_value(list).unwrap_or_default())
        }
        ControlRequest::UserDelete { email } => {
            let d: DeletedUser = ctx.data.request_when_open(&DataRequest::DeleteUser { email }, SESSION_WAIT).await?;
            Ok(serde_json::to_value(d).unwrap_or_default())
        }
        ControlRequest::UserResetPassword { email, password } => {
            let r: PasswordReset = ctx
                .data
                .request_when_open(&DataRequest::ResetPassword { email, password: password.map(Secret) }, SESSION_WAIT)
                .await?;
            Ok(serde_json::to_value(r).unwrap_or_default())
        }
        ControlRequest::Status => {
            let (tx, rx) = oneshot::channel();
            ctx.engine
                .send(EngineEvent::Status(tx))
                .await
                .map_err(|_| AgentError::Control("the agent is stopping".into()))?;
            let status: AgentStatus = rx.await.map_err(|_| AgentError::Control("the agent is stopping".into()))?;
            Ok(serde_json::to_value(status).unwrap_or_default())
        }
        ControlRequest::CaPending => Ok(serde_json::to_value(ctx.enrollment.pending()?).unwrap_or_default()),
        ControlRequest::CaList => Ok(serde_json::to_value(ctx.enrollment.all()?).unwrap_or_default()),
        ControlRequest::CaApprove { request_id } => {
            Ok(serde_json::to_value(ctx.enrollment.approve(&request_id)?).unwrap_or_default())
        }
        ControlRequest::CaReject { request_id, reason } => {
            let reason = reason.unwrap_or_default();
            Ok(serde_json::to_value(ctx.enrollment.reject(&request_id, &reason)?).unwrap_or_default())
        }
    }
}

/// Sends one request to a running agent and returns its result.
pub async fn call(socket: &Path, req: &ControlRequest) -> Result<serde_json::Value, AgentError> {
    let stream = UnixStream::connect(socket).await.map_err(|e| {
        AgentError::Control(format!("{}: {e} (is `ves-agent run` running with this configuration?)", socket.display()))
    })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req).map_err(|e| AgentError::Control(e.to_string()))?;
    text.push('\n');
    write.write_all(text.as_bytes()).await.map_err(|e| AgentError::Control(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await.map_err(|e| AgentError::Control(e.to_string()))?;
    let resp: ControlResponse =
        serde_json::from_str(line.trim()).map_err(|e| AgentError::Control(format!("bad response: {e}")))?;
    if resp.ok { Ok(resp.result) } else { Err(AgentError::Control(resp.error.unwrap_or_default())) }
}
