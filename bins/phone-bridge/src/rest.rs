//! Twilio's REST API for call control (fifo-layout.md "Call control"): end a live call, or
//! hand it to another number, by updating the call resource —
//! `POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with HTTP basic auth
//! (account SID, auth token) and a form body: `Status=completed` ends it, `Twiml=<Response>
//! <Dial>NUMBER</Dial></Response>` transfers it.

use crate::signature::AuthToken;
use anyhow::{bail, Context, Result};
use std::time::Duration;

pub struct TwilioRest {
    client: reqwest::Client,
    /// `https://api.twilio.com`, or a stand-in's URL in the tests.
    base: String,
    account_sid: String,
    token: String,
}

/// What the line owner asks Twilio to do with a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    End,
    Transfer { number: String },
}

impl Update {
    /// The form fields of the call update.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            Update::End => vec![("Status", "completed".into())],
            Update::Transfer { number } => vec![("Twiml", crate::twiml::dial(number, None))],
        }
    }
}

impl TwilioRest {
    pub fn new(base: &str, account_sid: &str, token: &AuthToken) -> Result<Self> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().context("HTTP client")?;
        Ok(TwilioRest {
            client,
            base: base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            token: token.secret().to_string(),
        })
    }

    /// Update the live call `call_sid`. An error says what Twilio answered (never the token).
    pub async fn update(&self, call_sid: &str, update: &Update) -> Result<()> {
        let url = format!("{}/2010-04-01/Accounts/{}/Calls/{call_sid}.json", self.base, self.account_sid);
        let form: Vec<(&str, String)> = update.form();
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .client
            .post(&url)
            .basic_auth(&self.account_sid, Some(&self.token))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .with_context(|| format!("call {call_sid}: cannot reach Twilio's REST API at {}", self.base))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("call {call_sid}: Twilio answered {status} to {update:?}: {}", text.chars().take(200).collect::<String>());
        }
        Ok(())
    }
}

/// `application/x-www-form-urlencoded` of one key or value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{extract::State, http::HeaderMap, routing::post, Form, Router};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, Option<String>, HashMap<String, String>)>>>;

    /// A loopback stand-in for api.twilio.com's call update: records path, auth and form;
    /// answers 404 for an unknown call.
    async fn standin() -> (String, Seen) {
        let seen: Seen = Arc::default();
        async fn update(
            State(seen): State<Seen>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            Form(form): Form<HashMap<String, String>>,
        ) -> (axum::http::StatusCode, &'static str) {
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
            let known = !uri.path().contains("CAgone");
            seen.lock().unwrap().push((uri.path().to_string(), auth, form));
            if known {
                (axum::http::StatusCode::OK, "{}")
            } else {
                (axum::http::StatusCode::NOT_FOUND, r#"{"code": 20404, "message": "not found"}"#)
            }
        }
        let app = Router::new().route("/{*path}", post(update)).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn end_and_transfer_update_the_live_call() {
        let (base, seen) = standin().await;
        let rest = TwilioRest::new(&base, "ACtest", &AuthToken::new("tok".into())).unwrap();
        rest.update("CA1", &Update::End).await.unwrap();
        rest.update("CA1", &Update::Transfer { number: "+15551230000".into() }).await.unwrap();
        let err = rest.update("CAgone", &Update::End).await.unwrap_err();
        assert!(format!("{err:#}").contains("404"), "{err:#}");
        assert!(!format!("{err:#}").contains("tok"), "the token is never in a message: {err:#}");

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ACtest:tok"));
        for (path, auth, _) in seen.iter() {
            assert!(path.starts_with("/2010-04-01/Accounts/ACtest/Calls/CA"), "{path}");
            assert_eq!(auth.as_deref(), Some(basic.as_str()));
        }
        assert_eq!(seen[0].0, "/2010-04-01/Accounts/ACtest/Calls/CA1.json");
        assert_eq!(seen[0].2.get("Status").map(String::as_str), Some("completed"));
        let twiml = &seen[1].2["Twiml"];
        assert!(twiml.ends_with("<Response><Dial>+15551230000</Dial></Response>"), "{twiml}");
        assert!(!seen[1].2.contains_key("Status"));
    }
}
