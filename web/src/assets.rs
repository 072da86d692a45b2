//! The portal's only asset, served by the relay itself (no CDN).

use actix_web::HttpResponse;

pub const STYLESHEET: &str = "/static/noc.css";
const CSS: &str = include_str!("../static/noc.css");

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(CSS)
}
