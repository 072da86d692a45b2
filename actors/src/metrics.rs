//! The relay's Prometheus metrics.
//!
//! Names follow `noc_<noun>_<verb>_total` for counters, units in names, and only bounded
//! label sets (`kind`, `direction`, `reason`/`code` from fixed enums): never an identity.
//! Counters on the per-frame path are resolved to their label children once, here, so a
//! relayed frame costs an atomic add, not a label lookup.

use noc_cluster::FetchOutcome;
use noc_protocol::rts::fetch::Operation;
use noc_protocol::{CloseCode, UndeliverableReason};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Reasons of `noc_auth_failures_total`.
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "invalid_credentials",
    "invalid_session",
    "locked_out",
    "throttled",
    "suspended",
    "revoked",
    "not_activated",
    "unavailable",
    "busy",
    "msisdn_not_approved",
    "feature_disabled",
    "certificate_refused",
    "certificate_required",
];

/// How a device authenticated (`noc_device_logins_total{method}`): AUTH_TOKEN,
/// AUTH_PASSWORD or AUTH_CERT (client certificate, docs/protocol.md §6.3.2).
pub const DEVICE_LOGIN_METHODS: &[&str] = &["token", "password", "certificate"];

/// Why the public HTTPS listener closed a connection before any HTTP
/// (`noc_http_connections_rejected_total{reason}`).
pub const HTTP_REJECT_REASONS: &[&str] = &[
    "connection_limit",
    "source_connections",
    "source_handshakes",
    "handshake_limit",
    "handshake_timeout",
    "tls_error",
];

/// Why a device connection ended before its session (`noc_connections_rejected_total{reason}`).
/// The `wipe*` reasons are remote wipes answered in the handshake (docs/protocol.md §6.3.1).
pub const CONNECTION_REJECT_REASONS: &[&str] = &[
    "connection_limit",
    "tls_error",
    "client_certificate",
    "handshake_timeout",
    "peer_closed",
    "io_error",
    "frame_too_large",
    "malformed_frame",
    "protocol_violation",
    "unsupported_version",
    "auth_failed",
    "draining",
    "too_many_sessions",
    "wiped",
    "wipe_unsupported",
    "wipe_unrecorded",
];

/// Session kinds, the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Ves,
    Device,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Ves => "ves",
            SessionKind::Device => "device",
        }
    }
}

/// Relay directions, the `direction` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    DeviceToVes,
    VesToDevice,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::DeviceToVes => "device_to_ves",
            Direction::VesToDevice => "ves_to_device",
        }
    }
}

/// Why a frame the relay had accepted was dropped inside it (the sender is told with an
/// undeliverable notice wherever it can be reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The target's bounded queue was full when the frame arrived.
    QueueFull,
    /// The target session ended with the frame still queued.
    SessionClosed,
    /// A relay-originated control frame (heartbeat, notice) found the queue full.
    ControlQueueFull,
    /// The bus to another node refused the message.
    BusUnavailable,
}

impl DropReason {
    pub const ALL: [DropReason; 4] =
        [DropReason::QueueFull, DropReason::SessionClosed, DropReason::ControlQueueFull, DropReason::BusUnavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::SessionClosed => "session_closed",
            DropReason::ControlQueueFull => "control_queue_full",
            DropReason::BusUnavailable => "bus_unavailable",
        }
    }
}

/// Per-direction counters resolved once.
pub struct DirectionCounters {
    pub frames: IntCounter,
    pub bytes: IntCounter,
    pub acks: IntCounter,
}

/// Every metric of a node, registered in its own [`Registry`].
pub struct Metrics {
    registry: Registry,
    sessions: IntGaugeVec,
    sessions_opened: IntCounterVec,
    sessions_closed: IntCounterVec,
    sessions_replaced: IntCounterVec,
    undeliverable: IntCounterVec,
    dropped: IntCounterVec,
    auth_failures: IntCounterVec,
    device_logins: IntCounterVec,
    heartbeats_missed: IntCounterVec,
    heartbeats_sent: IntCounterVec,
    connections_rejected: IntCounterVec,
    http_connections_rejected: IntCounterVec,
    /// TLS handshakes in progress on the public listener.
    pub http_handshakes: IntGauge,
    /// Device sessions started on their VES's worker instead of the accepting one.
    pub device_sessions_moved: IntCounter,
    /// The process's open-file limit (soft), after the node raised it at start.
    pub open_files_limit: IntGauge,
    pub device_to_ves: DirectionCounters,
    pub ves_to_device: DirectionCounters,
    pub bus_sent: IntCounter,
    pub bus_received: IntCounter,
    pub bus_returned: IntCounter,
    bus_publish_seconds: Histogram,
    /// Usable licenses with VES installations none of which is connected to any node,
    /// set by the node's periodic presence check.
    pub licenses_without_ves: IntGauge,
    pub rts_sessions: IntGauge,
    pub draining: IntGauge,
    /// Set when the metrics are read (the admin listener), from the cluster backend's
    /// own health flag: no round trip of its own.
    pub cluster_up: IntGauge,
    pub bus_links_open: IntGauge,
    /// When the certificate the node serves expires (set at start).
    pub tls_certificate_expiry: IntGauge,
    /// When the device CA's certificate expires (set at start; 0: the node has none).
    pub device_ca_expiry: IntGauge,
    /// The account store's connection pool, set when the metrics are read.
    store_pool: IntGaugeVec,
    store_pool_waiting: IntGauge,
    store_pool_max: IntGauge,
    fetches: IntCounterVec,
    alerts: IntCounterVec,
    alerts_skipped: IntCounterVec,
    alert_failures: IntCounterVec,
    sms_receipts: IntCounterVec,
    smpp_link_down: IntCounter,
    fetch_seconds: HistogramVec,
    fetch_answers_dropped: IntCounter,
}

/// Channels of `noc_alerts_total{channel}`.
pub const ALERT_CHANNELS: [&str; 4] = ["email", "webhook", "sms", "wap_push"];
/// Why an alert delivery attempt failed, `noc_alert_failures_total{reason}`.
pub const ALERT_FAILURE_REASONS: [&str; 8] =
    ["not_configured", "smtp", "http_status", "transport", "timeout", "smsc_down", "smsc_refused", "internal"];
/// Message states of delivery receipts (SMPP 3.4 §5.2.28), `noc_sms_receipts_total{stat}`.
pub const SMS_RECEIPT_STATS: [&str; 7] = ["DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD"];
/// Reasons of `noc_alerts_skipped_total{reason}`.
pub const ALERT_SKIP_REASONS: [&str; 4] = ["disabled", "no_destination", "quiet_hours", "rate_limited"];

/// Outcomes of `noc_fetches_total{outcome}`: the VES answered (`ok`) or said why not
/// (`error`), or one of the refusals ([`noc_cluster::FetchRefusal::as_str`]).
fn fetch_outcome(outcome: &FetchOutcome) -> &'static str {
    match outcome {
        FetchOutcome::Answer(_) => "ok",
        FetchOutcome::Failed(_) => "error",
        FetchOutcome::Refused(r) => r.as_str(),
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let info = gauge_vec(&r, "noc_build_info", "Build information of the running relay; always 1.", &["version"]);
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let sessions = gauge_vec(&r, "noc_sessions", "Live authenticated sessions on this node.", &["kind"]);
        let sessions_opened =
            counter_vec(&r, "noc_sessions_opened_total", "Sessions authenticated on this node.", &["kind"]);
        let sessions_closed = counter_vec(
            &r,
            "noc_sessions_closed_total",
            "Sessions ended on this node, by close code.",
            &["kind", "code"],
        );
        let sessions_replaced = counter_vec(
            &r,
            "noc_sessions_replaced_total",
            "Sessions closed because a newer session for the same identity took over.",
            &["kind"],
        );
        let frames =
            counter_vec(&r, "noc_frames_relayed_total", "Opaque frames relayed, by direction.", &["direction"]);
        let bytes = counter_vec(
            &r,
            "noc_payload_relayed_bytes_total",
            "Payload bytes of relayed frames, by direction.",
            &["direction"],
        );
        let acks = counter_vec(
            &r,
            "noc_acks_relayed_total",
            "End-to-end acknowledgements relayed, by direction.",
            &["direction"],
        );
        let undeliverable = counter_vec(
            &r,
            "noc_frames_undeliverable_total",
            "Frames answered with an undeliverable notice, by direction and reason.",
            &["direction", "reason"],
        );
        let dropped = counter_vec(
            &r,
            "noc_frames_dropped_total",
            "Frames or control messages dropped inside the relay, by reason.",
            &["reason"],
        );
        let auth_failures = counter_vec(
            &r,
            "noc_auth_failures_total",
            "Refused authentications, by credential kind and reason.",
            &["kind", "reason"],
        );
        let device_logins = counter_vec(
            &r,
            "noc_device_logins_total",
            "Accepted device authentications, by method (token, password, certificate).",
            &["method"],
        );
        for method in DEVICE_LOGIN_METHODS {
            device_logins.with_label_values(&[method]);
        }
        let heartbeats_missed = counter_vec(
            &r,
            "noc_heartbeats_missed_total",
            "Sessions dropped because the peer was silent past its idle timeout.",
            &["kind"],
        );
        let heartbeats_sent = counter_vec(&r, "noc_heartbeats_sent_total", "Heartbeats sent to peers.", &["kind"]);
        let connections_rejected = counter_vec(
            &r,
            "noc_connections_rejected_total",
            "Device-channel connections closed before authentication, by reason.",
            &["reason"],
        );
        let http_connections_rejected = counter_vec(
            &r,
            "noc_http_connections_rejected_total",
            "Public HTTPS connections closed before any HTTP (per-source and handshake limits, TLS failures), by reason.",
            &["reason"],
        );
        let http_handshakes =
            gauge(&r, "noc_http_tls_handshakes", "TLS handshakes in progress on the public HTTPS listener.");
        let device_sessions_moved = counter(
            &r,
            "noc_device_sessions_moved_total",
            "Device sessions started on their VES's worker thread (the one of its command channel, or the one the node gives a VES whose channel is elsewhere) rather than the one that accepted the connection.",
        );
        let open_files_limit = gauge(
            &r,
            "noc_open_files_limit",
            "The process's open-file limit (soft), raised to the hard limit at start.",
        );
        let bus_sent = counter(&r, "noc_bus_messages_sent_total", "Messages published to other nodes.");
        let bus_received = counter(&r, "noc_bus_messages_received_total", "Messages received from other nodes.");
        let bus_returned = counter(
            &r,
            "noc_bus_messages_returned_total",
            "Messages published to a node that no longer listened (its owner was gone); their senders were told.",
        );
        let bus_publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "noc_bus_publish_duration_seconds",
                "Time from a message being queued for another node to Redis accepting it or its link to that node taking it, for the oldest message of each batch.",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("static metric definition");
        r.register(Box::new(bus_publish_seconds.clone())).expect("metric registered once");
        let licenses_without_ves = gauge(
            &r,
            "noc_licenses_without_ves",
            "Licenses (neither suspended nor expired) that have VES installations but none connected to any node, as this node last counted.",
        );
        let rts_sessions = gauge(&r, "noc_rts_sessions", "RTS sessions (attached or waiting ReplyTime) on this node.");
        let draining = gauge(&r, "noc_draining", "1 while the node drains before shutdown.");
        let tls_certificate_expiry = gauge(
            &r,
            "noc_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate this node serves expires (Unix seconds; read at start).",
        );
        let device_ca_expiry = gauge(
            &r,
            "noc_device_ca_expiry_timestamp_seconds",
            "When the device CA's certificate expires (Unix seconds; read at start; 0: this node issues no device certificates).",
        );
        let store_pool = gauge_vec(
            &r,
            "noc_store_pool_connections",
            "Open connections of the account store's pool (PostgreSQL), by state: idle or in_use.",
            &["state"],
        );
        let store_pool_waiting =
            gauge(&r, "noc_store_pool_waiting", "Requests waiting for a connection of the account store's pool.");
        let store_pool_max =
            gauge(&r, "noc_store_pool_max_connections", "Most connections the account store's pool opens.");
        for state in ["idle", "in_use"] {
            store_pool.with_label_values(&[state]).set(0);
        }
        let cluster_up = gauge(
            &r,
            "noc_cluster_up",
            "1 while this node's cluster backend (Redis, or the in-process bus) works; 0: the node is not ready.",
        );

        let bus_links_open = gauge(
            &r,
            "noc_bus_links_open",
            "Direct links from other nodes open on this node (cluster.link_listen); 0 without links.",
        );

        for kind in [SessionKind::Ves, SessionKind::Device] {
            sessions.with_label_values(&[kind.as_str()]).set(0);
            sessions_opened.with_label_values(&[kind.as_str()]);
            sessions_replaced.with_label_values(&[kind.as_str()]);
            heartbeats_sent.with_label_values(&[kind.as_str()]);
        }
        heartbeats_missed.with_label_values(&["device"]);
        // Known label combinations start at 0 so that rates and alerts work from the first
        // scrape (absent series are invisible to `rate()`).
        for kind in ["license", "ves", "account", "device"] {
            for reason in AUTH_FAILURE_REASONS {
                auth_failures.with_label_values(&[kind, reason]);
            }
        }
        for reason in CONNECTION_REJECT_REASONS {
            connections_rejected.with_label_values(&[reason]);
        }
        for reason in HTTP_REJECT_REASONS {
            http_connections_rejected.with_label_values(&[reason]);
        }
        for kind in [SessionKind::Ves, SessionKind::Device] {
            for code in CloseCode::ALL {
                sessions_closed.with_label_values(&[kind.as_str(), code.as_str()]);
            }
        }
        for d in [Direction::DeviceToVes, Direction::VesToDevice] {
            for reason in [UndeliverableReason::PeerOffline, UndeliverableReason::QueueFull] {
                undeliverable.with_label_values(&[d.as_str(), reason.as_str()]);
            }
        }
        for reason in DropReason::ALL {
            dropped.with_label_values(&[reason.as_str()]);
        }
        let per = |d: Direction| DirectionCounters {
            frames: frames.with_label_values(&[d.as_str()]),
            bytes: bytes.with_label_values(&[d.as_str()]),
            acks: acks.with_label_values(&[d.as_str()]),
        };
        let fetches = counter_vec(
            &r,
            "noc_fetches_total",
            "Browse fetches this node asked of enterprise servers, by operation and outcome.",
            &["operation", "outcome"],
        );
        let fetch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "noc_fetch_duration_seconds",
                "Time from a browse fetch to its answer (or its refusal), by operation.",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["operation"],
        )
        .expect("static metric definition");
        r.register(Box::new(fetch_seconds.clone())).expect("metric registered once");
        let fetch_answers_dropped = counter(
            &r,
            "noc_fetch_answers_dropped_total",
            "Fetch answers nobody waited for any more (after the deadline, or for an unknown request).",
        );
        let alerts = counter_vec(
            &r,
            "noc_alerts_total",
            "New-mail alert deliveries, by channel and outcome (delivered, retried, failed, dropped).",
            &["channel", "outcome"],
        );
        let alerts_skipped = counter_vec(
            &r,
            "noc_alerts_skipped_total",
            "Alerts taken from enterprise servers and delivered nowhere, by reason.",
            &["reason"],
        );
        let alert_failures = counter_vec(
            &r,
            "noc_alert_failures_total",
            "Failed alert delivery attempts (each retried one too), by channel and reason.",
            &["channel", "reason"],
        );
        for channel in ALERT_CHANNELS {
            for reason in ALERT_FAILURE_REASONS {
                alert_failures.with_label_values(&[channel, reason]);
            }
        }
        let sms_receipts = counter_vec(
            &r,
            "noc_sms_receipts_total",
            "SMS delivery receipts from the SMSC, by their final state (SMPP 3.4 stat).",
            &["stat"],
        );
        for stat in SMS_RECEIPT_STATS {
            sms_receipts.with_label_values(&[stat]);
        }
        let smpp_link_down = counter(&r, "noc_smpp_link_down_total", "Times the SMPP link to the SMSC was lost.");
        for channel in ALERT_CHANNELS {
            for outcome in ["delivered", "retried", "failed", "dropped"] {
                alerts.with_label_values(&[channel, outcome]);
            }
        }
        for reason in ALERT_SKIP_REASONS {
            alerts_skipped.with_label_values(&[reason]);
        }
        for op in Operation::ALL {
            fetch_seconds.with_label_values(&[op.as_str()]);
            for outcome in ["ok", "error"].into_iter().chain(noc_cluster::FetchRefusal::ALL.map(|r| r.as_str())) {
                fetches.with_label_values(&[op.as_str(), outcome]);
            }
        }
        Self {
            fetches,
            alerts,
            alerts_skipped,
            alert_failures,
            sms_receipts,
            smpp_link_down,
            fetch_seconds,
            fetch_answers_dropped,
            device_to_ves: per(Direction::DeviceToVes),
            ves_to_device: per(Direction::VesToDevice),
            registry: r,
            sessions,
            sessions_opened,
            sessions_closed,
            sessions_replaced,
            undeliverable,
            dropped,
            auth_failures,
            device_logins,
            heartbeats_missed,
            heartbeats_sent,
            connections_rejected,
            http_connections_rejected,
            http_handshakes,
            device_sessions_moved,
            open_files_limit,
            bus_sent,
            bus_received,
            bus_returned,
            bus_publish_seconds,
            licenses_without_ves,
            rts_sessions,
            draining,
            cluster_up,
            bus_links_open,
            tls_certificate_expiry,
            device_ca_expiry,
            store_pool,
            store_pool_waiting,
            store_pool_max,
        }
    }

    /// A batch published to another node waited `waited` (the cluster's bus reports it).
    pub fn bus_published(&self, waited: std::time::Duration) {
        self.bus_publish_seconds.observe(waited.as_secs_f64());
    }

    /// A fetch ended (answered, failed or refused) after `took`.
    pub fn fetch_done(&self, operation: Operation, outcome: &FetchOutcome, took: std::time::Duration) {
        self.fetches.with_label_values(&[operation.as_str(), fetch_outcome(outcome)]).inc();
        self.fetch_seconds.with_label_values(&[operation.as_str()]).observe(took.as_secs_f64());
    }

    /// One try of an alert delivery on `channel` ended with `outcome`.
    pub fn alert_delivery(&self, channel: &str, outcome: &str) {
        self.alerts.with_label_values(&[channel, outcome]).inc();
    }

    /// One alert delivery attempt on `channel` failed for `reason` (one of
    /// [`ALERT_FAILURE_REASONS`]).
    pub fn alert_failure(&self, channel: &str, reason: &str) {
        self.alert_failures.with_label_values(&[channel, reason]).inc();
    }

    /// A delivery receipt with `stat` (an SMPP 3.4 message state; any other is `UNKNOWN`).
    pub fn sms_receipt(&self, stat: &str) {
        let stat = SMS_RECEIPT_STATS.iter().find(|s| **s == stat).copied().unwrap_or("UNKNOWN");
        self.sms_receipts.with_label_values(&[stat]).inc();
    }

    /// The SMPP link was lost.
    pub fn smpp_link_down(&self) {
        self.smpp_link_down.inc();
    }

    /// An alert went nowhere, for `reason` (one of [`ALERT_SKIP_REASONS`]).
    pub fn alert_skipped(&self, reason: &str) {
        self.alerts_skipped.with_label_values(&[reason]).inc();
    }

    /// A fetch answer came that nobody waits for.
    pub fn fetch_answer_dropped(&self) {
        self.fetch_answers_dropped.inc();
    }

    /// The account store's pool: open, idle, most, and requests waiting.
    pub fn set_store_pool(&self, open: usize, idle: usize, max: usize, waiting: usize) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.store_pool.with_label_values(&["idle"]).set(n(idle));
        self.store_pool.with_label_values(&["in_use"]).set(n(open.saturating_sub(idle)));
        self.store_pool_max.set(n(max));
        self.store_pool_waiting.set(n(waiting));
    }

    pub fn session_opened(&self, kind: SessionKind) {
        self.sessions.with_label_values(&[kind.as_str()]).inc();
        self.sessions_opened.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn session_closed(&self, kind: SessionKind, code: CloseCode) {
        self.sessions.with_label_values(&[kind.as_str()]).dec();
        self.sessions_closed.with_label_values(&[kind.as_str(), code.as_str()]).inc();
    }

    pub fn session_replaced(&self, kind: SessionKind) {
        self.sessions_replaced.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn undeliverable(&self, direction: Direction, reason: UndeliverableReason) {
        self.undeliverable.with_label_values(&[direction.as_str(), reason.as_str()]).inc();
    }

    pub fn dropped(&self, reason: DropReason) {
        self.dropped.with_label_values(&[reason.as_str()]).inc();
    }

    /// An acknowledgement that could not be passed on, refused with `reason`. A full
    /// queue counted the drop where it refused it (`queue_full`, `control_queue_full`);
    /// anything else means the peer's session is gone.
    pub fn ack_dropped(&self, reason: UndeliverableReason) {
        if reason != UndeliverableReason::QueueFull {
            self.dropped(DropReason::SessionClosed);
        }
    }

    /// `kind`: `license`, `ves`, `account`, `device`. `reason`: a fixed snake_case word.
    /// A device authenticated by `method` (one of [`DEVICE_LOGIN_METHODS`]).
    pub fn device_login(&self, method: &'static str) {
        self.device_logins.with_label_values(&[method]).inc();
    }

    pub fn auth_failure(&self, kind: &'static str, reason: &'static str) {
        self.auth_failures.with_label_values(&[kind, reason]).inc();
    }

    pub fn heartbeat_missed(&self, kind: SessionKind) {
        self.heartbeats_missed.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn heartbeat_sent(&self, kind: SessionKind) {
        self.heartbeats_sent.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn connection_rejected(&self, reason: &'static str) {
        self.connections_rejected.with_label_values(&[reason]).inc();
    }

    pub fn http_connection_rejected(&self, reason: &'static str) {
        self.http_connections_rejected.with_label_values(&[reason]).inc();
    }

    /// Value of a counter or gauge by name and labels (summed over the series that match),
    /// or a histogram's count of observations, for tests and the load tool.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus::proto::MetricType;
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                let kind = f.get_field_type();
                f.get_metric().iter().map(move |m| (kind, m))
            })
            .filter(|(_, m)| {
                labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v))
            })
            .map(|(kind, m)| match kind {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                _ => m.get_gauge().get_value(),
            })
            .sum()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_and_types() {
        let m = Metrics::new();
        m.session_opened(SessionKind::Device);
        m.device_to_ves.frames.inc();
        m.undeliverable(Direction::VesToDevice, UndeliverableReason::UnknownPeer);
        let text = m.render();
        assert!(text.contains("# HELP noc_frames_relayed_total"));
        assert!(text.contains("# TYPE noc_sessions gauge"));
        assert!(text.contains("noc_frames_relayed_total{direction=\"device_to_ves\"} 1"));
        assert_eq!(m.value("noc_sessions", &[("kind", "device")]), 1.0);
        assert_eq!(m.value("noc_frames_undeliverable_total", &[("reason", "unknown_peer")]), 1.0);
    }
}
