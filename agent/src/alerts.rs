//! Which new mail makes an alert (white paper §4.5 step 6): the user's filter rules, set
//! on the relay's portal and sent down the command channel as `FilterRules`. A rule
//! matches when the header it names (From, To or Subject) contains its text, ignoring
//! case; a mail matching any rule is an alert, posted to the relay as an `Alert` data
//! request (docs/protocol.md §4.4.10), which delivers it to the user's destinations.

use std::sync::Arc;
use std::time::Duration;

use mail_parser::MessageParser;
use noc_endpoint::rfc822;
use noc_protocol::UserId;
use noc_protocol::rts::{AlertResponse, DataRequest, FilterRule};

use crate::rts_client::DataChannel;
use crate::stats::{AgentStats, inc};

/// Tries of one `Alert` request, and the wait before the first retry (doubling).
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Characters of the excerpt sent (the relay shortens it further, and drops it unless the
/// user asked for excerpts).
const EXCERPT_CHARS: usize = 200;

/// What an alert says of `message`: sender, subject and the start of its text.
pub fn summary(message: &[u8]) -> (String, String, Option<String>) {
    let parsed = MessageParser::default().parse(message);
    // One line each, whatever encoded words hid in them (CR, LF, other controls).
    let clean = |s: String| s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    let from = clean(rfc822::header(message, "From").unwrap_or_default());
    let subject = clean(rfc822::header(message, "Subject").unwrap_or_default());
    let excerpt = parsed
        .as_ref()
        .and_then(|m| m.body_text(0))
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(EXCERPT_CHARS).collect::<String>())
        .filter(|t| !t.is_empty());
    (from, subject, excerpt)
}

/// Posts the alert for a matching mail on a task of its own, retrying while the relay is
/// unreachable (a refusal is final: the relay decided).
pub fn send(data: DataChannel, stats: Arc<AgentStats>, user_id: UserId, message: &[u8]) {
    let (from, subject, excerpt) = summary(message);
    let request = DataRequest::Alert { user_id, from, subject, excerpt };
    tokio::spawn(async move {
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match data.request::<AlertResponse>(&request).await {
                Ok(r) => {
                    inc(&stats.alerts_sent);
                    tracing::info!(accepted = r.accepted, "alert posted to the relay");
                    return;
                }
                Err(e) if attempt < ATTEMPTS && e.is_retryable() => {
                    tracing::info!(error = %e, attempt, "alert not posted yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alert not posted");
                    return;
                }
            }
        }
    });
}

/// Whether `message` (RFC 822 bytes) matches one of `rules`.
pub fn matches(rules: &[FilterRule], message: &[u8]) -> bool {
    if rules.is_empty() {
        return false;
    }
    let headers = rfc822::headers(message);
    rules.iter().any(|rule| {
        let wanted = rule.contains.to_lowercase();
        !wanted.is_empty()
            && headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(&rule.field))
                // Encoded words decoded (`=?utf-8?q?Dringend?=` reads "Dringend").
                .any(|(_, value)| rfc822::decode_words(value).to_lowercase().contains(&wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: &str, contains: &str) -> FilterRule {
        FilterRule { field: field.into(), contains: contains.into() }
    }

    const MAIL: &[u8] = b"From: The Boss <BOSS@corp.example>\r\nTo: bob@corp.example, ann@corp.example\r\n\
        Subject: Quarterly\r\n numbers (urgent)\r\n\r\nSubject: not a header\r\n";

    #[test]
    fn a_rule_looks_at_its_header_ignoring_case() {
        assert!(matches(&[rule("from", "boss@corp")], MAIL));
        assert!(matches(&[rule("to", "ANN@")], MAIL));
        assert!(matches(&[rule("subject", "URGENT")], MAIL), "folded header unfolded");
        assert!(!matches(&[rule("subject", "not a header")], MAIL), "the body is not looked at");
        assert!(!matches(&[rule("from", "bob@")], MAIL), "bob is in To, not From");
        assert!(!matches(&[], MAIL));
        assert!(matches(&[rule("to", "nobody"), rule("subject", "quarterly")], MAIL), "any rule");
        let encoded = b"Subject: =?utf-8?q?Dringend=3A_R=C3=BCckruf?=\r\n\r\nx";
        assert!(matches(&[rule("subject", "rückruf")], encoded), "encoded words are decoded");
        let (_, subject, _) = summary(b"Subject: =?utf-8?q?a=0D=0AX-Evil=3A_1?=\r\n\r\nx");
        assert!(!subject.contains('\n') && !subject.contains('\r'), "{subject:?}");
    }
}
