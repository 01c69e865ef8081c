//! Signing per the Standard Webhooks spec (standardwebhooks.com): a subscription's secret
//! is 32 random bytes shown as `whsec_<base64>`, and each request carries
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
//! keyed with those bytes (the base64-decoded part), so a receiver checks that the body came
//! from the fleet, unchanged, and (by the timestamp) recently.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::TryRngCore;

/// What a secret's text starts with.
const PREFIX: &str = "whsec_";

/// A subscription's signing key. Its Debug shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<hidden>)")
    }
}

impl SigningSecret {
    /// 32 fresh random bytes.
    pub fn generate() -> Result<Self, String> {
        let mut key = vec![0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
        Ok(Self(key))
    }

    /// The key as stored (sealed) and as HMAC uses it.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, as the subscriber is shown it once.
    pub fn to_text(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// Reads `whsec_<base64>` (or the bare base64).
    pub fn parse(text: &str) -> Option<Self> {
        let b64 = text.strip_prefix(PREFIX).unwrap_or(text);
        STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Self)
    }

    /// The `webhook-signature` header's value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut ctx = ring::hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signatures_match_the_specifications_example() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_read_back_and_never_show_in_debug() {
        let secret = SigningSecret::generate().unwrap();
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(SigningSecret::parse(&text), Some(secret.clone()));
        assert_eq!(secret.as_bytes().len(), 32);
        assert!(!format!("{secret:?}").contains(&text[6..]));
        assert_ne!(secret, SigningSecret::generate().unwrap());
    }
}
