//! What the account rules refuse, as values: the RTS API words them in English (their
//! `Display`, the protocol's error messages), the web portal in the user's language from
//! its message catalogue. No caller parses a message.

use thiserror::Error;

/// A name field of a user, as the RTS API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameField {
    FirstName,
    LastName,
}

impl std::fmt::Display for NameField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameField::FirstName => "FirstName",
            NameField::LastName => "LastName",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Invalid {
    #[error("password must be {min} to {max} characters")]
    PasswordLength { min: usize, max: usize },
    #[error("choose a password other than the one in the welcome mail")]
    PasswordReused,
    #[error("Email must be an SMTP address")]
    Email,
    #[error("the contact address must be an e-mail address")]
    ContactEmail,
    #[error("the license administrator's address must be an e-mail address")]
    AdminEmail,
    #[error("alerts go to an e-mail address")]
    AlertEmail,
    #[error("at most {max} confirmation mails for alert addresses a day")]
    AlertEmailRationed { max: u32 },
    #[error("a webhook is an https:// address of at most 2000 characters")]
    WebhookUrl,
    #[error("quiet hours are two hours of the day, 0 to 23, or none")]
    QuietHours,
    #[error("Msisdn must be 5 to 20 digits, optionally after '+'")]
    Msisdn,
    #[error("TimeZone must be an IANA zone name or UTC offset")]
    TimeZone,
    #[error("Locale must be a language tag such as en or de-CH")]
    Locale,
    #[error("calendar days ahead must be 1 to 365")]
    CalendarDaysAhead,
    #[error("{0} must be at most 100 printable characters")]
    Name(NameField),
    /// `DeviceName` or `DeviceType` at device activation.
    #[error("{0} must be at most 100 characters")]
    DeviceAttribute(&'static str),
    #[error("a device name is 1 to 64 printable characters")]
    DeviceName,
    #[error("at most {max} alert rules")]
    TooManyRules { max: usize },
    #[error("an alert rule looks at From, To or Subject")]
    RuleField,
    #[error("the text of an alert rule must be 1 to {max} printable characters")]
    RuleText { max: usize },
    #[error("license name must be 1 to 128 characters")]
    LicenseName,
    #[error("an operator name is 3 to 64 of a-z, 0-9, '.', '_' and '-'")]
    OperatorName,
    #[error("a token must live at least one second")]
    TokenLifetime,
    #[error("a usage range is 1 to 400 days, its start before its end")]
    UsageRange,
    #[error("an operator cannot do this to their own account")]
    OwnAccount,
    /// An operator asked for a recovery mail for a user who cannot use one.
    #[error("only an activated user can reset their password by mail")]
    NotRecoverable,
    #[error("recovery mails for this user are rationed: try again within the hour")]
    RecoveryRationed,
    #[error("secret-question recovery is not offered for this account")]
    QuestionNotOffered,
    #[error("choose one of the questions offered")]
    QuestionUnknown,
    #[error("the answer must be {min} to {max} characters long")]
    AnswerLength { min: usize, max: usize },
    /// The node's password-hashing settings (a configuration error at start).
    #[error("password hashing: {0}")]
    Hashing(String),
}
