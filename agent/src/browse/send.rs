//! Mail composed on a browse page (new, reply, forward): checked, built as a MIME message
//! from the user's own address, handed to the agent's SMTP server while the user waits,
//! and kept in the user's `Sent` folder.

use std::path::Path;

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use noc_protocol::rts::fetch::{FetchError, FetchErrorCode, Outgoing};

use super::mail;
use crate::db::User;
use crate::smtp::Mailer;

/// Recipients of one message, at most.
const MAX_RECIPIENTS: usize = 100;
/// Text of one message, at most.
const MAX_BODY_BYTES: usize = 1024 * 1024;

fn bad(message: impl Into<String>) -> FetchError {
    FetchError { code: FetchErrorCode::BadRequest, message: message.into() }
}

fn mailboxes(list: &[String]) -> Result<Vec<Mailbox>, FetchError> {
    list.iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| a.parse::<Mailbox>().map_err(|_| bad(format!("not an e-mail address: {a}"))))
        .collect()
}

/// Builds the message (without sending it).
pub(super) fn build(user: &User, mail_root: &Path, out: &Outgoing) -> Result<Message, FetchError> {
    let (to, cc) = (mailboxes(&out.to)?, mailboxes(&out.cc)?);
    if to.is_empty() {
        return Err(bad("a message needs a recipient"));
    }
    if to.len() + cc.len() > MAX_RECIPIENTS {
        return Err(bad(format!("at most {MAX_RECIPIENTS} recipients")));
    }
    if out.subject.chars().count() > 500 || out.subject.contains(['\r', '\n']) {
        return Err(bad("a subject is one line of at most 500 characters"));
    }
    if out.body.len() > MAX_BODY_BYTES {
        return Err(bad("the text is too long"));
    }
    let from: Mailbox = user.mailbox().parse().map_err(|_| bad("the sender's address is not valid"))?;
    let mut b = Message::builder().from(from).subject(out.subject.clone()).date_now();
    for m in to {
        b = b.to(m);
    }
    for m in cc {
        b = b.cc(m);
    }
    if let Some(r) = &out.in_reply_to {
        let (id, mut refs) = mail::thread_ids(mail_root, &r.folder, &r.message_id)?;
        if let Some(id) = id {
            refs.push(id.clone());
            b = b.in_reply_to(format!("<{id}>"));
            b = b.references(refs.iter().map(|r| format!("<{r}>")).collect::<Vec<_>>().join(" "));
        }
    }
    let text = SinglePart::plain(out.body.replace("\r\n", "\n"));
    let attachments = match &out.forward_attachments_of {
        Some(r) => mail::attachments_of(mail_root, &r.folder, &r.message_id)?,
        None => Vec::new(),
    };
    let built = if attachments.is_empty() {
        b.singlepart(text)
    } else {
        let mut mixed = MultiPart::mixed().singlepart(text);
        for (name, content_type, data) in attachments {
            let ct = ContentType::parse(&content_type)
                .or_else(|_| ContentType::parse("application/octet-stream"))
                .map_err(|_| bad("an attachment has no usable type"))?;
            mixed = mixed.singlepart(Attachment::new(name).body(data, ct));
        }
        b.multipart(mixed)
    };
    built.map_err(|_| bad("the message could not be built"))
}

/// Sends it through the agent's SMTP server and keeps a copy in `Sent`.
pub(super) async fn send(mailer: &Mailer, user: &User, mail_root: &Path, out: &Outgoing) -> Result<(), FetchError> {
    let message = {
        let (user, root, out) = (user.clone(), mail_root.to_path_buf(), out.clone());
        tokio::task::spawn_blocking(move || build(&user, &root, &out))
            .await
            .map_err(|_| FetchError { code: FetchErrorCode::Internal, message: "the server failed".into() })??
    };
    let copy = message.formatted();
    mailer.send(message).await.map_err(|f| {
        // The server's words often name the recipient: only whether it was final is logged.
        tracing::warn!(permanent = f.permanent, "browse: the SMTP server did not take a message");
        if f.permanent {
            bad("the mail server refused the message")
        } else {
            FetchError {
                code: FetchErrorCode::Unavailable,
                message: "the mail server is not available; try again".into(),
            }
        }
    })?;
    let root = mail_root.to_path_buf();
    let kept = tokio::task::spawn_blocking(move || mail::store_sent(&root, &copy)).await;
    if !matches!(kept, Ok(Ok(()))) {
        tracing::warn!("browse: a sent message was not kept in the Sent folder");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use noc_protocol::rts::fetch::MessageRef;

    use super::*;

    fn user() -> User {
        User {
            user_id: noc_protocol::UserId::random(),
            email: "bob@corp.example".into(),
            first_name: "Bob".into(),
            last_name: "Ng".into(),
        }
    }

    fn outgoing(to: &[&str]) -> Outgoing {
        Outgoing {
            to: to.iter().map(|s| s.to_string()).collect(),
            cc: vec![],
            subject: "Re: Plan".into(),
            body: "Yes.\n".into(),
            in_reply_to: None,
            forward_attachments_of: None,
        }
    }

    #[test]
    fn a_reply_names_its_thread_and_a_forward_carries_the_attachments() {
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(root.path().join("cur")).expect("cur");
        std::fs::write(
            root.path().join("cur/1.a:2,S"),
            "From: a@x.example\r\nMessage-ID: <orig@x.example>\r\nReferences: <first@x.example>\r\nSubject: Plan\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n--B\r\nContent-Type: text/csv; name=d.csv\r\nContent-Disposition: attachment; filename=d.csv\r\n\r\na,b\r\n--B--\r\n",
        )
        .expect("msg");
        let r = MessageRef { folder: "INBOX".into(), message_id: "1.a".into() };
        let reply = Outgoing { in_reply_to: Some(r.clone()), ..outgoing(&["a@x.example"]) };
        let text = String::from_utf8(build(&user(), root.path(), &reply).expect("reply").formatted()).expect("utf8");
        assert!(text.contains("In-Reply-To: <orig@x.example>"), "{text}");
        assert!(text.contains("References: <first@x.example> <orig@x.example>"), "{text}");
        assert!(
            text.contains("From: \"Bob Ng\" <bob@corp.example>") || text.contains("From: Bob Ng <bob@corp.example>"),
            "{text}"
        );
        let forward = Outgoing { forward_attachments_of: Some(r), ..outgoing(&["c@y.example"]) };
        let text = String::from_utf8(build(&user(), root.path(), &forward).expect("fwd").formatted()).expect("utf8");
        assert!(text.contains("filename=\"d.csv\"") && text.contains("multipart/mixed"), "{text}");
    }

    #[test]
    fn bad_recipients_and_subjects_are_refused() {
        let root = tempfile::tempdir().expect("tmp");
        let code = |o: &Outgoing| build(&user(), root.path(), o).map(|_| ()).map_err(|e| e.code);
        assert_eq!(code(&outgoing(&[])), Err(FetchErrorCode::BadRequest));
        assert_eq!(code(&outgoing(&["not an address"])), Err(FetchErrorCode::BadRequest));
        let injected = Outgoing { subject: "Hi\r\nBcc: evil@x.example".into(), ..outgoing(&["a@x.example"]) };
        assert_eq!(code(&injected), Err(FetchErrorCode::BadRequest));
        assert_eq!(code(&outgoing(&["a@x.example"])), Ok(()));
        let missing = Outgoing {
            in_reply_to: Some(MessageRef { folder: "INBOX".into(), message_id: "nope".into() }),
            ..outgoing(&["a@x.example"])
        };
        assert_eq!(code(&missing), Err(FetchErrorCode::NotFound));
    }
}
