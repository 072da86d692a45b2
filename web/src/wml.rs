//! WML 1.1 for the WAP pages (white paper §6.1): the escaper of `.wml` templates and the
//! answer's media type.
//!
//! WML is XML, so text and attribute values escape `&`, `<`, `>` and quotes, and drop the
//! control characters XML does not allow; and WML reads `$name` as a variable, so a `$` in
//! data is written `$$` (WML 1.1 §10.3.1). Templates write their own variable references
//! (`$(login)`) as template text, which is never escaped.

use std::fmt::{self, Write};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use askama::Template;

/// WML's media type.
pub const CONTENT_TYPE: &str = "text/vnd.wap.wml; charset=utf-8";

/// The escaper of `.wml` templates (askama.toml).
#[derive(Clone, Copy, Debug, Default)]
pub struct Wml;

impl askama::filters::Escaper for Wml {
    fn write_escaped_str<W: Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        for c in string.chars() {
            match c {
                '&' => dest.write_str("&amp;")?,
                '<' => dest.write_str("&lt;")?,
                '>' => dest.write_str("&gt;")?,
                '"' => dest.write_str("&quot;")?,
                '\'' => dest.write_str("&#39;")?,
                '$' => dest.write_str("$$")?,
                '\t' | '\n' | '\r' => dest.write_char(c)?,
                // Not characters XML allows.
                c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
                c => dest.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A deck as the answer, with the portal's headers (no caching, no sniffing).
pub fn render<T: Template>(status: StatusCode, deck: &T) -> HttpResponse {
    let mut builder = HttpResponse::build(status);
    crate::page::secure(&mut builder);
    match deck.render() {
        Ok(text) => builder.content_type(CONTENT_TYPE).body(text),
        Err(e) => {
            tracing::error!(error = %e, "WML template failed");
            HttpResponse::InternalServerError().content_type("text/plain; charset=utf-8").body("internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use askama::filters::Escaper;

    use super::*;

    #[test]
    fn data_cannot_become_markup_or_a_variable() {
        let mut out = String::new();
        Wml.write_escaped_str(&mut out, "<b>$(x) & 'y' \u{1}\"z\"</b>\n").expect("write");
        assert_eq!(out, "&lt;b&gt;$$(x) &amp; &#39;y&#39; &quot;z&quot;&lt;/b&gt;\n");
    }
}
