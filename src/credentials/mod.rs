//! Accounts and their credentials: several accounts per provider, each an API key or a
//! provider credentials file (OAuth tokens), sealed in the store under one key
//! ([`Keyring`]). A worker about to start a provider process picks an account in the store
//! (least recently used among those not exhausted, not invalid and under
//! `max_concurrent`, reserved atomically), refreshes an OAuth token that is about to
//! expire ([`oauth`]), writes the agent's private copy of the account's config dir
//! ([`config_dir`]) and hands the process its env vars ([`run`]).
//!
//! Secrets stay inside this module: they are opened here, written only to 0600 files in
//! 0700 dirs or into the provider process's environment, and their types redact
//! themselves in Debug. Everything else sees an [`Account`] with a fingerprint.

pub mod config_dir;
mod keyring;
pub mod oauth;
pub mod run;

pub use keyring::{GENERATED_KEY_FILE, Keyring};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Settings;
use crate::domain::{Account, AccountKind};
use crate::providers::Providers;
use crate::store::{NewAccount, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "no key to seal credentials with: set secrets.key (AGENTFLEET__SECRETS__KEY) or \
         secrets.key_file; the distributed mode does not store credentials without one"
    )]
    NoKey,
    #[error("credentials key: {0}")]
    Key(String),
    #[error(
        "account '{label}' was sealed with a different key (key id {sealed_with}; the \
         configured key is {configured}): configure the key it was sealed with, or re-add it"
    )]
    WrongKey {
        label: String,
        sealed_with: String,
        configured: String,
    },
    #[error("account '{0}': its sealed credentials do not open (corrupt, or not sealed for it)")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CredentialError> for crate::fleet::FleetError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Store(e) => e.into(),
            CredentialError::Corrupt(_) => Self::Unavailable(e.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// An account's secret once opened. Debug never shows it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Secret {
    ApiKey {
        key: String,
    },
    /// The provider's credentials file, as JSON.
    Oauth {
        file: serde_json::Value,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ApiKey { .. } => "Secret::ApiKey(<redacted>)",
            Self::Oauth { .. } => "Secret::Oauth(<redacted>)",
        })
    }
}

impl Secret {
    pub fn kind(&self) -> AccountKind {
        match self {
            Self::ApiKey { .. } => AccountKind::ApiKey,
            Self::Oauth { .. } => AccountKind::Oauth,
        }
    }

    /// A short, stable name for the secret that reveals nothing of it: the first bytes of
    /// its SHA-256 (of the key, or of the credentials file's refresh token or whole text).
    pub fn fingerprint(&self) -> String {
        let material = match self {
            Self::ApiKey { key } => key.clone(),
            Self::Oauth { file } => oauth::Tokens::find(file)
                .and_then(|t| t.refresh_token)
                .unwrap_or_else(|| file.to_string()),
        };
        format!("sha256:{}", hex::encode(&Sha256::digest(material)[..6]))
    }

    fn seal(&self, keyring: &Keyring, account_id: Uuid) -> Result<Vec<u8>, CredentialError> {
        let plain = serde_json::to_vec(self).map_err(|e| CredentialError::Key(e.to_string()))?;
        keyring.seal(account_id, &plain)
    }

    /// Opens an account's sealed secret.
    pub fn open(keyring: &Keyring, account: &Account) -> Result<Self, CredentialError> {
        let plain = keyring.open(account.id, &account.label, &account.key_id, &account.sealed)?;
        serde_json::from_slice(&plain).map_err(|_| CredentialError::Corrupt(account.label.clone()))
    }
}

/// An account to add, as a caller gives it.
#[derive(Debug, Clone)]
pub struct AccountInput {
    pub provider: String,
    pub label: String,
    pub secret: Secret,
    pub max_concurrent: Option<i32>,
}

impl AccountInput {
    /// A credentials file's text, checked to be JSON with OAuth tokens in it.
    pub fn credentials_file(text: &str, source: &str) -> Result<Secret, CredentialError> {
        let file: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            CredentialError::Invalid(format!("{source} is not a JSON credentials file: {e}"))
        })?;
        if !file.is_object() || oauth::Tokens::find(&file).is_none() {
            return Err(CredentialError::Invalid(format!(
                "{source} holds no OAuth tokens (an accessToken or refreshToken)"
            )));
        }
        Ok(Secret::Oauth { file })
    }

    pub fn api_key(key: &str, source: &str) -> Result<Secret, CredentialError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(CredentialError::Invalid(format!("{source} is empty")));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CredentialError::Invalid(format!(
                "{source} is not an API key (it holds spaces or line breaks)"
            )));
        }
        Ok(Secret::ApiKey {
            key: key.to_string(),
        })
    }
}

/// Validates, seals and stores a new account. Nothing is stored when anything is wrong.
pub async fn add_account(
    settings: &Settings,
    store: &Store,
    providers: &Providers,
    input: AccountInput,
) -> Result<Account, CredentialError> {
    let provider = providers
        .get(&input.provider)
        .map_err(|e| CredentialError::Invalid(e.to_string()))?;
    crate::workspace::validate_name(&input.label)
        .map_err(|r| CredentialError::Invalid(format!("account label: {r}")))?;
    if let Some(n) = input.max_concurrent
        && n < 1
    {
        return Err(CredentialError::Invalid(
            "max_concurrent must be at least 1".into(),
        ));
    }
    match &input.secret {
        Secret::ApiKey { .. } => {
            if run::api_key_env(settings, provider.as_ref()).is_none() {
                return Err(CredentialError::Invalid(format!(
                    "provider '{}' has no API key variable; set providers.{}.api_key_env",
                    input.provider, input.provider
                )));
            }
        }
        Secret::Oauth { .. } => {
            if provider.credentials_file().is_none() || provider.config_dir_env().is_none() {
                return Err(CredentialError::Invalid(format!(
                    "provider '{}' takes API keys only (no credentials file it reads)",
                    input.provider
                )));
            }
        }
    }
    let keyring = Keyring::load(settings, true)?;
    let id = Uuid::now_v7();
    let sealed = input.secret.seal(&keyring, id)?;
    let fingerprint = input.secret.fingerprint();
    Ok(store
        .add_account(&NewAccount {
            id,
            provider: &input.provider,
            label: &input.label,
            kind: input.secret.kind(),
            sealed: &sealed,
            key_id: keyring.id(),
            fingerprint: &fingerprint,
            max_concurrent: input.max_concurrent,
        })
        .await?)
}

/// Re-seals every account and every webhook secret under `new` (those still under `old`);
/// returns how many. Each row is replaced only if unchanged since it was read, so a refresh
/// racing the rotation is not lost (its row is left under the old key and reported).
pub async fn rotate_key(
    store: &Store,
    old: &Keyring,
    new: &Keyring,
) -> Result<RotateReport, CredentialError> {
    let mut report = RotateReport::default();
    for account in store.list_accounts().await? {
        if account.key_id == new.id() {
            report.already += 1;
            continue;
        }
        let secret = Secret::open(old, &account)?;
        let sealed = secret.seal(new, account.id)?;
        if store
            .reseal_account(account.id, &account.sealed, &sealed, new.id())
            .await?
        {
            report.resealed += 1;
        } else {
            report.changed.push(account.label.clone());
        }
    }
    for webhook in store.list_webhooks().await? {
        if webhook.key_id == new.id() {
            continue;
        }
        let label = format!("webhook {}", webhook.id);
        let plain = old.open(webhook.id, &label, &webhook.key_id, &webhook.sealed)?;
        let sealed = new.seal(webhook.id, &plain)?;
        if store
            .reseal_webhook(webhook.id, &webhook.sealed, &sealed, new.id())
            .await?
        {
            report.webhooks += 1;
        } else {
            report.changed.push(label);
        }
    }
    Ok(report)
}

#[derive(Debug, Default)]
pub struct RotateReport {
    pub resealed: usize,
    pub already: usize,
    /// Webhook secrets re-sealed.
    pub webhooks: usize,
    /// Accounts that changed while rotating: run the rotation again.
    pub changed: Vec<String>,
}
