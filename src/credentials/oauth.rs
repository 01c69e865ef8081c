//! OAuth tokens inside a provider's credentials file, and refreshing them. Files differ
//! in shape (claude nests `claudeAiOauth: {accessToken, refreshToken, expiresAt}`; others
//! use snake_case, at the top or one level down), so the tokens are found by their field
//! names and written back in the same place and style.
//!
//! The refresh is a standard refresh-token grant POSTed (JSON) to the provider's
//! configured `token_url`. Error messages carry the endpoint's status and error code, never
//! a token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

const ACCESS: [&str; 2] = ["accessToken", "access_token"];
const REFRESH: [&str; 2] = ["refreshToken", "refresh_token"];
const EXPIRY: [&str; 3] = ["expiresAt", "expires_at", "expiry_date"];

/// The tokens found in a credentials file. Debug never shows them.
#[derive(Clone)]
pub struct Tokens {
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn first_str(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

/// Expiry given in seconds or milliseconds since the epoch (told apart by size).
fn expiry(obj: &Map<String, Value>) -> Option<DateTime<Utc>> {
    let n = EXPIRY
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_f64))?;
    let ms = if n > 1e11 { n } else { n * 1000.0 };
    DateTime::from_timestamp_millis(ms as i64)
}

/// The object in `file` that holds the tokens: the top level or one of its members.
fn token_object_mut(file: &mut Value) -> Option<&mut Map<String, Value>> {
    let has_tokens =
        |o: &Map<String, Value>| ACCESS.iter().chain(&REFRESH).any(|k| o.contains_key(*k));
    let root = file.as_object_mut()?;
    if has_tokens(root) {
        return Some(root);
    }
    root.values_mut()
        .filter_map(Value::as_object_mut)
        .find(|o| has_tokens(o))
}

impl Tokens {
    pub fn find(file: &Value) -> Option<Self> {
        let mut copy = file.clone();
        let obj = token_object_mut(&mut copy)?;
        Some(Self {
            access_token: first_str(obj, &ACCESS),
            refresh_token: first_str(obj, &REFRESH),
            expires_at: expiry(obj),
        })
    }

    /// Whether the access token expires within `margin` (a token without an expiry never
    /// needs refreshing from here).
    pub fn expires_within(&self, margin: Duration) -> bool {
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
        self.expires_at.is_some_and(|at| at - Utc::now() <= margin)
    }
}

/// What a token endpoint answered.
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
}

/// Writes refreshed tokens into `file`, where and how the old ones were.
fn apply(file: &mut Value, fresh: &TokenResponse) {
    let Some(obj) = token_object_mut(file) else {
        return;
    };
    let access_key = if obj.contains_key("access_token") {
        "access_token"
    } else {
        "accessToken"
    };
    obj.insert(access_key.into(), Value::String(fresh.access_token.clone()));
    if let Some(refresh) = &fresh.refresh_token {
        let key = if obj.contains_key("refresh_token") {
            "refresh_token"
        } else {
            "refreshToken"
        };
        obj.insert(key.into(), Value::String(refresh.clone()));
    }
    if let Some(secs) = fresh.expires_in {
        let at = Utc::now() + chrono::Duration::milliseconds((secs * 1000.0) as i64);
        let (key, seconds) = match EXPIRY.iter().find(|k| obj.contains_key(**k)) {
            Some(&"expires_at") => ("expires_at", obj["expires_at"].as_f64() < Some(1e11)),
            Some(k) => (*k, false),
            None => ("expiresAt", false),
        };
        let value = if seconds {
            at.timestamp()
        } else {
            at.timestamp_millis()
        };
        obj.insert(key.into(), Value::from(value));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the credentials file has no refresh token")]
    NoRefreshToken,
    #[error("token endpoint {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("token endpoint {url} refused the refresh: HTTP {status}{detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("token endpoint {url} answered without an access token")]
    Malformed { url: String },
}

/// Refreshes the access token in `file` at `token_url`; returns the updated file.
pub async fn refresh(
    file: &Value,
    token_url: &str,
    client_id: Option<&str>,
    timeout: Duration,
) -> Result<Value, RefreshError> {
    let tokens = Tokens::find(file).ok_or(RefreshError::NoRefreshToken)?;
    let refresh_token = tokens.refresh_token.ok_or(RefreshError::NoRefreshToken)?;
    let mut body = serde_json::json!({
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    });
    if let Some(id) = client_id {
        body["client_id"] = Value::String(id.to_string());
    }
    let unreachable = |e: reqwest::Error| RefreshError::Unreachable {
        url: token_url.to_string(),
        // Without the URL's query or anything the request carried.
        reason: e.without_url().to_string(),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let response = client
        .post(token_url)
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let code = v.get("error").and_then(Value::as_str)?.to_string();
                let description = v.get("error_description").and_then(Value::as_str);
                Some(match description {
                    Some(d) => format!(": {code} ({})", d.chars().take(200).collect::<String>()),
                    None => format!(": {code}"),
                })
            })
            .unwrap_or_default();
        return Err(RefreshError::Refused {
            url: token_url.to_string(),
            status: status.as_u16(),
            detail,
        });
    }
    let fresh: TokenResponse = response.json().await.map_err(|_| RefreshError::Malformed {
        url: token_url.to_string(),
    })?;
    let mut file = file.clone();
    apply(&mut file, &fresh);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claude_tokens_are_found_and_rewritten_in_place() {
        let mut file = json!({"claudeAiOauth": {"accessToken": "a1", "refreshToken": "r1",
            "expiresAt": 1_700_000_000_000_i64, "scopes": ["user:inference"]}});
        let t = Tokens::find(&file).unwrap();
        assert_eq!(t.refresh_token.as_deref(), Some("r1"));
        assert!(t.expires_within(Duration::from_secs(60)));
        apply(
            &mut file,
            &TokenResponse {
                access_token: "a2".into(),
                refresh_token: Some("r2".into()),
                expires_in: Some(3600.0),
            },
        );
        let inner = &file["claudeAiOauth"];
        assert_eq!(inner["accessToken"], "a2");
        assert_eq!(inner["refreshToken"], "r2");
        assert_eq!(inner["scopes"][0], "user:inference");
        let t = Tokens::find(&file).unwrap();
        assert!(!t.expires_within(Duration::from_secs(300)));
        assert!(t.expires_within(Duration::from_secs(7200)));
    }

    #[test]
    fn snake_case_tokens_without_expiry_never_need_a_refresh() {
        let file = json!({"tokens": {"access_token": "a", "refresh_token": "r"}});
        let t = Tokens::find(&file).unwrap();
        assert!(!t.expires_within(Duration::from_secs(3600)));
        assert!(Tokens::find(&json!({"nothing": 1})).is_none());
        assert!(!format!("{t:?}").contains("\"r\""));
    }
}
