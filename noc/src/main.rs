//! `noc`: the relay node and its bootstrap administration.
//!
//! A thin shell: parsing, logging, signals. Everything else is in `noc-app`.

mod json_log;

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use noc_app::config::LogFormat;
use noc_app::store_admin::Admin;
use noc_app::{Config, Node};

#[derive(Parser)]
#[command(name = "noc", version, about = "Carrier-grade push relay (NOC)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// TOML configuration file (see examples/relay/noc.toml). Keys can also be set with
    /// NOC_<SECTION>__<KEY> environment variables.
    #[arg(long, value_name = "FILE", env = "NOC_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Directory of the embedded store and generated certificate [default: ./noc-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a relay node.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Public HTTPS listener (RTS, activation) [default: 0.0.0.0:8443].
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<SocketAddr>,
        /// Device-channel TLS listener [default: 0.0.0.0:8444].
        #[arg(long, value_name = "ADDR")]
        device_listen: Option<SocketAddr>,
        /// Plain-HTTP admin listener: /healthz, /readyz, /metrics [default: 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<SocketAddr>,
        /// HTTPS listener of the operators' consoles and admin API [default: 127.0.0.1:8445].
        #[arg(long, value_name = "ADDR")]
        console_listen: Option<SocketAddr>,
        /// This node's id in a cluster [default: $HOSTNAME or random].
        #[arg(long, value_name = "ID")]
        node_id: Option<String>,
    },
    /// Bootstrap administration on a node's store (works while the node runs).
    Admin {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Validate a configuration and print the effective values as TOML.
    Config {
        #[command(flatten)]
        common: Common,
    },
    /// The device certification authority: client certificates for devices
    /// (docs/certificates.md).
    #[command(subcommand)]
    DeviceCa(DeviceCaCommand),
    /// Exit 0 when a node's admin listener answers `/healthz` (a container's health check;
    /// no HTTP client needed in the image).
    Health {
        /// The node's admin listener.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Enterprise licenses (white paper §3.4).
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Operator accounts: NOC administrators, customer-service representatives, auditors.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Carrier approval of MSISDNs (with accounts.msisdn_approval = "list").
    Msisdn {
        #[command(subcommand)]
        command: MsisdnCommand,
    },
    /// Apply pending schema migrations (the node also does this at start).
    Migrate,
    /// Show the newest audit-log entries (who did what, when).
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator (the first noc-admin is bootstrapped so). Prints the TOTP secret,
    /// its otpauth:// URI and ten recovery codes, once: enroll an authenticator app now.
    Create {
        #[arg(long)]
        name: String,
        /// noc-admin, csr or auditor.
        #[arg(long, value_parser = ["noc-admin", "csr", "auditor"])]
        role: String,
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List operators.
    List,
}

#[derive(Subcommand)]
enum LicenseCommand {
    /// Create a license.
    Create {
        #[arg(long)]
        name: String,
        /// License password (the VES administrator enters it at installation).
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Seats: users that may be provisioned over all VES installations of the license.
        #[arg(long)]
        max_users: u32,
        /// The license expires this many days from now [default: never].
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List licenses.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a license: its logins are refused at once, and the nodes close its live VES
    /// and device sessions within accounts.license_check_interval_seconds.
    Suspend {
        #[arg(long)]
        name: String,
    },
    /// Lift a suspension.
    Resume {
        #[arg(long)]
        name: String,
    },
    /// Turn features of a license on or off.
    SetFeatures {
        #[arg(long)]
        name: String,
        /// Let users recover a forgotten password by answering a secret question (white
        /// paper §9.2.2). Weaker than the mailed one-time link, which always works: off by
        /// default.
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
        secret_question_recovery: Option<bool>,
        /// Devices must authenticate with a client certificate and activate with a
        /// certificate request; their credential no longer opens a session
        /// (docs/certificates.md). Off by default.
        #[arg(long, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "on|off")]
        require_client_certificates: Option<bool>,
        /// Features the license's users get (comma-separated): browse_pc, browse_pda,
        /// browse_wap, constant_sync, alerts. All are on for a new license.
        #[arg(long, value_delimiter = ',', value_parser = feature, value_name = "FEATURES")]
        enable: Vec<noc_app::store_admin::Feature>,
        /// Features taken away (comma-separated, as for --enable).
        #[arg(long, value_delimiter = ',', value_parser = feature, value_name = "FEATURES")]
        disable: Vec<noc_app::store_admin::Feature>,
    },
    /// Set a new license password and revoke every license-id token issued so far (VES
    /// installations already registered keep connecting; suspend the license to stop them).
    SetPassword {
        #[arg(long)]
        name: String,
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `--password` or the first line of standard input.
fn password_arg(password: Option<String>, from_stdin: bool) -> Result<String> {
    match (password, from_stdin) {
        (Some(p), _) => Ok(p),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            Ok(line.trim_end_matches(['\r', '\n']).to_string())
        }
        (None, false) => bail!("give --password or --password-stdin"),
    }
}

#[derive(Subcommand)]
enum DeviceCaCommand {
    /// Make a new device CA: tls.crt and tls.key in DIR (the layout of a Kubernetes TLS
    /// Secret; `[device_ca]` cert_path and key_path name them). Never overwrites.
    Create {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "NOC device CA")]
        name: String,
    },
    /// Check a device CA's files as a node loads them; print its expiry and fingerprint.
    Show {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
enum MsisdnCommand {
    /// Approve an MSISDN for account activation.
    Approve { msisdn: String },
}

fn load(common: &Common) -> Result<Config> {
    let mut config = Config::load(common.config.as_deref())?;
    if let Some(d) = &common.data_dir {
        config.data_dir = d.clone();
    }
    Ok(config)
}

/// Logs to standard error, `RUST_LOG` filtering (default `info`), as text or as JSON lines
/// that name the node (`node`: the relay's node id; the one-shot commands have none).
fn init_logging(format: LogFormat, node: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.event_format(json_log::JsonLines::new(node.unwrap_or("-"))).init(),
    }
}

/// `serve`'s configuration: the file, then the command line's overrides, validated, with
/// the node id settled once (a random one must be the same in logs and in the cluster).
fn serve_config(
    common: &Common,
    http_listen: Option<SocketAddr>,
    device_listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    console_listen: Option<SocketAddr>,
    node_id: Option<String>,
) -> Result<Config> {
    let mut config = load(common)?;
    if let Some(a) = http_listen {
        config.listen.http = a;
    }
    if let Some(a) = device_listen {
        config.listen.device = a;
    }
    if let Some(a) = admin_listen {
        config.listen.admin = a;
    }
    if let Some(a) = console_listen {
        config.listen.console = a;
    }
    if node_id.is_some() {
        config.node_id = node_id;
    }
    config.node_id = Some(config.node_id());
    config.validate()?;
    Ok(config)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // `serve` logs as its configuration says (read once, here); the one-shot commands as text.
    let served = match &cli.command {
        Command::Serve { common, http_listen, device_listen, admin_listen, console_listen, node_id } => {
            Some(serve_config(common, *http_listen, *device_listen, *admin_listen, *console_listen, node_id.clone()))
        }
        _ => None,
    };
    match &served {
        Some(Ok(config)) => init_logging(config.log.format, config.node_id.as_deref()),
        _ => init_logging(LogFormat::Text, None),
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.command {
        Command::Serve { .. } => serve(&rt, served.context("serve without its configuration")??),
        Command::Admin { common, command } => {
            let config = load(&common)?;
            rt.block_on(admin(config, command))
        }
        Command::Health { admin } => health(admin),
        Command::DeviceCa(DeviceCaCommand::Create { out, name }) => {
            let (cert, key) = noc_app::device_ca::create_files(&out, &name)?;
            println!("device CA certificate {}\n              key {} (keep it secret)", cert.display(), key.display());
            println!(
                "a cluster's nodes: kubectl create secret tls noc-device-ca --cert={} --key={}",
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::DeviceCa(DeviceCaCommand::Show { cert, key }) => {
            print!("{}", noc_app::device_ca::describe(&cert, &key)?);
            Ok(())
        }
        Command::Config { common } => {
            let config = load(&common)?;
            config.validate()?;
            print!("{}", toml::to_string_pretty(&config.redacted())?);
            Ok(())
        }
    }
}

fn health(admin: SocketAddr) -> Result<()> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, timeout).with_context(|| format!("{admin}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.take(4096).read_to_end(&mut answer)?;
    let status = String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        println!("ok");
        Ok(())
    } else {
        anyhow::bail!("{admin}/healthz answered {status:?}")
    }
}

fn serve(rt: &tokio::runtime::Runtime, config: Config) -> Result<()> {
    let data_dir = config.data_dir.clone();
    let mut node = Node::start(config).context("starting the relay")?;
    println!("noc relay {} (node {})", env!("CARGO_PKG_VERSION"), node.node_id);
    println!("  data dir       {}", data_dir.display());
    println!("  public HTTPS   {} (listening on {})", node.public_url, node.http_addr);
    println!("  device channel {}", node.device_addr);
    println!("  admin HTTP     http://{} (/healthz /readyz /metrics)", node.admin_addr);
    println!(
        "  TLS certificate {}{}",
        node.cert_path.display(),
        if node.cert_generated { " (self-signed, generated now)" } else { "" }
    );
    println!("  SHA-256 fingerprint {}", node.cert_fingerprint);
    let stopper = node.stopper();
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    tracing::info!("signal received: draining");
    if let Some(stop) = stopper {
        let _ = stop.send(());
    }
    node.wait();
    Ok(())
}

async fn admin(config: Config, command: AdminCommand) -> Result<()> {
    let admin = Admin::open(&config).await?;
    match command {
        AdminCommand::License { command } => match command {
            LicenseCommand::Create { name, password, password_stdin, max_users, expires_in_days } => {
                let password = password_arg(password, password_stdin)?;
                let l = admin.create_license(&name, &password, max_users, expires_in_days).await?;
                println!("created license {} ({}) with {} seats", l.name, l.id, l.max_users);
            }
            LicenseCommand::List { json } => {
                let licenses = admin.licenses().await?;
                if json {
                    let rows: Vec<_> = licenses
                        .iter()
                        .map(|l| {
                            serde_json::json!({
                                "Id": l.id, "Name": l.name, "MaxUsers": l.max_users, "UsedUsers": l.used_users,
                                "ExpiresAt": l.expires_at, "Suspended": l.suspended,
                                "SecretQuestionRecovery": l.secret_question_recovery,
                                "RequireClientCertificates": l.require_client_certificates,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!("{:<24} {:>6} {:>6} {:<10} ID", "NAME", "USED", "MAX", "STATE");
                    for l in licenses {
                        let state = if l.suspended { "suspended" } else { "active" };
                        println!("{:<24} {:>6} {:>6} {:<10} {}", l.name, l.used_users, l.max_users, state, l.id);
                    }
                }
            }
            LicenseCommand::Suspend { name } => {
                admin.set_suspended(&name, true).await?;
                println!("license {name} suspended");
            }
            LicenseCommand::Resume { name } => {
                admin.set_suspended(&name, false).await?;
                println!("license {name} resumed");
            }
            LicenseCommand::SetFeatures {
                name,
                secret_question_recovery,
                require_client_certificates,
                enable,
                disable,
            } => {
                if secret_question_recovery.is_none()
                    && require_client_certificates.is_none()
                    && enable.is_empty()
                    && disable.is_empty()
                {
                    anyhow::bail!(
                        "say what to change: --secret-question-recovery, --require-client-certificates, --enable or --disable"
                    );
                }
                if let Some(on) = require_client_certificates {
                    admin.set_require_client_certificates(&name, on).await?;
                    println!("license {name}: client certificates {}", if on { "required" } else { "optional" });
                }
                if let Some(on) = secret_question_recovery {
                    admin.set_secret_question_recovery(&name, on).await?;
                    println!("license {name}: secret-question recovery {}", if on { "on" } else { "off" });
                }
                if !enable.is_empty() || !disable.is_empty() {
                    let license = admin.set_license_features(&name, &enable, &disable).await?;
                    println!("license {name}: features {}", license.features.describe());
                }
            }
            LicenseCommand::SetPassword { name, password, password_stdin } => {
                let password = password_arg(password, password_stdin)?;
                let (_, revoked) = admin.set_license_password(&name, &password).await?;
                println!("license {name}: password changed, {revoked} license-id token(s) revoked");
            }
        },
        AdminCommand::Operator { command: OperatorCommand::Create { name, role, password, password_stdin } } => {
            let password = password_arg(password, password_stdin)?;
            let role = noc_app::store_admin::OperatorRole::parse(&role).context("role")?;
            let e = admin.create_operator(&name, role, &password).await?;
            println!("created operator {} ({})", e.operator.name, e.operator.role.as_str());
            println!("TOTP secret (enter it in an authenticator app): {}", e.totp_secret);
            println!("otpauth URI: {}", e.totp_uri);
            println!("recovery codes (each works once; keep them safe, they are not shown again):");
            for code in &e.recovery_codes {
                println!("  {code}");
            }
        }
        AdminCommand::Operator { command: OperatorCommand::List } => {
            println!("{:<32} {:<10} {:<9} CREATED BY", "NAME", "ROLE", "STATE");
            for o in admin.operators().await? {
                let state = if o.disabled { "disabled" } else { "active" };
                println!("{:<32} {:<10} {:<9} {}", o.name, o.role.as_str(), state, o.created_by);
            }
        }
        AdminCommand::Msisdn { command: MsisdnCommand::Approve { msisdn } } => {
            admin.approve_msisdn(&msisdn).await?;
            println!("MSISDN {msisdn} approved");
        }
        AdminCommand::Migrate => {
            // Opening the store applied whatever was pending.
            println!("schema up to date");
        }
        AdminCommand::Audit { limit } => {
            for e in admin.audit(limit).await? {
                println!("{} {} {} {} {}", e.at, e.actor, e.action, e.subject, e.detail);
            }
        }
    }
    Ok(())
}

/// A feature's name on the command line.
fn feature(s: &str) -> Result<noc_app::store_admin::Feature, String> {
    noc_app::store_admin::Feature::parse(s.trim()).ok_or_else(|| {
        let names: Vec<_> = noc_app::store_admin::Feature::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown feature {s:?}; one of {}", names.join(", "))
    })
}
