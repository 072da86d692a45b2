//! Operator accounts (white paper §3.7.1–3.7.2, §8.5): the people who run the NOC. Each
//! has an individual login (no shared accounts), a role, an argon2id password and a TOTP
//! second factor that every sign-in needs; ten single-use recovery codes (stored hashed)
//! stand in for a lost authenticator. Sign-in is throttled like every password route.

use std::net::IpAddr;

use noc_protocol::secrets;

use crate::accounts::{AccountError, Accounts, Result};
use crate::invalid::Invalid;
use crate::model::{OperatorRecord, OperatorRole};
use crate::totp;

/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;

/// What enrolment hands out, once: the authenticator's secret and the recovery codes.
/// Nothing of it can be read back later (the store keeps the secret for checking codes,
/// and only hashes of the recovery codes).
pub struct Enrolment {
    pub operator: OperatorRecord,
    /// The TOTP secret in base32, for typing into an authenticator app.
    pub totp_secret: String,
    /// The `otpauth://` URI (what a QR code carries).
    pub totp_uri: String,
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolment").field("operator", &self.operator).finish_non_exhaustive()
    }
}

/// Login names: 3 to 64 of `a-z 0-9 . _ -`, compared lower case.
fn operator_name(name: &str) -> Result<String> {
    let n = name.trim().to_lowercase();
    let ok = (3..=64).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok { Ok(n) } else { Err(Invalid::OperatorName.into()) }
}

/// `xxxxx-xxxxx` from 32 characters without look-alikes (no i, l, o, 1): 50 bits each.
fn recovery_code() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz023456789";
    let bytes = secrets::random_bytes::<10>();
    let mut code: String = bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect();
    code.insert(5, '-');
    code
}

fn recovery_hash(code: &str) -> Vec<u8> {
    secrets::token_hash(code.trim().to_lowercase().as_bytes())
}

impl Accounts {
    /// Creates an operator (the CLI's bootstrap, later the consoles): the password follows
    /// the password rules; the TOTP secret and recovery codes are returned once.
    pub async fn create_operator(
        &self,
        name: &str,
        role: OperatorRole,
        password: &str,
        actor: &str,
    ) -> Result<Enrolment> {
        let enrolment = self.create_operator_unaudited(name, role, password, actor).await?;
        let subject = format!("operator:{}", enrolment.operator.name);
        self.audit(actor.to_string(), "operator.create", subject, format!("role={}", role.as_str())).await;
        Ok(enrolment)
    }

    /// [`Accounts::create_operator`] for callers that audit it themselves.
    pub(crate) async fn create_operator_unaudited(
        &self,
        name: &str,
        role: OperatorRole,
        password: &str,
        actor: &str,
    ) -> Result<Enrolment> {
        let name = operator_name(name)?;
        self.check_new_password(password)?;
        let password_hash = self.hash_password(password).await?;
        let secret = secrets::random_bytes::<{ totp::SECRET_BYTES }>().to_vec();
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let hashes: Vec<Vec<u8>> = codes.iter().map(|c| recovery_hash(c)).collect();
        let operator = OperatorRecord {
            id: secrets::random_hex::<16>(),
            name: name.clone(),
            role,
            password_hash,
            totp_secret: secret.clone(),
            totp_last_step: 0,
            disabled: false,
            created_at: noc_protocol::clock::unix_ms_i64(),
            created_by: actor.to_string(),
        };
        self.store().insert_operator(&operator, &hashes).await?;
        Ok(Enrolment {
            totp_secret: totp::base32(&secret),
            totp_uri: totp::otpauth_uri("NOC", &name, &secret),
            recovery_codes: codes,
            operator,
        })
    }

    /// Every operator, by name.
    pub async fn operators(&self) -> Result<Vec<OperatorRecord>> {
        Ok(self.store().operators().await?)
    }

    /// An operator's sign-in: name and password (throttled like every password route;
    /// an unknown name takes as long and answers alike), then the second factor — the
    /// current TOTP code, usable once, or one of the recovery codes. Any failure is
    /// `InvalidCredentials`; a disabled operator is `Suspended` after the right password.
    pub async fn operator_sign_in(
        &self,
        name: &str,
        password: &str,
        second_factor: &str,
        source: IpAddr,
    ) -> Result<OperatorRecord> {
        let login = name.trim().to_lowercase();
        let key = format!("operator:{login}");
        let found = self.store().operator_by_name(&login).await?;
        self.throttled_check(&key, source, password, found.as_ref().map(|o| o.password_hash.as_str())).await?;
        let Some(operator) = found else { return Err(AccountError::InvalidCredentials) };
        if operator.disabled {
            return Err(AccountError::Suspended);
        }
        let now_s = u64::try_from(noc_protocol::clock::unix_ms_i64() / 1000).unwrap_or(0);
        let passed = match totp::verify(&operator.totp_secret, second_factor, now_s) {
            // A code works once: a step used before (or an older one) is a replay.
            Some(step) => self.store().use_totp_step(&operator.id, i64::try_from(step).unwrap_or(i64::MAX)).await?,
            None => {
                let now = noc_protocol::clock::unix_ms_i64();
                self.store().use_recovery_code(&operator.id, &recovery_hash(second_factor), now).await?
            }
        };
        if !passed {
            // The password was right: the guess at the second factor still counts.
            self.throttle_request(&key, source)?;
            self.audit(
                format!("operator:{login}"),
                "operator.sign_in_failed",
                format!("operator:{login}"),
                "second_factor".into(),
            )
            .await;
            return Err(AccountError::InvalidCredentials);
        }
        self.audit(format!("operator:{login}"), "operator.sign_in", format!("operator:{login}"), String::new()).await;
        Ok(operator)
    }
}
