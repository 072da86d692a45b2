//! CSV exports (RFC 4180), safe to open in a spreadsheet: a cell that a spreadsheet would
//! run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) is prefixed with `'`.

use noc_storage::AuditEvent;

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
