//! Twilio request validation: `X-Twilio-Signature` is the base64 HMAC-SHA1, keyed with the
//! account's auth token, of the full URL Twilio requested followed by every POST parameter
//! (sorted by name) as name then value with no separators. The WebSocket upgrade is signed the
//! same way over its `wss://` URL (no parameters).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The auth token. Never printed: its `Debug` shows only its length.
#[derive(Clone)]
pub struct AuthToken(String);

impl AuthToken {
    pub fn new(token: String) -> Self {
        AuthToken(token)
    }

    /// The token itself, for Twilio's REST API (basic auth). Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthToken(<{} chars>)", self.0.len())
    }
}

fn mac(token: &AuthToken, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut m = Hmac::<Sha1>::new_from_slice(token.0.as_bytes()).expect("HMAC takes any key length");
    m.update(url.as_bytes());
    for (k, v) in sorted {
        m.update(k.as_bytes());
        m.update(v.as_bytes());
    }
    m
}

/// The signature Twilio would send for this request.
#[cfg(test)]
pub fn sign(token: &AuthToken, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(token, url, params).finalize().into_bytes())
}

/// True if `signature` is the right one for this request (compared in constant time).
pub fn verify(token: &AuthToken, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else { return false };
    mac(token, url, params).verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn twilio_documented_example() {
        // The worked example of Twilio's "Webhooks security" page.
        let token = AuthToken::new("12345".into());
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            p("CallSid", "CA1234567890ABCDE"),
            p("Caller", "+12349013030"),
            p("Digits", "1234"),
            p("From", "+12349013030"),
            p("To", "+18005551212"),
        ];
        let expected = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        assert_eq!(sign(&token, url, &params), expected);
        assert!(verify(&token, url, &params, expected));
    }

    #[test]
    fn anything_changed_is_rejected() {
        let token = AuthToken::new("secret".into());
        let params = [p("From", "+15550001111"), p("CallSid", "CA1")];
        let good = sign(&token, "https://x.example/voice", &params);
        assert!(verify(&token, "https://x.example/voice", &params, &good));
        assert!(!verify(&token, "https://x.example/voice2", &params, &good));
        assert!(!verify(&token, "https://x.example/voice", &[p("From", "+15550001112"), p("CallSid", "CA1")], &good));
        assert!(!verify(&AuthToken::new("other".into()), "https://x.example/voice", &params, &good));
        assert!(!verify(&token, "https://x.example/voice", &params, "not base64!"));
        assert!(!verify(&token, "https://x.example/voice", &params, ""));
        assert!(!format!("{token:?}").contains("secret"));
    }
}
