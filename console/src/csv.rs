//! CSV exports (RFC 4180), safe to open in a spreadsheet: a cell that a spreadsheet would
//! run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`.

use noc_storage::{AuditEvent, UsageDay};

fn cell(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn row(out: &mut String, cells: &[&str]) {
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell(out, c);
    }
    out.push_str("\r\n");
}

/// The audit log as CSV; a row's changes are `field: before → after` joined by `; `.
pub fn audit(events: &[AuditEvent]) -> String {
    let mut out = String::new();
    row(&mut out, &["id", "at", "actor", "role", "source", "action", "subject", "detail", "changes"]);
    for e in events {
        let changes: Vec<String> =
            e.changes.iter().map(|c| format!("{}: {} → {}", c.field, c.before, c.after)).collect();
        let (id, at) = (e.id.to_string(), e.at.to_string());
        row(&mut out, &[&id, &at, &e.actor, &e.role, &e.source, &e.action, &e.subject, &e.detail, &changes.join("; ")]);
    }
    out
}

/// Usage records as CSV, by day then license.
pub fn usage(days: &[UsageDay]) -> String {
    let mut out = String::new();
    row(
        &mut out,
        &[
            "day",
            "license_id",
            "frames_to_ves",
            "bytes_to_ves",
            "frames_to_devices",
            "bytes_to_devices",
            "undeliverable",
            "device_seconds",
            "active_devices",
            "active_users",
        ],
    );
    for u in days {
        let cells = [
            noc_protocol::clock::iso_date(u.day),
            u.license_id.to_string(),
            u.frames_to_ves.to_string(),
            u.bytes_to_ves.to_string(),
            u.frames_to_devices.to_string(),
            u.bytes_to_devices.to_string(),
            u.undeliverable.to_string(),
            u.device_seconds.to_string(),
            u.active_devices.to_string(),
            u.active_users.to_string(),
        ];
        row(&mut out, &cells.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    use noc_storage::FieldChange;

    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let mut e = AuditEvent::new("operator:a,b".into(), "license.change", "=HYPERLINK(\"x\")".into(), "".into());
        e.changes = vec![FieldChange::new("max_users", 5, 7)];
        let text = audit(&[e]);
        let line = text.lines().nth(1).expect("a row");
        assert!(line.contains("\"operator:a,b\""), "{line}");
        assert!(line.contains("\"'=HYPERLINK(\"\"x\"\")\""), "{line}");
        assert!(line.ends_with(",max_users: 5 → 7"), "{line}");
        assert!(text.starts_with("id,at,actor,role,source,action,subject,detail,changes\r\n"));
    }
}
