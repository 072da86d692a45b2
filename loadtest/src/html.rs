//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing
//! fetched), so it can be archived with the JSON and opened anywhere.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::result::{FrameCounts, Latency, ReportError, RunResult, TimelinePoint};

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// An axis: linear or log10, with its tick labels.
struct Axis {
    min: f64,
    max: f64,
    log: bool,
    label: String,
    /// Explicit ticks (value, label); computed when empty.
    ticks: Vec<(f64, String)>,
}

impl Axis {
    fn linear(label: &str, min: f64, max: f64) -> Self {
        let max = if max <= min { min + 1.0 } else { max };
        Self { min, max, log: false, label: label.into(), ticks: Vec::new() }
    }

    fn log(label: &str, min: f64, max: f64) -> Self {
        let min = 10f64.powf(min.max(1e-3).log10().floor());
        let max = 10f64.powf(max.max(min * 10.0).log10().ceil());
        Self { min, max, log: true, label: label.into(), ticks: Vec::new() }
    }

    fn frac(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.min);
            (v.log10() - self.min.log10()) / (self.max.log10() - self.min.log10())
        } else {
            (v - self.min) / (self.max - self.min)
        }
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        if !self.ticks.is_empty() {
            return self.ticks.clone();
        }
        if self.log {
            let mut t = Vec::new();
            let mut v = self.min;
            while v <= self.max * 1.0001 {
                t.push((v, fmt_num(v)));
                v *= 10.0;
            }
            return t;
        }
        let span = self.max - self.min;
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(mag * 10.0);
        let mut t = Vec::new();
        let mut v = (self.min / step).ceil() * step;
        while v <= self.max + step * 1e-9 {
            t.push((v, fmt_num(v)));
            v += step;
        }
        t
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn chart(title: &str, x: &Axis, y: &Axis, series: &[Series]) -> String {
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let px = |v: f64| LEFT + x.frac(v).clamp(0.0, 1.0) * pw;
    let py = |v: f64| TOP + ph - y.frac(v).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><text x="{LEFT}" y="18" class="title">{t}</text>"#,
        t = escape(title)
    );
    for (v, label) in y.ticks() {
        let yy = py(v);
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            escape(&label)
        );
    }
    for (v, label) in x.ticks() {
        let xx = px(v);
        let _ = write!(
            s,
            r#"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" class="grid"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            TOP + ph,
            TOP + ph + 16.0,
            escape(&label)
        );
    }
    let _ = write!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" class="frame"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="axis" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 8.0,
        escape(&x.label),
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(&y.label)
    );
    for (i, serie) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = serie
            .points
            .iter()
            .filter(|(a, b)| a.is_finite() && b.is_finite())
            .map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b)))
            .collect();
        if !pts.is_empty() {
            let _ =
                write!(s, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.6"/>"#, pts.join(" "));
        }
        let ly = TOP + 14.0 + i as f64 * 18.0;
        let lx = LEFT + pw + 12.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&serie.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in milliseconds (civil-from-days).
fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (year, month, day) = noc_protocol::clock::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn latency_over_time(tl: &[TimelinePoint]) -> String {
    let pick = |f: fn(&Latency) -> u64| -> Vec<(f64, f64)> {
        tl.iter().filter(|p| p.latency.count > 0).map(|p| (p.t_seconds, ms(f(&p.latency)))).collect()
    };
    let series = vec![
        Series { name: "p50".into(), points: pick(|l| l.p50_us) },
        Series { name: "p99".into(), points: pick(|l| l.p99_us) },
        Series { name: "p99.9".into(), points: pick(|l| l.p999_us) },
        Series { name: "max".into(), points: pick(|l| l.max_us) },
    ];
    let (ymin, ymax) = bounds(&series);
    let (xmin, xmax) = x_bounds(tl);
    chart(
        "One-way latency over time (per interval, both directions)",
        &Axis::linear("seconds since start", xmin, xmax),
        &Axis::log("latency (ms, log)", ymin, ymax),
        &series,
    )
}

fn throughput_over_time(tl: &[TimelinePoint]) -> String {
    // The short intervals that close a phase would show as spikes of their rate.
    let full = tl.iter().map(|p| p.interval_seconds).fold(0.0, f64::max) * 0.5;
    let rate = |f: fn(&TimelinePoint) -> u64| -> Vec<(f64, f64)> {
        tl.iter()
            .filter(|p| p.interval_seconds >= full)
            .map(|p| (p.t_seconds, f(p) as f64 / p.interval_seconds.max(1e-3)))
            .collect()
    };
    let series = vec![
        Series { name: "sent d→v".into(), points: rate(|p| p.device_to_ves.sent) },
        Series { name: "recv d→v".into(), points: rate(|p| p.device_to_ves.received) },
        Series { name: "sent v→d".into(), points: rate(|p| p.ves_to_device.sent) },
        Series { name: "recv v→d".into(), points: rate(|p| p.ves_to_device.received) },
        Series {
            name: "undeliverable".into(),
            points: rate(|p| p.device_to_ves.undeliverable + p.ves_to_device.undeliverable),
        },
    ];
    let (_, ymax) = bounds(&series);
    let (xmin, xmax) = x_bounds(tl);
    chart(
        "Throughput over time",
        &Axis::linear("seconds since start", xmin, xmax),
        &Axis::linear("frames per second", 0.0, ymax * 1.05),
        &series,
    )
}

fn sessions_over_time(r: &RunResult) -> String {
    let tl = &r.timeline;
    let mut series = vec![Series {
        name: "devices online".into(),
        points: tl.iter().map(|p| (p.t_seconds, p.devices_online as f64)).collect(),
    }];
    let rss: Vec<(f64, f64)> =
        tl.iter().filter_map(|p| p.relay_rss_kib.map(|k| (p.t_seconds, k as f64 / 1024.0))).collect();
    let (xmin, xmax) = x_bounds(tl);
    let mut out = String::new();
    let (_, ymax) = bounds(&series);
    out.push_str(&chart(
        "Sessions over time",
        &Axis::linear("seconds since start", xmin, xmax),
        &Axis::linear("device sessions", 0.0, ymax * 1.05),
        &series,
    ));
    if !rss.is_empty() {
        series = vec![
            Series { name: "relay RSS MiB".into(), points: rss },
            Series {
                name: "relay CPU %".into(),
                points: tl.iter().filter_map(|p| p.relay_cpu_percent.map(|c| (p.t_seconds, c))).collect(),
            },
            Series {
                name: "load tool CPU %".into(),
                points: tl.iter().filter_map(|p| p.loadgen_cpu_percent.map(|c| (p.t_seconds, c))).collect(),
            },
        ];
        let (_, ymax) = bounds(&series);
        out.push_str(&chart(
            "Relay resources over time",
            &Axis::linear("seconds since start", xmin, xmax),
            &Axis::linear("MiB / % of one core", 0.0, ymax * 1.05),
            &series,
        ));
    }
    out
}

/// Latency by percentile on a "nines" axis (50%, 90%, 99%, 99.9%, ...).
fn percentile_curve(r: &RunResult) -> Result<String, ReportError> {
    let nines = |q: f64| -(1.0 - q).max(1e-7).log10();
    let curve = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        if h.is_empty() {
            return Vec::new();
        }
        let mut pts = Vec::new();
        let mut x = 0.0;
        while x <= 6.0 {
            let q = 1.0 - 10f64.powf(-x);
            pts.push((x, ms(h.value_at_quantile(q))));
            x += 0.05;
        }
        pts.push((nines(1.0 - 1e-7), ms(h.max())));
        pts
    };
    let l = &r.latency;
    let mut series = Vec::new();
    for (name, lat) in [
        ("one-way d→v", &l.one_way_device_to_ves),
        ("one-way v→d", &l.one_way_ves_to_device),
        ("ack d→v", &l.ack_device_to_ves),
        ("ack v→d", &l.ack_ves_to_device),
    ] {
        let h = lat.histogram()?;
        if !h.is_empty() {
            series.push(Series { name: name.into(), points: curve(&h) });
        }
    }
    let (ymin, ymax) = bounds(&series);
    let mut x = Axis::linear("percentile", 0.0, 6.0);
    x.ticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
        .map(|(i, s)| (i as f64, s.to_string()))
        .collect();
    Ok(chart("Latency by percentile", &x, &Axis::log("latency (ms, log)", ymin, ymax), &series))
}

fn bounds(series: &[Series]) -> (f64, f64) {
    let vals = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite());
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        lo = 0.01;
    }
    (lo.max(0.001), hi.max(lo * 10.0).max(1.0))
}

fn x_bounds(tl: &[TimelinePoint]) -> (f64, f64) {
    let max = tl.iter().map(|p| p.t_seconds).fold(0.0, f64::max);
    let min = tl.first().map(|p| (p.t_seconds - p.interval_seconds).max(0.0)).unwrap_or(0.0);
    (min, max.max(min + 1.0))
}

fn counts_rows(name: &str, c: &FrameCounts) -> String {
    let undeliv: Vec<String> = c.undeliverable.iter().map(|(k, v)| format!("{}: {v}", escape(k))).collect();
    format!(
        "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        c.sent,
        c.acked,
        c.undeliverable_total(),
        c.lost,
        c.received,
        c.skipped_offline,
        if undeliv.is_empty() { "–".into() } else { undeliv.join(", ") },
    )
}

fn latency_row(name: &str, l: &Latency) -> String {
    format!(
        "<tr><th>{name}</th><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
        l.count,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.mean_us / 1000.0
    )
}

/// Renders the report.
pub fn render(r: &RunResult) -> Result<String, ReportError> {
    let mut h = String::new();
    let title = format!("Load test “{}”", r.scenario.name);
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:900px;color:#222}}
h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:8px 0}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:right}}
th{{background:#f6f6f6;text-align:left}} .muted{{color:#777}} pre{{background:#f6f6f6;padding:8px;overflow:auto}}
svg{{display:block;margin:10px 0}} .grid{{stroke:#eee}} .frame{{fill:none;stroke:#999}}
.tick{{font-size:11px;fill:#444}} .axis{{font-size:12px;fill:#222}} .title{{font-size:14px;font-weight:600}}
</style></head><body><h1>{t}</h1>"#,
        t = escape(&title)
    );
    let _ = write!(
        h,
        "<p class=\"muted\">{} · {} worker(s) · relay {} (devices {}) · machine {} ({} CPUs, {}) · started {}</p>",
        escape(&r.tool),
        r.workers,
        escape(&r.target.relay_url),
        escape(&r.target.device_addr),
        escape(&r.machine.hostname),
        r.machine.cpus,
        escape(&r.machine.cpu_model),
        utc(r.started_unix_ms)
    );
    let l = &r.latency.one_way;
    let _ = write!(
        h,
        "<h2>Summary</h2><table><tr><th>frames sent</th><td>{}</td></tr><tr><th>acknowledged</th><td>{}</td></tr>\
         <tr><th>undeliverable</th><td>{}</td></tr><tr><th>lost</th><td>{}</td></tr>\
         <tr><th>achieved frames/s (received)</th><td>{:.0}</td></tr><tr><th>one-way p50 / p99 / p99.9 / max (ms)</th><td>{:.3} / {:.3} / {:.3} / {:.3}</td></tr>\
         <tr><th>device sessions at traffic start</th><td>{} of {}</td></tr><tr><th>VES sessions</th><td>{} of {}</td></tr>\
         <tr><th>connect rate (sessions/s during ramp)</th><td>{:.0}</td></tr></table>",
        r.sent(),
        r.device_to_ves.acked + r.ves_to_device.acked,
        r.undeliverable(),
        r.lost(),
        r.achieved_frames_per_second,
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        r.sessions.devices_at_traffic_start,
        r.sessions.devices_target,
        r.sessions.ves_established,
        r.sessions.ves_target,
        r.sessions.connect_rate_per_second,
    );
    h.push_str("<h2>Latency over time</h2>");
    h.push_str(&latency_over_time(&r.timeline));
    h.push_str("<h2>Throughput over time</h2>");
    h.push_str(&throughput_over_time(&r.timeline));
    h.push_str("<h2>Percentiles</h2>");
    h.push_str(&percentile_curve(r)?);
    h.push_str(
        "<table><tr><th>distribution</th><th>n</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>mean ms</th></tr>",
    );
    let lt = &r.latency;
    for (name, lat) in [
        ("one-way, both directions", &lt.one_way),
        ("one-way device → VES", &lt.one_way_device_to_ves),
        ("one-way VES → device", &lt.one_way_ves_to_device),
        ("send → ack, device → VES", &lt.ack_device_to_ves),
        ("send → ack, VES → device", &lt.ack_ves_to_device),
        ("device connect (TCP+TLS+HELLO+AUTH)", &lt.connect),
        ("the tool's send delay, device → VES (scheduled → queued for writing)", &lt.send_delay_device_to_ves),
        ("the tool's send delay, VES → device (scheduled → into a request or write)", &lt.send_delay_ves_to_device),
        ("one-way from the send, device → VES (queued → received)", &lt.from_send_device_to_ves),
        ("one-way from the send, VES → device (queued → received)", &lt.from_send_ves_to_device),
    ] {
        h.push_str(&latency_row(name, lat));
    }
    h.push_str("</table><p class=\"muted\">Latency is measured from each frame's <em>scheduled</em> send time (open loop), so a sender that falls behind its timetable shows up as latency.</p>");
    h.push_str("<h2>Frames</h2><table><tr><th>direction</th><th>sent</th><th>acked</th><th>undeliverable</th><th>lost</th><th>received</th><th>skipped (offline)</th><th>undeliverable by reason</th></tr>");
    h.push_str(&counts_rows("device → VES", &r.device_to_ves));
    h.push_str(&counts_rows("VES → device", &r.ves_to_device));
    h.push_str("</table>");
    h.push_str("<h2>Sessions and resources</h2>");
    h.push_str(&sessions_over_time(r));
    let s = &r.sessions;
    let _ = write!(
        h,
        "<table><tr><th>connect attempts / ok / failed</th><td>{} / {} / {}</td></tr><tr><th>reconnects / churned</th><td>{} / {}</td></tr><tr><th>peak device sessions</th><td>{}</td></tr><tr><th>ramp (s)</th><td>{:.2}</td></tr><tr><th>data-channel requests / failed</th><td>{} / {}</td></tr></table>",
        s.connect_attempts,
        s.connect_ok,
        s.connect_failed,
        s.reconnects,
        s.churn_disconnects,
        s.devices_peak,
        s.ramp_seconds,
        r.data_requests,
        r.data_request_failures
    );
    for (name, u) in [("relay", &r.relay), ("load tool", &r.loadgen)] {
        if let Some(u) = u {
            let per = u
                .rss_bytes_per_session(s.devices_at_traffic_start)
                .map(|b| format!("{:.2} KiB", b / 1024.0))
                .unwrap_or_else(|| "–".into());
            let _ = write!(
                h,
                "<table><tr><th colspan=2>{name} (pid {})</th></tr><tr><th>RSS before sessions / at traffic start / peak / end (MiB)</th><td>{:.1} / {:.1} / {:.1} / {:.1}</td></tr><tr><th>RSS per device session</th><td>{per}</td></tr><tr><th>CPU during traffic (% of one core)</th><td>{:.0}</td></tr><tr><th>threads</th><td>{}</td></tr></table>",
                u.pid.map(|p| p.to_string()).unwrap_or_default(),
                u.rss_kib_before_sessions as f64 / 1024.0,
                u.rss_kib_at_traffic_start as f64 / 1024.0,
                u.rss_kib_peak as f64 / 1024.0,
                u.rss_kib_end as f64 / 1024.0,
                u.cpu_percent_traffic,
                u.threads
            );
        }
    }
    h.push_str("<h2>Errors</h2>");
    if r.errors.is_empty() {
        h.push_str("<p>none</p>");
    } else {
        h.push_str("<table>");
        for (k, v) in &r.errors {
            let _ = write!(h, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
        }
        h.push_str("</table>");
    }
    if !r.relay_metrics_delta.is_empty() {
        h.push_str("<h2>Relay metrics (change over the run)</h2><details><summary>show</summary><pre>");
        for (k, v) in &r.relay_metrics_delta {
            let _ = writeln!(h, "{} {v}", escape(k));
        }
        h.push_str("</pre></details>");
    }
    let scenario = toml::to_string(&r.scenario).unwrap_or_default();
    let _ = writeln!(h, "<h2>Scenario</h2><pre>{}</pre></body></html>", escape(&scenario));
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn an_empty_result_renders() {
        let r = RunResult::default();
        let html = render(&r).expect("render");
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        assert!(!html.contains("<script"), "self-contained, no script");
    }

    #[test]
    fn log_axis_spans_decades() {
        let a = Axis::log("ms", 0.2, 35.0);
        assert_eq!((a.min, a.max), (0.1, 100.0));
        assert_eq!(a.ticks().len(), 4);
        let l = Axis::linear("s", 0.0, 60.0);
        assert!(l.ticks().len() >= 3);
    }
}
