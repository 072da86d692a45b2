//! `ves-agent`: the enterprise server agent's command line. Thin: parsing and printing;
//! the logic is in the `noc_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use clap::{Parser, Subcommand};
use noc_agent::{AgentConfig, AgentError, ControlRequest, RunOptions};
use noc_endpoint::cli::{EXIT_STDOUT_CLOSED, is_stdout_closed};

/// `println!` that returns an error instead of panicking when standard output is closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        noc_endpoint::cli::print_line(format_args!($($arg)*))?
    };
}

#[derive(Parser)]
#[command(
    name = "ves-agent",
    version,
    about = "Enterprise server agent of the NOC push relay",
    after_help = "Exit status: 0 success; 1 error; 3 another agent with this GUID took over the RTS \
                  session; 4 not registered; 141 standard output was closed by its reader (as for a \
                  program killed by SIGPIPE)."
)]
struct Cli {
    /// Configuration file (TOML; see examples/agent/ves-agent.toml).
    #[arg(long, short, global = true, env = "VES_AGENT_CONFIG", default_value = "ves-agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in with the license name and password; store the license-id token.
    Register,
    /// Run: RTS session, Maildir push, SMTP submission, local control socket.
    Run,
    /// Print the VES key fingerprint that users pin.
    Fingerprint,
    /// Show the running agent's connection, devices and counters (JSON).
    Status,
    /// Manage users through the running agent.
    #[command(subcommand)]
    User(UserCommand),
    /// Device certificate requests waiting for approval (enterprise CA profiles).
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// List the requests waiting for an administrator (JSON).
    Pending,
    /// List every request and where it stands: issued, revoked, rejected… (JSON).
    List,
    /// Approve a request: it goes to the profile's certification authority.
    Approve { request_id: String },
    /// Refuse a request; the device is told the reason.
    Reject {
        request_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Provision a user and send the welcome mail.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
        /// The password; without it the relay generates one.
        #[arg(long, env = "VES_AGENT_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Do not send the welcome mail.
        #[arg(long)]
        no_welcome: bool,
    },
    /// List this agent's users.
    List,
    /// Delete a user (revokes the user's devices).
    Delete {
        #[arg(long)]
        email: String,
    },
    /// Set a new password (revokes the user's devices); without --password one is generated.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long, env = "VES_AGENT_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "noc_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has all it wanted (`| head`): no message, the status of SIGPIPE.
        Err(e) if is_stdout_closed(e.as_ref()) => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ves-agent: error: {}", noc_endpoint::cli::report(e.as_ref()));
            match e.downcast_ref::<AgentError>() {
                Some(AgentError::Replaced(_)) => ExitCode::from(3),
                Some(AgentError::NotRegistered) => ExitCode::from(4),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig::load(&cli.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Register => {
                let r = noc_agent::register(&config).await?;
                outln!("registered with {} ({} of {} users)", config.relay.url, r.used_users, r.max_users);
                outln!("VES key fingerprint (users pin this): {}", r.fingerprint);
            }
            Command::Fingerprint => outln!("{}", noc_agent::fingerprint(&config)?),
            Command::Run => {
                let stop = tokio_util::sync::CancellationToken::new();
                let s = stop.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    s.cancel();
                });
                #[cfg(unix)]
                {
                    let s = stop.clone();
                    tokio::spawn(async move {
                        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        {
                            term.recv().await;
                            s.cancel();
                        }
                    });
                }
                noc_agent::run(config, RunOptions::default(), stop).await?;
            }
            Command::Status => print(control(&config, ControlRequest::Status).await?)?,
            Command::User(u) => {
                let req = match u {
                    UserCommand::Add { email, first_name, last_name, password, no_welcome } => {
                        ControlRequest::UserAdd { email, first_name, last_name, password, welcome: Some(!no_welcome) }
                    }
                    UserCommand::List => ControlRequest::UserList,
                    UserCommand::Delete { email } => ControlRequest::UserDelete { email },
                    UserCommand::ResetPassword { email, password } => {
                        ControlRequest::UserResetPassword { email, password }
                    }
                };
                print(control(&config, req).await?)?;
            }
            Command::Ca(c) => {
                let req = match c {
                    CaCommand::Pending => ControlRequest::CaPending,
                    CaCommand::List => ControlRequest::CaList,
                    CaCommand::Approve { request_id } => ControlRequest::CaApprove { request_id },
                    CaCommand::Reject { request_id, reason } => ControlRequest::CaReject { request_id, reason },
                };
                print(control(&config, req).await?)?;
            }
        }
        Ok(())
    })
}

/// One request to the running agent. Its errors already name the socket.
async fn control(config: &AgentConfig, req: ControlRequest) -> Result<serde_json::Value, AgentError> {
    noc_agent::call(&noc_agent::control_socket(config), &req).await
}

fn print(v: serde_json::Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()));
    Ok(())
}
