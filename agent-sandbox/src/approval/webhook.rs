//! The webhook: each request is an HTTPS POST, for chat-ops approvals.
//!
//! The body is JSON, `{"type":"request","sandbox":"…","sent":1796280000,"request":{…}}` (the
//! request as the approval socket sends it), signed with HMAC-SHA256 under a key only
//! agentbox and the receiver hold: header `X-Agentbox-Signature: sha256=<hex>`. The receiver
//! checks the signature and `sent` (a replayed body is old), and answers, within the
//! request's time, with status 200 and `{"decision":"allow","scope":"sandbox",
//! "expires_s":600,"by":"alice in #ops"}` (`"deny"`; scope `once` by default). Anything else
//! (another status, a body that is not such an answer, no answer in time, a TLS failure)
//! denies. HTTPS only, no redirects; `--webhook-ca` replaces the public roots with the
//! receiver's own CA.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Approver, Decision, Request, Scope};

/// Longest answer read: a decision is a few dozen bytes.
const MAX_ANSWER: u64 = 64 << 10;

pub(crate) struct WebhookApprover {
    url: String,
    host: String,
    sandbox: String,
    key: Vec<u8>,
    agent: ureq::Agent,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    decision: String,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    expires_s: Option<u64>,
    /// Who decided at the other end, for the audit record.
    #[serde(default)]
    by: Option<String>,
}

impl WebhookApprover {
    /// `url` must be https. `key` is read now (at least 16 bytes, readable by its owner
    /// only); `ca`, PEM certificates, replaces the public roots when given.
    pub(crate) fn new(
        url: &str,
        key: &Path,
        ca: Option<&Path>,
        sandbox: &str,
    ) -> anyhow::Result<WebhookApprover> {
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("--approver webhook:{url}: the webhook must be an https:// URL");
        };
        let host = rest
            .split(['/', '?', '#'])
            .next()
            .unwrap_or(rest)
            .to_string();
        if host.is_empty() {
            bail!("--approver webhook:{url}: no host");
        }
        let key = read_key(key)?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("--webhook-ca {}", ca.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .with_context(|| format!("--webhook-ca {}", ca.display()))?;
            if certs.is_empty() {
                bail!("--webhook-ca {}: no PEM certificate in it", ca.display());
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .https_only(true)
            .max_redirects(0)
            .http_status_as_error(false)
            .user_agent(concat!("agentbox/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build();
        Ok(WebhookApprover {
            url: url.to_string(),
            host,
            sandbox: sandbox.to_string(),
            key,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    fn post(&self, request: &Request, timeout: Duration) -> anyhow::Result<Decision> {
        let sent = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "request",
            "sandbox": self.sandbox,
            "sent": sent,
            "request": request,
        }))?;
        let mut response = self
            .agent
            .post(&self.url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .header("X-Agentbox-Signature", signature(&self.key, &body))
            .send(&body[..])
            .with_context(|| format!("webhook {}", self.host))?;
        let status = response.status();
        if status != 200 {
            bail!("webhook {}: HTTP {status}", self.host);
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .with_context(|| format!("webhook {}: reading the answer", self.host))?;
        let answer: Answer = serde_json::from_str(&text).with_context(|| {
            format!(
                "webhook {}: the answer is not {{\"decision\": \"allow\"|\"deny\", ..}}",
                self.host
            )
        })?;
        let allow = match answer.decision.as_str() {
            "allow" => true,
            "deny" => false,
            other => bail!("webhook {}: decision {other:?}", self.host),
        };
        let by = match answer.by {
            Some(who) => format!("webhook {} ({who})", self.host),
            None => format!("webhook {}", self.host),
        };
        Ok(Decision {
            allow,
            scope: answer.scope,
            expires: answer.expires_s.map(Duration::from_secs),
            by,
        })
    }
}

impl Approver for WebhookApprover {
    fn decide(&self, request: &Request, timeout: Duration) -> anyhow::Result<Option<Decision>> {
        self.post(request, timeout).map(Some)
    }
    fn name(&self) -> String {
        format!("webhook {}", self.host)
    }
}

/// `sha256=<hex>` of `body` under `key`.
fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The key file's contents, trailing newline dropped. Refused if others may read it (as ssh
/// refuses a private key) or if it is shorter than 16 bytes.
fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("--webhook-key {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        bail!(
            "--webhook-key {}: mode {:o}; the key must be readable by its owner only (chmod 600)",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let mut key =
        std::fs::read(path).with_context(|| format!("--webhook-key {}", path.display()))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < 16 {
        bail!(
            "--webhook-key {}: {} bytes; use at least 16 (e.g. `openssl rand -hex 32`)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_files_others_can_read_or_too_short_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&key).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&key).unwrap(), b"0123456789abcdef0123");
        std::fs::write(&key, "short").unwrap();
        assert!(read_key(&key)
            .unwrap_err()
            .to_string()
            .contains("at least 16"));
    }

    #[test]
    fn only_https_urls() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "0123456789abcdef").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = WebhookApprover::new("http://example.com/hook", &key, None, "s")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("https://"), "{e}");
        let ok = WebhookApprover::new("https://example.com:8443/hook?x=1", &key, None, "s");
        assert_eq!(ok.unwrap().host, "example.com:8443");
    }
}
