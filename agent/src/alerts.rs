//! Which new mail makes an alert (white paper §4.5 step 6): the user's filter rules, set
//! on the relay's portal and sent down the command channel as `FilterRules`. A rule
//! matches when the header it names (From, To or Subject) contains its text, ignoring
//! case; a mail matching any rule is an alert. Delivering alerts (SMTP, SMS, WAP Push)
//! builds on this.

use noc_endpoint::rfc822;
use noc_protocol::rts::FilterRule;

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
                .any(|(_, value)| value.to_lowercase().contains(&wanted))
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
    }
}
