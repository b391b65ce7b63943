//! STAND-IN for an attacker's endpoint, shared by the token-binding tests.

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// STAND-IN for an attacker's server on loopback: records everything sent to it. As
/// `Smtp` it plays an SMTP server that offers every AUTH mechanism without TLS, so that a
/// client willing to send credentials would send them.
pub struct CredentialCapturingListener {
    pub port: u16,
    received: Arc<Mutex<Vec<u8>>>,
}

#[derive(Clone, Copy)]
pub enum Speaks {
    Http,
    Smtp,
}

impl CredentialCapturingListener {
    pub fn start(speaks: Speaks) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let rec = rec.clone();
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    match speaks {
                        Speaks::Http => {
                            // the whole request: headers, then Content-Length bytes of body
                            let mut r = BufReader::new(s.try_clone().unwrap());
                            let mut len = 0;
                            let mut line = String::new();
                            while r.read_line(&mut line).unwrap_or(0) > 0 {
                                rec.lock().unwrap().extend_from_slice(line.as_bytes());
                                if let Some(v) =
                                    line.to_ascii_lowercase().strip_prefix("content-length:")
                                {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                                if line == "\r\n" {
                                    break;
                                }
                                line.clear();
                            }
                            let mut body = vec![0u8; len];
                            if r.read_exact(&mut body).is_ok() {
                                rec.lock().unwrap().extend_from_slice(&body);
                            }
                            let body = r#"{"error":"invalid_grant"}"#;
                            let _ = write!(s, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        }
                        Speaks::Smtp => {
                            let _ = s.write_all(b"220 capture ESMTP\r\n");
                            let mut r = BufReader::new(s.try_clone().unwrap());
                            let mut line = String::new();
                            while r.read_line(&mut line).unwrap_or(0) > 0 {
                                rec.lock().unwrap().extend_from_slice(line.as_bytes());
                                let up = line.to_ascii_uppercase();
                                let reply: &[u8] = if up.starts_with("EHLO") {
                                    b"250-capture\r\n250-AUTH PLAIN LOGIN XOAUTH2\r\n250 8BITMIME\r\n"
                                } else if up.starts_with("AUTH") {
                                    b"334 \r\n"
                                } else if up.starts_with("QUIT") {
                                    b"221 bye\r\n"
                                } else {
                                    b"235 2.7.0 ok\r\n"
                                };
                                let _ = s.write_all(reply);
                                line.clear();
                            }
                        }
                    }
                });
            }
        });
        CredentialCapturingListener { port, received }
    }

    /// Assert that none of `secrets` arrived, raw, form-encoded or base64-encoded (alone or
    /// inside a SASL response).
    pub fn assert_never_received(&self, secrets: &[&str]) {
        let got = String::from_utf8_lossy(&self.received.lock().unwrap()).to_string();
        let b64 = base64::engine::general_purpose::STANDARD;
        let decoded: String = got
            .split(|c: char| c.is_whitespace() || c == '&' || c == '=')
            .filter_map(|w| b64.decode(w).ok())
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let form: String = url::form_urlencoded::parse(got.as_bytes())
            .map(|(k, v)| format!("{k}={v} "))
            .collect();
        for s in secrets {
            assert!(
                !got.contains(s) && !decoded.contains(s) && !form.contains(s),
                "the repointed endpoint received a stored secret; it got: {got}"
            );
        }
    }
}

impl CredentialCapturingListener {
    /// Everything received so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).to_string()
    }
}
