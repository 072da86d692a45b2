//! A minimal browser for the web portal's HTTP tests: it keeps cookies as a browser
//! would (honouring `Max-Age=0` deletions, refusing `__Host-` cookies without `Secure`
//! and `Path=/`), does not follow redirects (tests look at them), and sends `Origin` with
//! its forms as browsers do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use reqwest::header::HeaderMap;

/// One answer, as a test wants to look at it.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect()
    }

    /// The value of hidden field `name` in the first form that has one.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_string())
    }
}

pub struct WebClient {
    http: reqwest::Client,
    addr: SocketAddr,
    cert: std::path::PathBuf,
    origin: String,
    pub cookies: BTreeMap<String, String>,
    pub user_agent: String,
    /// The browser's language preference (`Accept-Language`), if any.
    pub accept_language: Option<String>,
}

impl WebClient {
    /// A browser for the node whose public listener is `addr`, trusting `cert`.
    pub fn new(addr: SocketAddr, cert: &Path) -> Self {
        let tls = crate::client_config(cert, &[b"http/1.1"]).expect("tls");
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve("localhost", addr)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            http,
            addr,
            cert: cert.to_path_buf(),
            origin: format!("https://localhost:{}", addr.port()),
            cookies: BTreeMap::new(),
            user_agent: "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0".into(),
            accept_language: None,
        }
    }

    /// The same browser, preferring these languages (an `Accept-Language` value).
    pub fn speaking(mut self, accept_language: &str) -> Self {
        self.accept_language = Some(accept_language.to_string());
        self
    }

    /// The same browser connecting from another local address (`127.0.0.2`: any
    /// loopback address works on Linux), as a client elsewhere would.
    pub fn from_address(mut self, local: std::net::IpAddr) -> Self {
        let tls = crate::client_config(&self.cert, &[b"http/1.1"]).expect("tls");
        self.http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .resolve("localhost", self.addr)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local)
            .build()
            .expect("client");
        self
    }

    /// The same cookies, talking to another node (behind a load balancer, one user's
    /// requests may land on any node).
    pub fn on_node(&self, addr: SocketAddr, cert: &Path) -> Self {
        let mut other = Self::new(addr, cert);
        other.cookies = self.cookies.clone();
        other.user_agent = self.user_agent.clone();
        other
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for v in headers.get_all("set-cookie") {
            let Ok(text) = v.to_str() else { continue };
            let mut parts = text.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
            let attrs: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
            if name.starts_with("__Host-")
                && !(attrs.iter().any(|a| a == "secure") && attrs.iter().any(|a| a == "path=/"))
            {
                continue;
            }
            if attrs.iter().any(|a| a == "max-age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.absorb(&headers);
        let body = resp.text().await.expect("body");
        Page { status, headers, body }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let mut req = self
            .http
            .get(format!("{}{path}", self.origin))
            .header("Cookie", self.cookie_header())
            .header("User-Agent", &self.user_agent);
        if let Some(l) = &self.accept_language {
            req = req.header("Accept-Language", l);
        }
        let resp = req.send().await.expect("GET");
        self.finish(resp).await
    }

    /// Posts a form as a browser does from one of the site's own pages.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.origin.clone();
        self.post_from(path, form, Some(&origin)).await
    }

    /// Posts a form with the given `Origin` header (`None`: none, like some older browsers).
    pub async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let body = form.iter().map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v))).collect::<Vec<_>>().join("&");
        let mut req = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("Cookie", self.cookie_header())
            .header("User-Agent", &self.user_agent)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        if let Some(l) = &self.accept_language {
            req = req.header("Accept-Language", l);
        }
        let resp = req.send().await.expect("POST");
        self.finish(resp).await
    }

    /// Signs in through the form: loads it (for its CSRF value), posts it, and returns the
    /// answer to the post.
    pub async fn sign_in(&mut self, login: &str, password: &str, remember: bool) -> Page {
        let form = self.get("/login").await;
        let csrf = form.hidden("csrf").unwrap_or_default();
        let mut fields = vec![("csrf", csrf.as_str()), ("login", login), ("password", password)];
        if remember {
            fields.push(("remember", "1"));
        }
        self.post("/login", &fields).await
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
