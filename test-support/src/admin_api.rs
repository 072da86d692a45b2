//! A client of the admin API on a node's console listener, for the tests: operators are
//! bootstrapped as `noc admin operator create` does, and sign in with a TOTP code computed
//! from the enrolment's secret, as an authenticator app would.

use std::net::SocketAddr;
use std::path::Path;

use noc_app::store_admin::Admin;
use noc_storage::model::OperatorRole;
use noc_storage::operators::Enrolment;
use noc_storage::totp;
use serde_json::Value;

/// An operator the test created, with what they sign in with.
pub struct TestOperator {
    pub name: String,
    pub password: String,
    pub enrolment: Enrolment,
}

impl TestOperator {
    /// Creates the operator in the node's store.
    pub async fn create(admin: &Admin, name: &str, role: OperatorRole) -> TestOperator {
        let password = format!("{name}-operator-password");
        let enrolment = admin.create_operator(name, role, &password).await.expect("create operator");
        TestOperator { name: name.to_string(), password, enrolment }
    }

    /// The authenticator's current code.
    pub fn code(&self) -> String {
        let now = u64::try_from(noc_protocol::clock::unix_ms_i64() / 1000).unwrap_or(0);
        format!("{:06}", totp::hotp(&self.enrolment.operator.totp_secret, totp::step(now)))
    }
}

/// The admin API of one node.
pub struct AdminApi {
    http: reqwest::Client,
    base: String,
}

impl AdminApi {
    pub fn new(console: SocketAddr, cert: &Path) -> AdminApi {
        let tls = crate::client_config(cert, &[b"http/1.1"]).expect("TLS config");
        let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client");
        AdminApi { http, base: format!("https://localhost:{}/admin/v1", console.port()) }
    }

    /// Signs `op` in for a token of `scope`: with the current TOTP code the first time,
    /// with recovery code `n` after (a TOTP code works once).
    pub async fn token(&self, op: &TestOperator, scope: &str, recovery: Option<usize>) -> String {
        let code = match recovery {
            None => op.code(),
            Some(n) => op.enrolment.recovery_codes[n].clone(),
        };
        let body = serde_json::json!({
            "name": op.name, "password": op.password, "code": code, "scope": scope, "label": "test",
        });
        let (status, answer) = self.call("POST", "/tokens", None, Some(body)).await;
        assert_eq!(status, 201, "sign-in of {}: {answer}", op.name);
        answer["token"].as_str().expect("token").to_string()
    }

    /// One request; the answer's JSON (or its text as a JSON string).
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, token, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A request with a body of `content_type`; the answer's text.
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("admin API request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn call_text(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin API request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}
