//! Dashboard sessions without server-side state, so any number of `serve` processes accept
//! the same cookie: the cookie is `<role>.<expiry>.<HMAC-SHA256(token, "session|role|expiry")>`
//! and is checked against each configured token of that role, so removing a token from the
//! configuration ends its sessions. The CSRF token the page sends with every change is
//! `HMAC-SHA256(token, "csrf|expiry")`: only a page that could read `GET /web/session` (the
//! same origin) knows it. Neither holds the token itself.

use sha2::{Digest, Sha256};

use crate::config::ApiSettings;

/// The session cookie's name.
pub const COOKIE: &str = "af_session";

/// How long a sign-in lasts.
pub const LIFETIME_SECONDS: i64 = 12 * 60 * 60;

/// What a caller may do: read only, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Full,
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "read_only",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "read_only" => Some(Self::ReadOnly),
            _ => None,
        }
    }

    /// The configured tokens of this role.
    fn tokens(self, api: &ApiSettings) -> &[String] {
        match self {
            Self::Full => &api.tokens,
            Self::ReadOnly => &api.read_only_tokens,
        }
    }
}

/// Whether callers must prove a token: some token, of either role, is configured.
pub fn auth_required(api: &ApiSettings) -> bool {
    !api.tokens.is_empty() || !api.read_only_tokens.is_empty()
}

/// The role of a token given as a bearer token or at sign-in; `None`: not a configured one.
pub fn role_of_token(api: &ApiSettings, token: &str) -> Option<Role> {
    let known = |tokens: &[String]| {
        tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    };
    if known(&api.tokens) {
        Some(Role::Full)
    } else if known(&api.read_only_tokens) {
        Some(Role::ReadOnly)
    } else {
        None
    }
}

/// A verified session: its role, the token it was signed with, when it ends.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    token: String,
    pub expires: i64,
}

impl Session {
    /// A new session for `token` (of `role`) from `now` (Unix seconds).
    pub fn new(role: Role, token: &str, now: i64) -> Self {
        Self {
            role,
            token: token.to_string(),
            expires: now + LIFETIME_SECONDS,
        }
    }

    /// The cookie's value.
    pub fn cookie_value(&self) -> String {
        let role = self.role.as_str();
        let mac = hmac_hex(&self.token, &format!("session|{role}|{}", self.expires));
        format!("{role}.{}.{mac}", self.expires)
    }

    /// The CSRF token the page must send as `x-csrf-token` on a change.
    pub fn csrf(&self) -> String {
        hmac_hex(&self.token, &format!("csrf|{}", self.expires))
    }

    /// Whether `given` is this session's CSRF token.
    pub fn csrf_matches(&self, given: &str) -> bool {
        constant_time_eq(self.csrf().as_bytes(), given.as_bytes())
    }

    /// The session a cookie value stands for, if it was signed by a token configured now
    /// for its role and has not expired at `now`.
    pub fn verify(value: &str, api: &ApiSettings, now: i64) -> Option<Self> {
        let mut parts = value.splitn(3, '.');
        let role = Role::parse(parts.next()?)?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        if expires <= now || expires > now + LIFETIME_SECONDS {
            return None;
        }
        let message = format!("session|{}|{expires}", role.as_str());
        role.tokens(api)
            .iter()
            .find(|t| constant_time_eq(hmac_hex(t, &message).as_bytes(), mac.as_bytes()))
            .map(|token| Self {
                role,
                token: token.clone(),
                expires,
            })
    }
}

/// The value of the session cookie among a request's `Cookie` headers.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a session: only for this site's own requests (SameSite=Strict), out of
/// the page's scripts' reach (HttpOnly).
pub fn set_cookie(session: &Session) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECONDS}",
        session.cookie_value()
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hmac_hex(key: &str, message: &str) -> String {
    hex::encode(hmac_sha256(key.as_bytes(), message.as_bytes()))
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(tokens: &[&str], read_only: &[&str]) -> ApiSettings {
        let mut settings = crate::config::Settings::load_with_environment(None, Default::default())
            .expect("defaults")
            .api;
        settings.tokens = tokens.iter().map(|t| t.to_string()).collect();
        settings.read_only_tokens = read_only.iter().map(|t| t.to_string()).collect();
        settings
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_session_is_valid_for_its_token_and_role_until_it_expires() {
        let settings = api(&["full-token"], &["ro-token"]);
        let now = 1_000_000;
        let session = Session::new(Role::ReadOnly, "ro-token", now);
        let value = session.cookie_value();
        assert!(
            !value.contains("ro-token"),
            "the token is not in the cookie"
        );
        let back = Session::verify(&value, &settings, now + 60).expect("valid");
        assert_eq!(back.role, Role::ReadOnly);
        assert!(back.csrf_matches(&session.csrf()));
        assert!(!back.csrf_matches("0000"));
        assert!(Session::verify(&value, &settings, now + LIFETIME_SECONDS).is_none());
        // Claiming the other role with the same signature fails.
        let forged = value.replacen("read_only", "full", 1);
        assert!(Session::verify(&forged, &settings, now).is_none());
        // A token taken out of the configuration ends its sessions.
        assert!(Session::verify(&value, &api(&["full-token"], &[]), now).is_none());
        for junk in ["", "full", "full.x.y", "full.1.", "nobody.2000000.abc"] {
            assert!(Session::verify(junk, &settings, now).is_none(), "{junk}");
        }
    }

    #[test]
    fn roles_of_tokens() {
        let settings = api(&["a"], &["b"]);
        assert_eq!(role_of_token(&settings, "a"), Some(Role::Full));
        assert_eq!(role_of_token(&settings, "b"), Some(Role::ReadOnly));
        assert_eq!(role_of_token(&settings, "c"), None);
        assert!(auth_required(&settings));
        assert!(!auth_required(&api(&[], &[])));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=1; af_session=full.2.abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_of(&headers), Some("full.2.abc"));
    }
}
