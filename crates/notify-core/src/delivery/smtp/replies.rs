//! What the SMTP replies of Office 365 and Gmail mean, and what the admin must do about them.
//!
//! The reply code decides whether a failure is transient (4xx) or permanent (5xx, RFC 5321
//! section 4.2.1); the enhanced status code and the provider's text only pick the hint.
//! Sources: ../shared/provider-facts.md B2 (Office 365) and B3 (Gmail).

use crate::config::smtp::{AuthMethod, SmtpTarget};
use crate::error::SmtpStep;
use base64::Engine;

/// The admin hint for a reply, if we know one. `text` is the reply's text (already redacted).
pub(super) fn hint(target: &SmtpTarget, step: SmtpStep, code: u16, text: &str) -> Option<String> {
    let has = |s: &str| text.contains(s);
    let h = if has("5.7.139") && has("SmtpClientAuthentication is disabled") {
        "SMTP AUTH is disabled for this tenant/mailbox: enable it for the mailbox \
         (Exchange admin center > mailbox > Manage email apps > Authenticated SMTP, or \
         Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false; tenant-wide: \
         Set-TransportConfig -SmtpClientAuthenticationDisabled $false), or switch this target to \
         Graph (transport graph, server graph.microsoft.com, the app's Mail.Send permission)"
            .to_string()
    } else if has("5.7.139") {
        "Office 365 refused basic authentication: use auth-method microsoft-oauth2".to_string()
    } else if has("5.7.30") {
        "Office 365 no longer accepts basic authentication: use auth-method microsoft-oauth2"
            .to_string()
    } else if has("5.7.60") {
        format!(
            "the mailbox may not send as {}: set from-address to the authorized mailbox, or grant \
             it Send As permission for this address",
            target.from_address
        )
    } else if has("5.7.57") {
        "the server requires authentication: set an auth-method".to_string()
    } else if has("STOREDRV") || (code == 430 && has("4.2.0")) {
        "the mailbox could not be opened for this app: for app-only access grant the app's \
         service principal access to the mailbox (Add-MailboxPermission ... -AccessRights \
         FullAccess)"
            .to_string()
    } else if step == SmtpStep::Auth
        && code == 535
        && has("5.7.8")
        && target.auth_method == AuthMethod::GoogleOAuth2
    {
        format!(
            "Gmail refused the token for {}: the account must be the one that authorized \
             (from-address or username), the scope must be https://mail.google.com/, and for \
             Workspace the admin may have to allow the app",
            target.auth_identity()
        )
    } else if step == SmtpStep::Auth && code == 535 && has("5.7.3") {
        format!(
            "Office 365 refused the token for {}: it must be the mailbox that authorized, the app \
             needs the SMTP.Send permission (app-only: SMTP.SendAsApp), and SMTP AUTH must be \
             enabled for the mailbox",
            target.auth_identity()
        )
    } else if step == SmtpStep::Auth && code == 535 {
        match target.auth_method {
            AuthMethod::Plain => "check username and password".to_string(),
            _ => format!(
                "the server refused the token for {}: check that it is the mailbox the app was \
                 authorized for and that the app may send mail for it",
                target.auth_identity()
            ),
        }
    } else if code == 421 || code == 454 || code == 451 || code == 452 {
        "the server is busy or limits connections; oxnotify retries within the delivery \
         deadline"
            .to_string()
    } else {
        return None;
    };
    Some(h)
}

/// Gmail's XOAUTH2 error challenge: `334 <base64 JSON>` with `status`, `schemes`, `scope`.
/// A one-line description, or `None` if the challenge is not of that form.
pub(super) fn xoauth2_challenge(challenge: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(challenge.trim())
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(|s| crate::redact::one_line(s, 100))
    };
    let status = field("status")?;
    let meaning = match status.as_str() {
        "400" => "the token was not accepted for this account",
        "401" => "the token is invalid, expired or revoked",
        _ => "the token was refused",
    };
    Some(format!(
        "the server's XOAUTH2 challenge says status {status} ({meaning}){}",
        field("scope")
            .map(|s| format!(", required scope {s}"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_challenge_is_decoded() {
        let json = r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        let d = xoauth2_challenge(&b64).unwrap();
        assert!(
            d.contains("status 401") && d.contains("https://mail.google.com/"),
            "{d}"
        );
        assert!(xoauth2_challenge("not base64 !").is_none());
    }

    #[test]
    fn storedrv_at_data_tells_to_grant_the_app_the_mailbox() {
        // Exchange accepts an app-only token at AUTH and fails at DATA for a mailbox the app
        // was never granted
        let mut t = SmtpTarget::new("app", "smtp.office365.com", "a@example.com", vec![]);
        t.auth_method = AuthMethod::MicrosoftOAuth2;
        t.oauth2_flow = Some(crate::config::smtp::OAuth2Flow::ClientCredentials);
        let text = "4.2.0 STOREDRV; mailbox logon failure; MapiExceptionLogonFailed";
        let h = hint(&t, SmtpStep::Data, 430, text).unwrap();
        assert!(h.contains("Add-MailboxPermission"), "{h}");
    }
}
