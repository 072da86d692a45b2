//! The portal's words, in each language it speaks: one Fluent catalogue per language
//! (`web/locales/<tag>.ftl`, compiled into the binary), and the choice of language for a
//! request.
//!
//! Every text a page shows comes from here, so adding a language is adding a file (and a
//! line to [`LANGUAGES`]); the tests check that every catalogue parses, that all of them
//! hold the same messages with the same variables, and that every message id the code and
//! templates use exists.
//!
//! The language of a page: the one the signed-in user chose on the settings page; else
//! the browser's preference (`Accept-Language`, by quality) among ours; else English.

use std::borrow::Cow;
use std::sync::LazyLock;

use actix_web::HttpRequest;
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};

use crate::portal::Problem;

/// The languages of the portal: tag, and its own name for itself. English first: the
/// fallback.
pub const LANGUAGES: [(&str, &str); 2] = [("en", "English"), ("de", "Deutsch")];

const SOURCES: [&str; 2] = [include_str!("../locales/en.ftl"), include_str!("../locales/de.ftl")];

struct Catalogue {
    bundles: Vec<FluentBundle<FluentResource>>,
}

static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| Catalogue {
    bundles: LANGUAGES.iter().zip(SOURCES).map(|((tag, _), source)| bundle(tag, source)).collect(),
});

/// One language's bundle. A syntax error keeps the messages that parsed (and is logged);
/// the tests make sure none ships.
fn bundle(tag: &str, source: &str) -> FluentBundle<FluentResource> {
    let resource = FluentResource::try_new(source.to_string()).unwrap_or_else(|(resource, errors)| {
        tracing::error!(language = tag, ?errors, "message catalogue does not parse");
        resource
    });
    let id = tag.parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // Unicode isolation marks around values are for bidirectional text in plain text; in
    // HTML they would only show up in copies and tests.
    bundle.set_use_isolating(false);
    if let Err(errors) = bundle.add_resource(resource) {
        tracing::error!(language = tag, ?errors, "message catalogue has duplicate messages");
    }
    bundle
}

/// A page's language. Cheap to copy into every template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lang(usize);

impl Default for Lang {
    fn default() -> Self {
        Lang::ENGLISH
    }
}

impl Lang {
    pub const ENGLISH: Lang = Lang(0);

    /// The language of a tag we speak (`de`, `de-CH`, `DE`), if any.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase();
        LANGUAGES.iter().position(|(t, _)| *t == primary).map(Lang)
    }

    /// The page language of a request: the user's choice, else the browser's.
    pub fn of(req: &HttpRequest, chosen: Option<&str>) -> Lang {
        if let Some(lang) = chosen.and_then(Lang::parse) {
            return lang;
        }
        let header = req.headers().get(actix_web::http::header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
        header.map(Lang::negotiate).unwrap_or_default()
    }

    /// The best of ours for an `Accept-Language` value (`de-CH, de;q=0.9, en;q=0.5`):
    /// highest quality first, the header's order among equals; `q=0` excludes.
    pub fn negotiate(header: &str) -> Lang {
        let mut best: Option<(u16, Lang)> = None;
        for item in header.split(',').take(32) {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map(|q| (q.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0) * 1000.0) as u16)
                .unwrap_or(1000);
            if q == 0 {
                continue;
            }
            if let Some(lang) = Lang::parse(tag)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    /// The tag, for `<html lang>`.
    pub fn tag(self) -> &'static str {
        LANGUAGES[self.0].0
    }

    /// The message `id` in this language (English where it is missing; the id itself if
    /// English lacks it too, which the tests rule out).
    pub fn get(self, id: &str) -> String {
        self.format(id, None)
    }

    /// The message `id` with one variable (shown as text).
    pub fn get1(self, id: &str, name: &str, value: impl std::fmt::Display) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_string(), FluentValue::String(Cow::Owned(value.to_string())));
        self.format(id, Some(&args))
    }

    /// The message `id` with two variables (shown as text).
    pub fn get2(
        self,
        id: &str,
        a: &str,
        a_value: impl std::fmt::Display,
        b: &str,
        b_value: impl std::fmt::Display,
    ) -> String {
        let mut args = FluentArgs::new();
        args.set(a.to_string(), FluentValue::String(Cow::Owned(a_value.to_string())));
        args.set(b.to_string(), FluentValue::String(Cow::Owned(b_value.to_string())));
        self.format(id, Some(&args))
    }

    /// The message `id` with any number of variables (shown as text).
    pub fn get_with(self, id: &str, vars: &[(&str, &dyn std::fmt::Display)]) -> String {
        let mut args = FluentArgs::new();
        for (name, value) in vars {
            args.set(name.to_string(), FluentValue::String(Cow::Owned(value.to_string())));
        }
        self.format(id, Some(&args))
    }

    /// The message `id` with a count, which may choose the plural form.
    pub fn count(self, id: &str, name: &str, n: u64) -> String {
        let mut args = FluentArgs::new();
        args.set(name.to_string(), FluentValue::from(n));
        self.format(id, Some(&args))
    }

    fn format(self, id: &str, args: Option<&FluentArgs<'_>>) -> String {
        let catalogue = &*CATALOGUE;
        for bundle in [&catalogue.bundles[self.0], &catalogue.bundles[0]] {
            if let Some(pattern) = bundle.get_message(id).and_then(|m| m.value()) {
                let mut errors = Vec::new();
                let text = bundle.format_pattern(pattern, args, &mut errors);
                if !errors.is_empty() {
                    tracing::warn!(id, ?errors, "message formatted with errors");
                }
                return text.into_owned();
            }
        }
        tracing::warn!(id, "no such message in the catalogue");
        id.to_string()
    }

    /// How a form problem reads.
    pub fn problem(self, p: Problem) -> String {
        match p {
            Problem::PasswordLength { min, max } => self.get2("problem-password-length", "min", min, "max", max),
            Problem::PasswordReused => self.get("problem-password-reused"),
            Problem::Email => self.get("problem-email"),
            Problem::ContactEmail => self.get("problem-contact-email"),
            Problem::Msisdn => self.get("problem-msisdn"),
            Problem::TimeZone => self.get("problem-time-zone"),
            Problem::Locale => self.get("problem-locale"),
            Problem::CalendarDaysAhead => self.get("problem-calendar-days"),
            Problem::FirstName => self.get("problem-first-name"),
            Problem::LastName => self.get("problem-last-name"),
            Problem::DeviceName => self.get("problem-device-name"),
            Problem::TooManyRules { max } => self.get1("problem-too-many-rules", "max", max),
            Problem::RuleField => self.get("problem-rule-field"),
            Problem::RuleText { max } => self.get1("problem-rule-text", "max", max),
            Problem::QuestionNotOffered => self.get("problem-question-not-offered"),
            Problem::QuestionUnknown => self.get("problem-question-unknown"),
            Problem::AnswerLength { min, max } => self.get2("problem-answer-length", "min", min, "max", max),
            Problem::AlertEmail => self.get("problem-alert-email"),
            Problem::AlertEmailRationed { max } => self.get1("problem-alert-email-rationed", "max", max),
            Problem::AlertEmailUnavailable => self.get("alerts-mail-unavailable"),
            Problem::WebhookUrl => self.get("problem-webhook-url"),
            Problem::QuietHours => self.get("problem-quiet-hours"),
            Problem::Other => self.get("problem-other"),
        }
    }

    /// What a throttled attempt is told (every password form says it alike).
    pub fn too_many_attempts(self, retry_after: std::time::Duration) -> String {
        self.count("too-many-attempts", "seconds", retry_after.as_secs().max(1))
    }

    /// A secret question, worded.
    pub fn question(self, key: &str) -> String {
        self.get(&format!("question-{}", key.replace('_', "-")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluent_bundle::FluentResource;
    use std::collections::BTreeMap;

    use fluent_syntax::ast::{Entry, Expression, InlineExpression, Pattern, PatternElement};

    fn pattern_vars(p: &Pattern<&str>, out: &mut Vec<String>) {
        for element in &p.elements {
            if let PatternElement::Placeable { expression } = element {
                expression_vars(expression, out);
            }
        }
    }

    fn expression_vars(e: &Expression<&str>, out: &mut Vec<String>) {
        match e {
            Expression::Select { selector, variants } => {
                inline_vars(selector, out);
                for v in variants {
                    pattern_vars(&v.value, out);
                }
            }
            Expression::Inline(i) => inline_vars(i, out),
        }
    }

    fn inline_vars(i: &InlineExpression<&str>, out: &mut Vec<String>) {
        match i {
            InlineExpression::VariableReference { id } => out.push(id.name.to_string()),
            InlineExpression::Placeable { expression } => expression_vars(expression, out),
            _ => {}
        }
    }

    /// Message ids and, for each, its variables (sorted), read from a catalogue's source.
    fn messages(source: &str) -> BTreeMap<String, Vec<String>> {
        let resource = match FluentResource::try_new(source.to_string()) {
            Ok(r) => r,
            Err((_, errors)) => panic!("catalogue does not parse: {errors:?}"),
        };
        let mut out = BTreeMap::new();
        for entry in resource.entries() {
            match entry {
                Entry::Message(m) => {
                    let mut vars = Vec::new();
                    if let Some(value) = &m.value {
                        pattern_vars(value, &mut vars);
                    }
                    vars.sort();
                    vars.dedup();
                    assert!(out.insert(m.id.name.to_string(), vars).is_none(), "{} twice", m.id.name);
                }
                Entry::Junk { content } => panic!("not Fluent: {content}"),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn every_language_has_every_message_with_the_same_variables() {
        let english = messages(SOURCES[0]);
        assert!(english.len() > 50, "{}", english.len());
        for ((tag, _), source) in LANGUAGES.iter().zip(SOURCES).skip(1) {
            let other = messages(source);
            let missing: Vec<_> = english.keys().filter(|k| !other.contains_key(*k)).collect();
            let extra: Vec<_> = other.keys().filter(|k| !english.contains_key(*k)).collect();
            assert!(missing.is_empty() && extra.is_empty(), "{tag}: missing {missing:?}, unknown {extra:?}");
            for (id, vars) in &english {
                assert_eq!(vars, &other[id], "{tag}: variables of {id}");
            }
        }
    }

    /// Every id the templates and views ask for (`t.get("…")`, `t.get1("…"`, and so on)
    /// exists in English (and so, by the test above, everywhere).
    #[test]
    fn every_message_the_pages_use_exists() {
        let english = messages(SOURCES[0]);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut used = Vec::new();
        for dir in ["templates", "src", "src/views"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("dir") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    let text = std::fs::read_to_string(&path).expect("read");
                    let text = text.split("#[cfg(test)]").next().unwrap_or("");
                    let calls = ["get(\"", "get1(\"", "get2(\"", "count(\""];
                    for call in ["t.", "self."].iter().flat_map(|on| calls.map(|c| format!("{on}{c}"))) {
                        for rest in text.split(call.as_str()).skip(1) {
                            if let Some(id) = rest.split('"').next() {
                                used.push((path.display().to_string(), id.to_string()));
                            }
                        }
                    }
                }
            }
        }
        assert!(used.len() > 50, "{}", used.len());
        let missing: Vec<_> = used.iter().filter(|(_, id)| !english.contains_key(id)).collect();
        assert!(missing.is_empty(), "{missing:?}");
        for id in ["settings-rule-from", "settings-rule-to", "settings-rule-subject"] {
            assert!(english.contains_key(id), "{id}");
        }
        for key in crate::portal::SECRET_QUESTIONS {
            assert!(english.contains_key(&format!("question-{}", key.replace('_', "-"))), "{key}");
        }
    }

    #[test]
    fn the_browser_language_is_negotiated() {
        let de = Lang::parse("de").expect("de");
        assert_eq!(Lang::negotiate("de-CH, de;q=0.9, en;q=0.5"), de);
        assert_eq!(Lang::negotiate("fr, en;q=0.8, de;q=0.9"), de, "by quality");
        assert_eq!(Lang::negotiate("fr, it"), Lang::ENGLISH, "none of ours: English");
        assert_eq!(Lang::negotiate("de;q=0, en"), Lang::ENGLISH, "q=0 excludes");
        assert_eq!(Lang::negotiate(""), Lang::ENGLISH);
        assert_eq!(Lang::parse("DE_at"), Some(de));
        assert_eq!(de.tag(), "de");
    }

    #[test]
    fn messages_take_their_values_and_fall_back_to_english() {
        let de = Lang::parse("de").expect("de");
        assert_eq!(
            Lang::ENGLISH.too_many_attempts(std::time::Duration::from_secs(7)),
            "Too many attempts. Please wait 7 seconds before trying again."
        );
        assert!(de.too_many_attempts(std::time::Duration::from_secs(1)).contains("1 Sekunde"), "plural forms");
        assert_eq!(de.get("no-such-message"), "no-such-message");
    }
}
