//! Delivery through Microsoft Graph `sendMail` (`transport graph`): for Microsoft 365 tenants
//! or mailboxes where SMTP AUTH is turned off. Same outbox, slots, deadlines, token cache and
//! binding as SMTP; only the hand-over differs: one `POST
//! https://{graph host}/v1.0/users/{mailbox}/sendMail` per message, `202 Accepted` = taken.
//!
//! **Form: JSON, not MIME.** Graph's MIME form (the whole message base64 in a `text/plain`
//! body) takes no parameters, so its messages are always saved to the mailbox's Sent Items; a
//! notification flood would fill the mailbox until Exchange refuses it as full. The JSON form
//! sends `saveToSentItems: false`. The price: Graph keeps only custom `x-` headers (at most 5,
//! refused beyond that) of the original header set, so `X-OxNotify-Severity` survives and
//! Exchange writes its own Message-ID and Date. The message is built from the spooled RFC 5322
//! bytes (the outbox keeps those, whatever the transport): subject, the text or HTML body,
//! From with the author's name, and the envelope's recipients as `toRecipients` (Graph has no
//! envelope).
//!
//! **Errors** come from the HTTP status and Graph's error `code`, never its message (which
//! "can change at any time"): see [`classify`]. Every text Graph sends back is redacted of the
//! token in any encoding and cut to one line, like an SMTP reply.
//!
//! **The login check** ([`deliver_batch`] with no messages) is a `sendMail` without any
//! recipient: Graph checks the token, the Mail.Send permission (or the RBAC for Applications
//! scope), the mailbox and the right to send as From before it looks at the recipients, and
//! then refuses it with 400 (`ErrorInvalidRecipients`), sending nothing. A `GET` on the
//! mailbox cannot prove Mail.Send: reading a user or its settings needs other permissions
//! (User.Read.All, MailboxSettings.Read) that a least-privilege app does not have and must not
//! be asked for. The order of Graph's checks is observed, not documented.

use super::smtp::{Batch, Outgoing};
use crate::config::smtp::{OAuth2Flow, SmtpTarget};
use crate::error::{Error, GraphProblem, Result};
use crate::oauth2::{HttpRequest, HttpResponse, RequestDeadline, TokenHttpClient};
use crate::redact::{self, Redactor};
use crate::secret::Secret;
use crate::settings::Settings;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Graph refuses requests over about 4 MB with 413 (MIME and attachments through sendMail):
/// a larger message is refused here, before it is sent.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Graph refuses more than 5 `internetMessageHeaders`, and any whose name does not start
/// with `x-` (`InvalidInternetMessageHeader`).
pub const MAX_CUSTOM_HEADERS: usize = 5;

/// The longest `Retry-After` honoured (Graph's are seconds, sometimes fractional).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Hand `messages` to Graph for `target`, one `sendMail` request each, in order, with the
/// access token `token`, by `deadline`. `accepted(i)` runs as soon as Graph answered 202 for
/// message `i`. A message Graph refuses for good (400, 413) is reported and the next one
/// goes; anything about the token, the app, the mailbox or Graph's availability stops the
/// batch (the same for every message). No messages: the login check (see the module doc).
pub fn deliver_batch(
    settings: &Settings,
    http: &dyn TokenHttpClient,
    target: &SmtpTarget,
    token: &Secret,
    messages: &[Outgoing],
    deadline: Instant,
    accepted: &mut dyn FnMut(usize),
) -> Batch {
    let stopped = |e: Error| Batch {
        done: Vec::new(),
        stopped: Some(e),
    };
    let url = match crate::oauth2::provider::graph_url(target, &settings.provider_hosts) {
        Ok(u) => u,
        Err(e) => return stopped(e),
    };
    let call = Call {
        http,
        target,
        token,
        url: &url,
        deadline,
        redactor: Redactor::new().secret(Some(token)),
    };
    if messages.is_empty() {
        return match call.post(&probe_request(target)) {
            Ok(()) => Batch::default(),
            // no recipients: the request passed every check before them
            Err(Error::Graph {
                status: Some(400), ..
            }) => Batch::default(),
            Err(e) => stopped(e),
        };
    }
    let mut batch = Batch::default();
    for (i, m) in messages.iter().enumerate() {
        let sent = json_request(target, m).and_then(|body| call.post(&body));
        match sent {
            Ok(()) => {
                accepted(i);
                batch.done.push(Ok(()));
            }
            Err(
                e @ Error::Graph {
                    problem: GraphProblem::MessageRefused,
                    ..
                },
            ) => batch.done.push(Err(e)),
            Err(e) => {
                batch.stopped = Some(e);
                break;
            }
        }
    }
    batch
}

/// One target's requests: where to, with what, by when.
struct Call<'a> {
    http: &'a dyn TokenHttpClient,
    target: &'a SmtpTarget,
    token: &'a Secret,
    url: &'a url::Url,
    deadline: Instant,
    redactor: Redactor,
}

impl Call<'_> {
    /// POST one sendMail body; `Ok` on 202 (any 2xx).
    fn post(&self, body: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.refused(e.to_string()))?;
        if bytes.len() > MAX_REQUEST_BYTES {
            return Err(self.refused(format!(
                "the message is {} KB as a Graph request, over Graph's limit of about 4 MB \
                 (Graph answers 413): shorten the notification",
                bytes.len() / 1024
            )));
        }
        if self.deadline <= Instant::now() {
            return Err(self.unavailable("the delivery deadline passed before the request"));
        }
        let mut req = HttpRequest::new(bytes);
        *req.method_mut() = oauth2::http::Method::POST;
        *req.uri_mut() = self
            .url
            .as_str()
            .parse()
            .map_err(|_| Error::param("server", "not a valid Graph URL"))?;
        let headers = req.headers_mut();
        let bearer =
            oauth2::http::HeaderValue::from_str(&format!("Bearer {}", self.token.expose()))
                .map_err(|_| {
                    self.unavailable(
                        "the access token is not a valid HTTP header value (refreshing)",
                    )
                })?;
        headers.insert(oauth2::http::header::AUTHORIZATION, bearer);
        headers.insert(
            oauth2::http::header::CONTENT_TYPE,
            oauth2::http::HeaderValue::from_static("application/json"),
        );
        req.extensions_mut().insert(RequestDeadline(self.deadline));
        let resp = self.http.call(req).map_err(|e| {
            // a request cut after it was sent may still have been delivered: sendMail is not
            // idempotent, so the retry may deliver it twice (at-least-once, as with SMTP)
            self.unavailable(&format!(
                "cannot reach {}: {}",
                self.url.host_str().unwrap_or_default(),
                self.redactor.peer_text(&e.to_string())
            ))
        })?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(classify(self.target, &resp, &self.redactor))
    }

    fn refused(&self, message: String) -> Error {
        graph_error(
            self.target,
            GraphProblem::MessageRefused,
            None,
            None,
            message,
        )
    }

    fn unavailable(&self, message: &str) -> Error {
        graph_error(
            self.target,
            GraphProblem::Unavailable,
            None,
            None,
            message.to_string(),
        )
    }
}

fn graph_error(
    target: &SmtpTarget,
    problem: GraphProblem,
    status: Option<u16>,
    code: Option<String>,
    message: String,
) -> Error {
    Error::Graph {
        target: target.name.clone(),
        problem,
        status,
        code,
        message,
        retry_after: None,
    }
}

/// The sendMail body (JSON form) of one spooled message.
fn json_request(target: &SmtpTarget, m: &Outgoing) -> Result<Value> {
    let refused = |what: &str| {
        graph_error(
            target,
            GraphProblem::MessageRefused,
            None,
            None,
            format!("the spooled message cannot be read as e-mail ({what})"),
        )
    };
    let parsed = mail_parser::MessageParser::default()
        .parse(&m.body)
        .ok_or_else(|| refused("no RFC 5322 message"))?;
    let html = parsed.html_part(0).and_then(|p| match &p.body {
        mail_parser::PartType::Html(h) => Some(h.to_string()),
        _ => None,
    });
    let body = match html {
        Some(h) => json!({"contentType": "HTML", "content": h}),
        None => json!({
            "contentType": "Text",
            "content": parsed.body_text(0).map(|t| t.to_string()).unwrap_or_default(),
        }),
    };
    let address = |a: &str| json!({"emailAddress": {"address": a}});
    let from = match parsed.from().and_then(|f| f.first()) {
        Some(a) => json!({"emailAddress": {
            "address": a.address().unwrap_or(&target.from_address),
            "name": a.name().unwrap_or_default(),
        }}),
        None => address(&target.from_address),
    };
    let headers: Vec<Value> = parsed
        .headers_raw()
        .filter(|(name, _)| name.len() > 2 && name[..2].eq_ignore_ascii_case("x-"))
        .take(MAX_CUSTOM_HEADERS)
        .map(|(name, value)| json!({"name": name, "value": redact::one_line(value.trim(), 995)}))
        .collect();
    let mut message = json!({
        "subject": parsed.subject().unwrap_or_default(),
        "body": body,
        "from": from,
        "toRecipients": m.to.iter().map(|a| address(a.as_ref())).collect::<Vec<_>>(),
    });
    if !headers.is_empty() {
        message["internetMessageHeaders"] = Value::Array(headers);
    }
    Ok(json!({"message": message, "saveToSentItems": false}))
}

/// The login check's body: From as configured, no recipient (nothing can be delivered).
fn probe_request(target: &SmtpTarget) -> Value {
    json!({
        "message": {
            "subject": "oxnotify login check (no recipients, not delivered)",
            "body": {"contentType": "Text", "content": ""},
            "from": {"emailAddress": {"address": target.from_address}},
        },
        "saveToSentItems": false,
    })
}

/// `Retry-After` in seconds, fractional as Graph sends it (`2.128`), capped.
fn retry_after(resp: &HttpResponse) -> Option<Duration> {
    let v = resp.headers().get("retry-after")?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// What a non-2xx answer means and what to do, from the status and Graph's `code`
/// (`{"error":{"code","message","innerError":{"request-id","date",..}}}`).
fn classify(target: &SmtpTarget, resp: &HttpResponse, redactor: &Redactor) -> Error {
    let status = resp.status().as_u16();
    let doc: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    let err = &doc["error"];
    let code = err["code"].as_str().map(|c| redactor.peer_text(c));
    let text = err["message"]
        .as_str()
        .map(|m| redactor.peer_text(m))
        .unwrap_or_else(|| {
            redactor.peer_text(&String::from_utf8_lossy(
                &resp.body()[..resp.body().len().min(200)],
            ))
        });
    let inner = &err["innerError"];
    let support: Vec<String> = ["request-id", "client-request-id", "date"]
        .iter()
        .filter_map(|k| {
            inner[*k]
                .as_str()
                .map(|v| format!("{k} {}", redactor.peer_text(v)))
        })
        .collect();
    let mailbox = target.auth_identity();
    // a minted token (client credentials, password) was new: refreshing cannot help
    let minted = target.flow().mints();
    let app_only = target.flow() == OAuth2Flow::ClientCredentials;
    let c = code.as_deref().unwrap_or("");
    let (problem, hint) = match (status, c) {
        (_, "ApplicationThrottled" | "TooManyRequests" | "serviceNotAvailable")
        | (429 | 500 | 502 | 503 | 504, _) => (
            GraphProblem::Unavailable,
            "Graph is throttling or busy; oxnotify waits as Graph asks (Retry-After) within the \
             delivery deadline, then the message waits in the outbox"
                .to_string(),
        ),
        (401, _) if minted => (
            GraphProblem::AdminFix,
            format!(
                "Graph refused a newly minted token for mailbox {mailbox}: the token must be for \
                 Graph (app-only scope https://graph.microsoft.com/.default, not Outlook's), \
                 from the tenant of the mailbox and the cloud of the Graph host"
            ),
        ),
        (401, _) => (
            GraphProblem::TokenRefused,
            format!(
                "Graph refused the access token for mailbox {mailbox} (revoked, or not for \
                 Graph): authorize the target again (its scope must be Graph's Mail.Send)"
            ),
        ),
        (_, "ErrorSendAsDenied") => (
            GraphProblem::AdminFix,
            format!(
                "mailbox {mailbox} may not send as {from}: grant it Send As (or Send on Behalf) \
                 for {from} in Exchange (Add-RecipientPermission {from} -AccessRights SendAs \
                 -Trustee {mailbox}), or set from-address to {mailbox}",
                from = target.from_address
            ),
        ),
        (404, _) | (_, "ErrorInvalidUser" | "MailboxNotEnabledForRESTAPI") => (
            GraphProblem::AdminFix,
            format!(
                "Graph has no usable mailbox {mailbox} (unknown user, no Exchange Online \
                 licence, inactive or on-premises): set username (or from-address) to the \
                 user principal name of an Exchange Online mailbox; a new mailbox may need a \
                 while"
            ),
        ),
        (403, _) if app_only => (
            GraphProblem::AdminFix,
            format!(
                "the app may not send as {mailbox}: grant it the Microsoft Graph application \
                 permission Mail.Send with admin consent, or scope it with Exchange RBAC for \
                 Applications (New-ManagementRoleAssignment -App <app id> -Role \"Application \
                 Mail.Send\" -CustomResourceScope <scope containing {mailbox}>; check with \
                 Test-ServicePrincipalAuthorization); changes take 30 minutes to 2 hours"
            ),
        ),
        (403, _) => (
            GraphProblem::AdminFix,
            format!(
                "the app needs the delegated Microsoft Graph permission Mail.Send (consented), \
                 and {mailbox} must be the mailbox that authorized (another mailbox needs \
                 Mail.Send.Shared and Send As rights)"
            ),
        ),
        (413, _) | (_, "ErrorMessageSizeExceeded") => (
            GraphProblem::MessageRefused,
            "the message is too large for Graph (about 4 MB per request)".to_string(),
        ),
        (_, "ErrorQuotaExceeded") => (
            GraphProblem::AdminFix,
            format!("mailbox {mailbox} is full: free space or raise its quota"),
        ),
        (400, _) => (
            GraphProblem::MessageRefused,
            "Graph refused this message".to_string(),
        ),
        (s, _) if s >= 500 => (GraphProblem::Unavailable, "Graph is failing".to_string()),
        _ => (
            GraphProblem::AdminFix,
            "unexpected answer from Graph: check the target's server (the Graph host)".to_string(),
        ),
    };
    let mut message = format!("HTTP {status}");
    if let Some(c) = &code {
        message.push_str(&format!(" {c}"));
    }
    message.push_str(&format!(": {text}"));
    if !support.is_empty() {
        message.push_str(&format!(" ({})", support.join(", ")));
    }
    message.push_str(&format!("; {hint}"));
    Error::Graph {
        target: target.name.clone(),
        problem,
        status: Some(status),
        code,
        message,
        retry_after: if problem == GraphProblem::Unavailable {
            retry_after(resp)
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::smtp::{AuthMethod, Transport};
    use crate::notification::Notification;

    fn target() -> SmtpTarget {
        SmtpTarget {
            auth_method: AuthMethod::MicrosoftOAuth2,
            transport: Some(Transport::Graph),
            author: Some("PVE".into()),
            username: Some("mbx@contoso.com".into()),
            ..SmtpTarget::new(
                "g",
                "graph.microsoft.com",
                "alerts@contoso.com",
                vec!["ops@contoso.com".into(), "b@contoso.com".into()],
            )
        }
    }

    fn answer(status: u16, body: &str, retry: Option<&str>) -> HttpResponse {
        let mut r = HttpResponse::new(body.as_bytes().to_vec());
        *r.status_mut() = oauth2::http::StatusCode::from_u16(status).unwrap();
        if let Some(v) = retry {
            r.headers_mut().insert(
                "retry-after",
                oauth2::http::HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    fn graph(code: &str) -> String {
        format!(
            r#"{{"error":{{"code":"{code}","message":"m","innerError":{{"request-id":"r-1","date":"2026-12-06T04:00:00"}}}}}}"#
        )
    }

    #[test]
    fn the_json_form_carries_subject_body_from_recipients_and_x_headers_only() {
        let t = target();
        let n = Notification {
            title: "Backup failed: ünïcode".into(),
            body: "line 1\nline 2\n".into(),
            ..Default::default()
        };
        let m = Outgoing::of(&n.to_message(&t).unwrap());
        let v = json_request(&t, &m).unwrap();
        assert_eq!(v["saveToSentItems"], false);
        let msg = &v["message"];
        assert_eq!(msg["subject"], "Backup failed: ünïcode");
        assert_eq!(msg["body"]["contentType"], "Text");
        assert!(msg["body"]["content"].as_str().unwrap().contains("line 2"));
        assert_eq!(msg["from"]["emailAddress"]["address"], "alerts@contoso.com");
        assert_eq!(msg["from"]["emailAddress"]["name"], "PVE");
        let to: Vec<&str> = msg["toRecipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["emailAddress"]["address"].as_str().unwrap())
            .collect();
        assert_eq!(to, ["ops@contoso.com", "b@contoso.com"]);
        let headers = msg["internetMessageHeaders"].as_array().unwrap();
        assert!(!headers.is_empty() && headers.len() <= MAX_CUSTOM_HEADERS);
        for h in headers {
            assert!(h["name"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .starts_with("x-"));
        }
        // HTML notifications go as HTML
        let n = Notification {
            html_body: Some("<p>hi</p>".into()),
            ..n
        };
        let v = json_request(&t, &Outgoing::of(&n.to_message(&t).unwrap())).unwrap();
        assert_eq!(v["message"]["body"]["contentType"], "HTML");
        assert!(v["message"]["body"]["content"]
            .as_str()
            .unwrap()
            .contains("<p>hi</p>"));
    }

    #[test]
    fn errors_map_by_status_and_code() {
        let t = target();
        let r = Redactor::new();
        let kind = |status, body: &str| classify(&t, &answer(status, body, None), &r);
        let e = classify(
            &t,
            &answer(429, &graph("TooManyRequests"), Some("2.128")),
            &r,
        );
        assert!(e.is_transient(), "{e}");
        assert_eq!(e.retry_after(), Some(Duration::from_millis(2128)));
        for (s, c) in [
            (503, "serviceNotAvailable"),
            (504, "x"),
            (429, "ApplicationThrottled"),
        ] {
            assert!(kind(s, &graph(c)).is_transient());
        }
        let e = kind(401, &graph("InvalidAuthenticationToken"));
        assert!(e.is_auth_rejected() && e.needs_reauthorization(), "{e}");
        let e = kind(403, &graph("ErrorSendAsDenied"));
        assert!(e.needs_admin_fix());
        let m = e.to_string();
        assert!(
            m.contains("mbx@contoso.com") && m.contains("alerts@contoso.com"),
            "{m}"
        );
        assert!(m.contains("request-id r-1"), "{m}");
        for (s, c) in [
            (404, "ErrorInvalidUser"),
            (404, "MailboxNotEnabledForRESTAPI"),
        ] {
            let e = kind(s, &graph(c));
            assert!(e.needs_admin_fix() && e.to_string().contains("mbx@contoso.com"));
        }
        let e = kind(403, &graph("ErrorAccessDenied"));
        assert!(
            e.needs_admin_fix() && e.to_string().contains("delegated"),
            "{e}"
        );
        let e = kind(413, "");
        assert_eq!(e.kind(), crate::error::ErrorKind::InvalidInput, "{e}");
        // app-only: the RBAC for Applications way to grant, and a refused new token is the
        // app registration's problem, not an authorization to redo
        let mut app = target();
        app.oauth2_flow = Some(OAuth2Flow::ClientCredentials);
        let e = classify(&app, &answer(403, &graph("ErrorAccessDenied"), None), &r);
        assert!(e.to_string().contains("Application Mail.Send"), "{e}");
        let e = classify(
            &app,
            &answer(401, &graph("InvalidAuthenticationToken"), None),
            &r,
        );
        assert!(e.needs_admin_fix() && e.is_auth_rejected(), "{e}");
    }

    #[test]
    fn an_echoed_token_never_reaches_the_error() {
        let t = target();
        let token = Secret::new("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret-part-123");
        let r = Redactor::new().secret(Some(&token));
        let body = format!(
            r#"{{"error":{{"code":"InvalidAuthenticationToken","message":"bad token {}"}}}}"#,
            token.expose()
        );
        let e = classify(&t, &answer(401, &body, None), &r);
        assert!(!format!("{e} {e:?}").contains("secret-part-123"), "{e}");
    }
}
