//! `[log] format = "json"`: one JSON object per line, for log pipelines.
//!
//! tracing-subscriber's own JSON format has no place for a field every line shares, and
//! a pipeline that gathers the lines of many nodes needs to know which node wrote each
//! (a pod name is not a node id when the operator sets `node_id`). So the lines are
//! written here: `timestamp`, `level`, `node`, `target`, then the event's own fields
//! (`message` among them), which never hold a secret or a payload.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The line format, for one node.
pub struct JsonLines {
    node: String,
}

impl JsonLines {
    pub fn new(node: impl Into<String>) -> Self {
        Self { node: node.into() }
    }

    /// The line for `event` at `timestamp` (without its newline).
    fn line(&self, timestamp: String, event: &Event<'_>) -> Value {
        // A record a library wrote through `log` names its own target (and level).
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(timestamp));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("node".into(), Value::String(self.node.clone()));
        line.insert("target".into(), Value::String(meta.target().into()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        // An event's field named like one of the line's own keys does not replace it.
        for (k, v) in fields.0 {
            line.entry(k).or_insert(v);
        }
        Value::Object(line)
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        writeln!(writer, "{}", self.line(timestamp, event))
    }
}

/// An event's fields as JSON values: numbers and booleans stay what they are, the rest
/// (`%display`, `?debug`) becomes strings.
struct Fields(Map<String, Value>);

impl Fields {
    /// `log.target`, `log.file`…: what [`NormalizeEvent`] already made the line's own.
    fn keep(field: &Field) -> bool {
        !field.name().starts_with("log.")
    }
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !Self::keep(field) {
            return;
        }
        self.0.insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines gathered in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lines").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_names_the_node_and_keeps_the_event_fields_typed() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines::new("relay-2"))
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(sessions = 3_u64, listener = %"device", ok = true, "drained");
            tracing::warn!(node = "forged", level = "forged", "fields cannot replace the line's own");
            tracing::info!(log.target = "somelib", log.line = 7_u64, "the log bridge's fields are not repeated");
        });
        let out = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("utf-8");
        let parsed: Vec<Value> =
            out.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
        assert_eq!(parsed.len(), 3, "{out}");
        assert!(parsed[2].get("log.target").is_none() && parsed[2].get("log.line").is_none(), "{}", parsed[2]);
        let first = &parsed[0];
        assert_eq!(first["node"], "relay-2");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "drained");
        assert_eq!(first["sessions"], 3);
        assert_eq!(first["listener"], "device");
        assert_eq!(first["ok"], true);
        assert!(first["target"].as_str().is_some_and(|t| t.ends_with("json_log::tests")), "{first}");
        assert!(first["timestamp"].as_str().is_some_and(|t| t.starts_with("20") && t.ends_with('Z')), "{first}");
        assert_eq!((parsed[1]["node"].as_str(), parsed[1]["level"].as_str()), (Some("relay-2"), Some("WARN")));
    }
}
