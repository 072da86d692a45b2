//! `ves-agent`: the enterprise server agent's command line. Thin: parsing and printing;
//! the logic is in the `ves_agent` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ves_agent::{AgentConfig, AgentError, ControlRequest, RunOptions};

#[derive(Parser)]
#[command(name = "ves-agent", version, about = "Enterprise server agent of the NOC push relay")]
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
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "ves_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ves-agent: error: {e:#}");
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
                let r = ves_agent::register(&config).await?;
                println!("registered with {} ({} of {} users)", config.relay.url, r.used_users, r.max_users);
                println!("VES key fingerprint (users pin this): {}", r.fingerprint);
            }
            Command::Fingerprint => println!("{}", ves_agent::fingerprint(&config)?),
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
                ves_agent::run(config, RunOptions::default(), stop).await?;
            }
            Command::Status => print(control(&config, ControlRequest::Status).await?),
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
                print(control(&config, req).await?);
            }
        }
        Ok(())
    })
}

async fn control(config: &AgentConfig, req: ControlRequest) -> anyhow::Result<serde_json::Value> {
    let socket = ves_agent::control_socket(config);
    ves_agent::call(&socket, &req).await.with_context(|| format!("control socket {}", socket.display()))
}

fn print(v: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()));
}
