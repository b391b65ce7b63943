//! Value checks shared by the config and API layers. Each returns a message saying what is
//! expected; callers attach file/line/key.

use std::net::IpAddr;
use std::str::FromStr;

/// Target names: a letter, then letters, digits, `-`, `_`, `.`; at most 64 characters. They
/// become file names of state files, so nothing else is allowed.
pub fn target_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid target name '{}': use a letter followed by letters, digits, '-', '_' or '.' (at most 64)",
            name.escape_debug()
        ))
    }
}

/// Names of new targets: the form of PVE's `pve-configid` (a letter, then letters, digits,
/// `-` or `_`; at least 2 characters) and at most 64 characters, so a host stack's own name
/// checks accept every name oxnotify creates. Existing names in the file only need
/// [`target_name`].
pub fn config_id(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        && (2..=64).contains(&name.len());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid target name '{}': use a letter followed by at least one letter, digit, '-' or '_' \
             (at most 64 characters, as PVE's pve-configid)",
            name.escape_debug()
        ))
    }
}

/// A user of the host stack as `mailto-user` names it: `user@realm` (PVE's `pve-userid`:
/// no whitespace, `:` or `/` in the user part; the realm a letter followed by letters,
/// digits, `.`, `-`, `_`).
pub fn user_id(value: &str) -> Result<(), String> {
    let ok = value.len() <= 64
        && value.rsplit_once('@').is_some_and(|(user, realm)| {
            !user.is_empty()
                && !user
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ':' | '/'))
                && realm.len() >= 2
                && realm.starts_with(|c: char| c.is_ascii_alphabetic())
                && realm
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a user ID: use user@realm, e.g. root@pam",
            value.escape_debug()
        ))
    }
}

/// A local user or group name (as `useradd` allows, plus Debian's `Debian-exim` style) or a
/// numeric ID: what `broker-allow-user` and `broker-allow-group` list.
pub fn account_name(value: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&value.len())
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a user or group name (letters, digits, '_', '-', '.'; at most 32) or ID",
            value.escape_debug()
        ))
    }
}

/// No control characters at all (CR/LF would allow header or protocol injection).
pub fn no_control_chars(value: &str) -> Result<(), String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        let what = match c {
            '\r' => "a carriage return (CR)".to_string(),
            '\n' => "a line feed (LF)".to_string(),
            c => format!("the control character U+{:04X}", c as u32),
        };
        return Err(format!("value contains {what}; remove it"));
    }
    Ok(())
}

/// An e-mail address as lettre accepts it for an envelope.
pub fn email(value: &str) -> Result<(), String> {
    no_control_chars(value)?;
    lettre::Address::from_str(value)
        .map(|_| ())
        .map_err(|e| format!("'{value}' is not a valid e-mail address ({e})"))
}

/// A DNS name: labels of letters, digits and `-`, not starting or ending with `-`.
pub fn dns_name(value: &str, min_labels: usize) -> bool {
    let v = value.strip_suffix('.').unwrap_or(value);
    let labels: Vec<&str> = v.split('.').collect();
    !v.is_empty()
        && v.len() <= 253
        && labels.len() >= min_labels
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// An SMTP server: a host name or an IP address.
pub fn server(value: &str) -> Result<(), String> {
    if IpAddr::from_str(value).is_ok() || dns_name(value, 1) {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a host name or IP address",
            value.escape_debug()
        ))
    }
}

/// A Microsoft Entra tenant: a GUID, a verified domain (`contoso.onmicrosoft.com`,
/// `example.com`) or one of the aliases `common`, `organizations`, `consumers`.
pub fn tenant_id(value: &str) -> Result<(), String> {
    let is_guid = {
        let parts: Vec<&str> = value.split('-').collect();
        parts.len() == 5
            && parts
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
    };
    if is_guid || dns_name(value, 2) || matches!(value, "common" | "organizations" | "consumers") {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a tenant ID: use the directory (tenant) GUID from the Entra admin center, \
             e.g. 12345678-90ab-cdef-1234-567890abcdef, or a tenant domain such as contoso.onmicrosoft.com",
            value.escape_debug()
        ))
    }
}

/// An OAuth2 endpoint URL: https, or http only to a loopback address (test rigs, local
/// brokers); no credentials or fragment in it. `{tenant}` may stand in the path.
pub fn endpoint_url(value: &str) -> Result<url::Url, String> {
    no_control_chars(value)?;
    let probe = value.replace("{tenant}", "tenant");
    let url = url::Url::parse(&probe).map_err(|e| format!("'{value}' is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(format!("'{value}' must be an https:// URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not contain credentials".into());
    }
    if url.fragment().is_some() {
        return Err("the URL must not contain a fragment (#...)".into());
    }
    Ok(url)
}

/// OAuth2 scopes: space-separated scope tokens (RFC 6749 section 3.3).
pub fn scope(value: &str) -> Result<(), String> {
    let ok = !value.trim().is_empty()
        && value.split(' ').filter(|s| !s.is_empty()).all(|tok| {
            tok.chars()
                .all(|c| matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a valid scope list (space-separated, printable ASCII without quotes or backslashes)",
            value.escape_debug()
        ))
    }
}

/// `alert-target` of target `name`: `sendmail` (the host's MTA) or another target's name,
/// never the target itself (its alerts would go through the channel that fails).
pub fn alert_target(name: &str, value: &str) -> Result<(), String> {
    if value == ALERT_VIA_SENDMAIL {
        return Ok(());
    }
    target_name(value).map_err(|m| format!("{m} (or 'sendmail' for the host's own MTA)"))?;
    if value == name {
        return Err(format!(
            "a target cannot alert through itself: name another target, or 'sendmail' for the \
             host's own MTA (alerts say that '{name}' fails, so they must not need it)"
        ));
    }
    Ok(())
}

/// The `alert-target` value that sends alerts through the host's own MTA.
pub const ALERT_VIA_SENDMAIL: &str = "sendmail";

/// Follow the `alert-target`s from target `start` (`next` gives a target's alert target, if
/// it has one): `Err` naming the loop if the chain comes back to a target it passed (targets
/// that alert each other would each need the other to say that it fails).
pub fn alert_loop(start: &str, next: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let mut chain = vec![start.to_string()];
    let mut at = start.to_string();
    while let Some(n) = next(&at).filter(|n| n != ALERT_VIA_SENDMAIL) {
        let looped = chain.contains(&n);
        chain.push(n.clone());
        if looped {
            return Err(format!(
                "alert targets form a loop ({}): targets that alert each other cannot report \
                 one another's failure; end the chain with a target without alert-target, or \
                 with 'sendmail'",
                chain.join(" -> ")
            ));
        }
        at = n;
    }
    Ok(())
}

/// A calendar date `YYYY-MM-DD` (as `oauth2-credential-expires` takes it): its day number
/// since 1970-01-01 (UTC).
pub fn date(value: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "'{}' is not a date: use YYYY-MM-DD, e.g. 2027-03-01 (the 'Expires' date of the \
             client secret or certificate in the app registration)",
            value.escape_debug()
        )
    };
    let mut parts = value.splitn(3, '-');
    let mut num = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.chars().all(|c| c.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(bad)
    };
    let (y, m, d) = (num(4)?, num(2)?, num(2)?);
    let month = time::Month::try_from(u8::try_from(m).map_err(|_| bad())?).map_err(|_| bad())?;
    let day = u8::try_from(d).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(i32::from(y), month, day).map_err(|_| bad())?;
    // 2440588 is the Julian day number of 1970-01-01
    Ok(i64::from(date.to_julian_day()) - 2_440_588)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert!(tenant_id("12345678-90ab-cdef-1234-567890abcdef").is_ok());
        assert!(tenant_id("contoso.onmicrosoft.com").is_ok());
        assert!(tenant_id("organizations").is_ok());
        for bad in [
            "",
            "contoso",
            "../common",
            "a/b",
            "x?y=1",
            "12345678-90ab-cdef-1234",
            "a b.com",
            "%2e%2e.com",
        ] {
            assert!(tenant_id(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn urls() {
        assert!(endpoint_url("https://login.example.com/{tenant}/token").is_ok());
        assert!(endpoint_url("http://127.0.0.1:8080/token").is_ok());
        assert!(endpoint_url("http://example.com/token").is_err());
        assert!(endpoint_url("https://user:pw@example.com/token").is_err());
        assert!(endpoint_url("ftp://example.com/").is_err());
    }

    #[test]
    fn names_and_scopes() {
        assert!(target_name("mail-1.ops_x").is_ok());
        for bad in ["", "1abc", "../x", "a/b", "a b", "ä"] {
            assert!(target_name(bad).is_err(), "{bad} accepted");
        }
        for ok in ["ab", "mail-1", "M365_ops"] {
            assert!(config_id(ok).is_ok(), "{ok} refused");
        }
        for bad in ["a", "mail.ops", "1ab", "a b", "-ab"] {
            assert!(config_id(bad).is_err(), "{bad} accepted");
        }
        assert!(user_id("root@pam").is_ok());
        assert!(user_id("alice.smith@ldap-corp").is_ok());
        for bad in [
            "root", "@pam", "root@", "a b@pam", "a/b@pam", "root@1x", "x@pam\n",
        ] {
            assert!(user_id(bad).is_err(), "{bad} accepted");
        }
        assert!(scope("https://mail.google.com/ offline_access").is_ok());
        assert!(scope("bad\"scope").is_err());
        assert!(email("a@example.com").is_ok());
        assert!(email("a@example.com\r\nBcc: x@y.z").is_err());
        assert!(email("not an address").is_err());
    }

    #[test]
    fn dates_and_alert_targets() {
        assert_eq!(date("1970-01-02"), Ok(1));
        assert_eq!(date("2027-03-01"), Ok(20_878));
        for bad in [
            "2027-02-30",
            "2027-3-01",
            "27-03-01",
            "2027-03-01x",
            "",
            "2027-13-01",
        ] {
            assert!(date(bad).is_err(), "{bad} accepted");
        }
        assert!(alert_target("a", "sendmail").is_ok());
        assert!(alert_target("a", "b").is_ok());
        assert!(alert_target("a", "a").is_err());
        assert!(alert_target("a", "../x").is_err());
        let chain = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == n)
                    .map(|(_, b)| b.to_string())
            }
        };
        assert!(alert_loop("a", chain(&[("a", "b"), ("b", "sendmail")])).is_ok());
        assert!(alert_loop("a", chain(&[("a", "b"), ("b", "c")])).is_ok());
        let e = alert_loop("a", chain(&[("a", "b"), ("b", "c"), ("c", "b")])).unwrap_err();
        assert!(e.contains("a -> b -> c -> b"), "{e}");
    }
}
