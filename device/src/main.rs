//! `noc-device`: the device client's command line. Thin: parsing and printing only; the
//! logic is in the `noc_device` library.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use noc_crypto::{CryptoError, Fingerprint, Suite};
use noc_device::cryptotool::{self, SealOptions};
use noc_device::{Activation, Device, DeviceError, RunOptions};
use noc_endpoint::cli::{EXIT_STDOUT_CLOSED, is_stdout_closed};
use noc_endpoint::rfc822::{self, Draft};

/// `println!` that returns an error instead of panicking when standard output is closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        noc_endpoint::cli::print_line(format_args!($($arg)*))?
    };
}

#[derive(Parser)]
#[command(
    name = "noc-device",
    version,
    about = "Device client of the NOC push relay: end-to-end encrypted mail and PIM push",
    after_help = "Exit status: 0 success; 1 error; 2 `run --timeout-seconds` ended before the --until \
                  conditions were met; 3 `crypto open`: the MAC or tag does not match; 141 standard \
                  output was closed by its reader (as for a program killed by SIGPIPE)."
)]
struct Cli {
    /// State directory (device.json 0600, device.db, ca.pem).
    #[arg(long, global = true, env = "NOC_DEVICE_DIR", default_value = "noc-device")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activate this device (HTTPS POST /device/v1/activate) and store its credential.
    Activate(ActivateArgs),
    /// Hold the connection to the relay: receive items, send the outbox.
    Run(RunArgs),
    /// Compose a plain-text mail into the outbox (sent by `run`, through the VES's SMTP).
    Send(SendArgs),
    /// List received items, or print one.
    Inbox {
        /// Print the raw body of this item (the number in the first column).
        #[arg(long)]
        show: Option<i64>,
        /// One JSON object per item.
        #[arg(long)]
        json: bool,
    },
    /// List composed mail not yet confirmed by the VES.
    Outbox,
    /// Show the activation and counters.
    Status,
    /// Single-frame crypto for checking other implementations (like `openssl enc`).
    #[command(subcommand)]
    Crypto(CryptoCommand),
    /// Enterprise certificates from the enterprise's own CA, through the VES (seed 002).
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Ask for a certificate under a CA profile; `run` carries the enrollment on (the VES
    /// sends the subject, the device makes the key and the request, the VES answers).
    Enroll {
        #[arg(long)]
        profile: String,
    },
    /// Every enrollment of this device and where it stands.
    List,
}

#[derive(Args)]
struct ActivateArgs {
    /// The relay's public URL, e.g. https://relay.example.net:8443
    #[arg(long)]
    relay: String,
    /// CA certificate (PEM) to trust for the relay; without it, the public web PKI.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The MSISDN bound to the account at account activation.
    #[arg(long)]
    msisdn: String,
    /// The account password (from the welcome e-mail).
    #[arg(long, env = "NOC_DEVICE_PASSWORD", hide_env_values = true)]
    password: String,
    /// The VES key fingerprint from the welcome e-mail (64 hex digits; spaces allowed).
    #[arg(long)]
    ves_fingerprint: String,
    /// Your e-mail address (the From of mail composed here).
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Suites to offer, preferred first. Adding legacy-2005 allows a downgrade by the relay.
    #[arg(long, value_delimiter = ',', default_value = "modern")]
    suites: Vec<String>,
    /// Also ask for a client certificate: a key pair is made here and only a certificate
    /// request leaves (kept as client-key.pem, client-cert.pem, management-root.pem).
    #[arg(long)]
    certificate: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Connect to this address instead of the activation's device host and port.
    #[arg(long)]
    connect_to: Option<std::net::SocketAddr>,
    /// Exit once the inbox holds at least this many items.
    #[arg(long)]
    until_inbox: Option<usize>,
    /// Exit once the outbox is empty (every composed mail confirmed by the VES).
    #[arg(long)]
    until_outbox_empty: bool,
    /// Exit after this many seconds (non-zero exit if an --until condition was not met).
    #[arg(long)]
    timeout_seconds: Option<u64>,
    /// Resend unacknowledged frames after this many seconds.
    #[arg(long, default_value_t = 30)]
    resend_after_seconds: u64,
    /// Longest delay between reconnection attempts.
    #[arg(long, default_value_t = 300)]
    reconnect_max_seconds: u64,
}

#[derive(Args)]
struct SendArgs {
    #[arg(long, required = true, value_delimiter = ',')]
    to: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    cc: Vec<String>,
    #[arg(long, value_delimiter = ',')]
    bcc: Vec<String>,
    #[arg(long, default_value = "")]
    subject: String,
    /// The text; read from standard input when absent.
    #[arg(long)]
    body: Option<String>,
}

/// Key material: legacy-2005 takes the 16-byte session key K (what `derive` prints) and a
/// 16-byte IV; modern takes a 32-byte ChaCha20-Poly1305 direction key (k_dev->ves or
/// k_ves->dev) and the frame counter.
#[derive(Subcommand)]
enum CryptoCommand {
    /// Read raw plaintext on stdin, write the frame as hex on stdout.
    Seal {
        #[arg(long)]
        suite: Suite,
        /// legacy-2005: 32 hex digits (K); modern: 64 hex digits (a direction key).
        #[arg(long)]
        key: String,
        /// legacy-2005 only: 32 hex digits; random when omitted.
        #[arg(long)]
        iv: Option<String>,
        /// modern only: the frame counter.
        #[arg(long, default_value_t = 0)]
        counter: u64,
        /// modern only: mark the frame as the final one of its direction.
        #[arg(long)]
        r#final: bool,
    },
    /// Read a frame as hex on stdin, write the plaintext as hex on stdout. Exits non-zero
    /// when the MAC (legacy-2005) or tag (modern) does not match.
    Open {
        #[arg(long)]
        suite: Suite,
        #[arg(long)]
        key: String,
        /// Refuse a plaintext longer than this many bytes (exit status 1). legacy-2005
        /// frames are deflated, and inflating stops at this bound, so a small hostile
        /// frame cannot expand into gigabytes; raise it to open a larger legitimate one.
        #[arg(long, default_value_t = noc_crypto::DEFAULT_MAX_PLAINTEXT, value_parser = clap::value_parser!(usize))]
        max_plaintext_bytes: usize,
    },
    /// legacy-2005: print the 128-bit key K = X9.63-KDF(x(4·d·Q)) as hex.
    Derive {
        #[arg(long)]
        suite: Suite,
        /// Private scalar d, big-endian hex (at most 36 bytes).
        #[arg(long)]
        private: String,
        /// Peer public key Q, uncompressed SEC1 point (04 || X || Y), hex.
        #[arg(long)]
        peer_public: String,
    },
    /// Print the public key of a private key as hex (legacy-2005: the uncompressed point
    /// of a scalar; modern: the X25519 public key of a 32-byte secret).
    Public {
        #[arg(long)]
        suite: Suite,
        #[arg(long)]
        private: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "noc_device=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(code) => code,
        // The reader has all it wanted (`| head`): no message, the status of SIGPIPE.
        Err(e) if is_stdout_closed(e.as_ref()) => ExitCode::from(EXIT_STDOUT_CLOSED),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "noc-device: error: {}", noc_endpoint::cli::report(e.as_ref()));
            let auth = e
                .downcast_ref::<DeviceError>()
                .is_some_and(|d| matches!(d, DeviceError::Crypto(CryptoError::AuthenticationFailed)));
            if auth { ExitCode::from(3) } else { ExitCode::FAILURE }
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crypto(c) => crypto(c),
        Command::Activate(a) => {
            let rt = runtime()?;
            let suites = a.suites.iter().map(|s| s.parse::<Suite>()).collect::<Result<Vec<_>, _>>()?;
            let activation = Activation {
                relay_url: a.relay,
                ca_file: a.ca_file,
                msisdn: a.msisdn,
                password: a.password,
                device_name: a.name,
                device_type: None,
                ves_fingerprint: Fingerprint::parse(&a.ves_fingerprint)?,
                email: a.email,
                suites,
                certificate: a.certificate,
            };
            let state = rt.block_on(noc_device::activate(&cli.state_dir, &activation))?;
            outln!("activated device {} for {} ({})", state.device_id, state.full_name, state.service_type);
            outln!("device channel: {}:{}", state.device_host, state.device_port);
            outln!("pinned VES key: {}", state.ves_fingerprint);
            if state.has_client_certificate {
                let dir = cli.state_dir.display();
                outln!(
                    "client certificate: {dir}/{} (key {dir}/{}, management root {dir}/{})",
                    noc_device::state::CLIENT_CERT_FILE,
                    noc_device::state::CLIENT_KEY_FILE,
                    noc_device::state::MANAGEMENT_ROOT_FILE
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(r) => run(&cli.state_dir, r),
        Command::Send(s) => {
            let device = Device::open(&cli.state_dir)?;
            let text = match s.body {
                Some(b) => b,
                None => {
                    let mut t = String::new();
                    std::io::stdin().read_to_string(&mut t).context("reading the body from stdin")?;
                    t
                }
            };
            let draft = Draft { from: None, to: s.to, cc: s.cc, subject: s.subject, text };
            let id = device.compose_mail(&draft, &s.bcc)?;
            outln!("queued {id} (sent while `noc-device run` is connected)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inbox { show, json } => {
            let device = Device::open(&cli.state_dir)?;
            let items = device.inbox()?;
            if let Some(row) = show {
                let item = items.iter().find(|i| i.row == row).with_context(|| format!("no item {row}"))?;
                noc_endpoint::cli::print(&item.body)?;
                return Ok(ExitCode::SUCCESS);
            }
            for i in &items {
                let from = rfc822::header(&i.body, "From").unwrap_or_default();
                let subject =
                    rfc822::header(&i.body, "Subject").unwrap_or_else(|| i.header.name.clone().unwrap_or_default());
                if json {
                    let v = serde_json::json!({
                        "Row": i.row, "Id": i.id.to_string(), "Type": i.header.item_type,
                        "ReceivedAtMs": i.received_ms, "From": from, "Subject": subject,
                        "Body": String::from_utf8_lossy(&i.body),
                    });
                    outln!("{v}");
                } else {
                    outln!(
                        "{:>4}  {}  {:<8}  {:<30}  {}",
                        i.row,
                        rfc822::date(i.received_ms),
                        i.header.item_type,
                        from,
                        subject
                    );
                }
            }
            if items.is_empty() && !json {
                outln!("(inbox empty)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Enroll { profile }) => {
            let device = Device::open(&cli.state_dir)?;
            let record = device.enroll(&profile)?;
            outln!("enrollment {} under profile {}: requested (run the device to go on)", record.request_id, profile);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::List) => {
            for r in noc_device::enroll::list(&cli.state_dir)? {
                let (chain, key) = noc_device::enroll::certificate_files(&cli.state_dir, &r.profile);
                let files = match r.state.as_str() {
                    "issued" => format!("  {} {}", chain.display(), key.display()),
                    _ => String::new(),
                };
                let message = r.message.map(|m| format!("  ({m})")).unwrap_or_default();
                outln!("{}  {}  {}{message}{files}", r.request_id, r.profile, r.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox => {
            let device = Device::open(&cli.state_dir)?;
            for o in device.outbox()? {
                let body = noc_endpoint::Item::decode(&o.encoded).map(|i| i.body).unwrap_or_default();
                outln!(
                    "{}  {}  to {}  {}",
                    o.id,
                    rfc822::date(o.created_ms),
                    rfc822::header(&body, "To").unwrap_or_default(),
                    rfc822::header(&body, "Subject").unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let device = Device::open(&cli.state_dir)?;
            let s = &device.state;
            outln!("device id:       {}", s.device_id);
            outln!("user:            {} ({})", s.full_name, s.user_id);
            outln!("relay:           {} (device channel {}:{})", s.relay_url, s.device_host, s.device_port);
            outln!("pinned VES key:  {}", s.ves_fingerprint);
            outln!("suites:          {}", s.suites.join(", "));
            match s.client_certificate(&device.dir)? {
                Some(c) => {
                    let now = noc_protocol::clock::unix_ms_i64() / 1000;
                    let state = if c.valid_at(now) { "valid" } else { "expired; the credential is used" };
                    let days = (c.not_after - now) / 86_400;
                    outln!("certificate:     serial {} ({state}, {days} days left)", c.serial);
                }
                None => outln!("certificate:     none (the credential authenticates the device)"),
            }
            outln!("inbox:           {} items", device.inbox()?.len());
            outln!("outbox:          {} items", device.outbox()?.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn run(dir: &std::path::Path, r: RunArgs) -> anyhow::Result<ExitCode> {
    let device = Device::open(dir)?;
    let mut opts = RunOptions { connect_to: r.connect_to, ..RunOptions::default() };
    opts.link.resend_after = Duration::from_secs(r.resend_after_seconds.max(1));
    opts.reconnect_max = Duration::from_secs(r.reconnect_max_seconds.max(1));
    let rt = runtime()?;
    rt.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            signal_stop.cancel();
        });
        let watch_stop = stop.clone();
        let until = r.until_inbox;
        let until_sent = r.until_outbox_empty;
        let device = std::sync::Arc::new(device);
        let watched = device.clone();
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(until.is_none() && !until_sent));
        let reached2 = reached.clone();
        if until.is_some() || until_sent {
            tokio::spawn(async move {
                loop {
                    let have = watched.inbox().map(|v| v.len()).unwrap_or(0);
                    let pending = watched.store.outbox_len(noc_endpoint::VES_PEER).unwrap_or(usize::MAX);
                    if have >= until.unwrap_or(0) && (!until_sent || pending == 0) {
                        reached2.store(true, std::sync::atomic::Ordering::SeqCst);
                        watch_stop.cancel();
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        if let Some(secs) = r.timeout_seconds {
            let t = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                t.cancel();
            });
        }
        device.run(opts, stop, None).await?;
        if reached.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(ExitCode::SUCCESS)
        } else {
            let _ = writeln!(std::io::stderr(), "noc-device: timed out before the --until conditions were met");
            Ok(ExitCode::from(2))
        }
    })
}

fn crypto(c: CryptoCommand) -> anyhow::Result<ExitCode> {
    match c {
        CryptoCommand::Seal { suite, key, iv, counter, r#final } => {
            let mut plaintext = Vec::new();
            std::io::stdin().read_to_end(&mut plaintext)?;
            let frame = cryptotool::seal(suite, &key, &plaintext, &SealOptions { iv_hex: iv, counter, last: r#final })?;
            outln!("{}", hex::encode(frame));
        }
        CryptoCommand::Open { suite, key, max_plaintext_bytes } => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let plaintext = cryptotool::open(suite, &key, &text, max_plaintext_bytes)?;
            outln!("{}", hex::encode(plaintext));
        }
        CryptoCommand::Derive { suite, private, peer_public } => {
            outln!("{}", hex::encode(cryptotool::derive(suite, &private, &peer_public)?));
        }
        CryptoCommand::Public { suite, private } => {
            outln!("{}", hex::encode(cryptotool::public_key(suite, &private)?));
        }
    }
    Ok(ExitCode::SUCCESS)
}
