//! Reading a JSON request body so that a refusal names the field at fault but never
//! repeats the parser's own text (docs/protocol.md §3): the relay's RTS API and the admin
//! API answer alike. The parser's words go to the log at debug level.

use serde::de::DeserializeOwned;

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Safe to send to the client: names the field, quotes nothing of the client's.
    pub message: String,
    /// Where the parser stopped and why in general terms, for the server's debug log (no
    /// value of the body).
    pub detail: String,
}

/// Decodes `body` into `T`.
///
/// A body is parsed once, untracked; only a refused one is parsed again with the path
/// tracked, to name the field in the answer (tracking copies every key it passes: about a
/// quarter of a busy relay's heap allocations were these copies).
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize::<_, T>(&mut de);
    let (path, error) = match parsed {
        Ok(value) => match de.end() {
            Ok(()) => return Ok(value),
            Err(e) => (String::new(), e),
        },
        Err(e) => (e.path().to_string(), e.into_inner()),
    };
    // Not the parser's message: it can quote the value it refused (a password sent as a
    // number), and logs keep no secrets.
    let detail = format!("{:?} error at line {} column {} ({path})", error.classify(), error.line(), error.column());
    Err(Refusal { message: describe(&path, &error), detail })
}

/// A client-safe account of `error` at `path` (`.` or empty: the document itself).
fn describe(path: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if !matches!(error.classify(), Category::Data) {
        return "request body is not valid JSON".into();
    }
    // Only names made of our own alphabet are repeated: a path or a field name can be the
    // client's own text (an unknown key), which an answer does not echo.
    let ours = |name: &str| {
        !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
    };
    let path = Some(path).filter(|p| *p != "." && ours(p));
    // serde names the field between backticks: "missing field `Email`".
    let text = error.to_string();
    let quoted = |prefix: &str| -> Option<String> {
        let rest = text.strip_prefix(prefix)?;
        let name = &rest[..rest.find('`')?];
        ours(name).then(|| name.to_owned())
    };
    if let Some(name) = quoted("missing field `") {
        return match path {
            Some(p) => format!("missing field `{p}.{name}`"),
            None => format!("missing field `{name}`"),
        };
    }
    if text.starts_with("unknown field `") {
        // The path ends with the unknown key itself.
        return match path.or(quoted("unknown field `").as_deref()) {
            Some(p) => format!("unknown field `{p}`"),
            None => "request body has a field this endpoint does not know".into(),
        };
    }
    match (path, text.starts_with("unknown variant")) {
        (Some(p), true) => format!("unknown value at `{p}`"),
        (Some(p), false) => format!("invalid value at `{p}`"),
        // Inside a `Type`-tagged request serde reads the fields as a whole: no path.
        (None, true) => "a field has a value this endpoint does not know (such as `Type` or `Kind`)".into(),
        (None, false) => "request body does not match this endpoint's fields".into(),
    }
}
