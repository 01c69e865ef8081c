//! An account for one run of a provider process: picked (or, for a resume, the agent's
//! own), its OAuth token refreshed when it is about to expire (one worker per account at a
//! time, by a lock in the store), the agent's own copy of its config dir written, and the
//! env vars that point the process at it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use super::{CredentialError, Keyring, Secret, config_dir, oauth};
use crate::config::Settings;
use crate::domain::{Account, Agent};
use crate::providers::Provider;
use crate::store::{Owner, Store};

/// What a run needs to know about its worker and its agent.
pub struct RunContext<'a> {
    pub settings: &'a Settings,
    pub store: &'a Store,
    pub owner: &'a Owner,
    /// The agent's folder on the node: its copies of its accounts' config dirs go there.
    pub agent_dir: &'a Path,
}

/// The account a run uses (None: the CLI's own login) and the env vars for its process.
pub struct AccountRun {
    pub account: Option<Account>,
    /// Env vars for the process only (the config dir, an API key). Debug hides values.
    pub env: Vec<(String, String)>,
    pub config_dir: Option<PathBuf>,
}

impl std::fmt::Debug for AccountRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("AccountRun")
            .field("account", &self.account)
            .field("env", &names)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "provider '{0}' requires an account (providers.{0}.require_account) and has none: \
         add one with `agentfleet account add`"
    )]
    NoAccount(String),
    #[error(
        "account_exhausted: none of the {total} '{provider}' accounts is free (exhausted, invalid or at max_concurrent)"
    )]
    NoneFree { provider: String, total: i64 },
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

impl From<crate::store::StoreError> for RunError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Credentials(e.into())
    }
}

/// The env var an API-key account's key goes in: configured, else the provider's own.
pub fn api_key_env(settings: &Settings, provider: &dyn Provider) -> Option<String> {
    settings
        .provider(provider.name())
        .api_key_env
        .filter(|v| !v.trim().is_empty())
        .or_else(|| provider.api_key_env().map(str::to_string))
}

/// Picks the agent's account for this run and prepares it. An agent with a session
/// continues on the account that holds the session (its files live in that config dir);
/// otherwise the store picks the least recently used free one. An account whose token
/// cannot be refreshed is marked invalid and the next one is tried.
pub async fn prepare(
    ctx: &RunContext<'_>,
    agent: &Agent,
    provider: &dyn Provider,
) -> Result<AccountRun, RunError> {
    let none = AccountRun {
        account: None,
        env: Vec::new(),
        config_dir: None,
    };
    let mut exclude: Vec<Uuid> = Vec::new();
    let mut reuse = agent.account_id.filter(|_| agent.session_id.is_some());
    loop {
        let account = match reuse.take() {
            Some(id) => match ctx.store.hold_account(agent.id, ctx.owner, id).await? {
                Some(account) => account,
                None => {
                    tracing::warn!(agent_id = %agent.id, "the agent's account is gone; picking another");
                    continue;
                }
            },
            None => {
                let pick = ctx
                    .store
                    .acquire_account(&crate::store::AcquireParams {
                        agent_id: agent.id,
                        owner: ctx.owner,
                        provider: provider.name(),
                        exclude: &exclude,
                    })
                    .await?;
                match pick.account {
                    Some(account) => account,
                    None if pick.provider_accounts == 0 => {
                        if ctx.settings.provider(provider.name()).require_account {
                            return Err(RunError::NoAccount(provider.name().to_string()));
                        }
                        return Ok(none);
                    }
                    None => {
                        return Err(RunError::NoneFree {
                            provider: provider.name().to_string(),
                            total: pick.provider_accounts,
                        });
                    }
                }
            }
        };
        let keyring = Keyring::load(ctx.settings, false)?;
        let secret = Secret::open(&keyring, &account)?;
        let secret = match ensure_fresh(ctx, &keyring, &account, secret, agent.id).await? {
            Ok(secret) => secret,
            Err(None) => {
                // Another worker's refresh failed meanwhile and marked it invalid.
                exclude.push(account.id);
                continue;
            }
            Err(Some(reason)) => {
                tracing::warn!(account = %account.label, %reason, "account marked invalid");
                ctx.store.mark_account_invalid(account.id, &reason).await?;
                exclude.push(account.id);
                continue;
            }
        };
        return Ok(materialise(ctx.settings, ctx.agent_dir, provider, account, &secret).await?);
    }
}

/// Writes the agent's copy of the account's config dir and builds the env vars.
async fn materialise(
    settings: &Settings,
    agent_dir: &Path,
    provider: &dyn Provider,
    account: Account,
    secret: &Secret,
) -> Result<AccountRun, CredentialError> {
    let mut env = Vec::new();
    let file = match secret {
        Secret::ApiKey { key } => {
            let var = api_key_env(settings, provider).ok_or_else(|| {
                CredentialError::Invalid(format!(
                    "provider '{}' has no API key variable; set providers.{}.api_key_env",
                    provider.name(),
                    provider.name()
                ))
            })?;
            env.push((var, key.clone()));
            None
        }
        Secret::Oauth { file } => {
            let relative = provider.credentials_file().ok_or_else(|| {
                CredentialError::Invalid(format!(
                    "provider '{}' has no credentials file",
                    provider.name()
                ))
            })?;
            Some((
                relative.to_string(),
                serde_json::to_vec_pretty(file).unwrap_or_default(),
            ))
        }
    };
    let mut config_dir = None;
    if let Some(var) = provider.config_dir_env() {
        let agent_dir = std::path::absolute(agent_dir).map_err(|e| {
            CredentialError::Invalid(format!("agent folder {}: {e}", agent_dir.display()))
        })?;
        let id = account.id;
        let dir = tokio::task::spawn_blocking(move || {
            config_dir::write(
                &agent_dir,
                id,
                file.as_ref().map(|(r, c)| (r.as_str(), c.as_slice())),
            )
        })
        .await
        .map_err(|e| CredentialError::Invalid(format!("config dir task failed: {e}")))?
        .map_err(|e| {
            CredentialError::Invalid(format!(
                "cannot write the config dir of account '{}': {e}",
                account.label
            ))
        })?;
        env.push((var.to_string(), dir.display().to_string()));
        config_dir = Some(dir);
    }
    Ok(AccountRun {
        account: Some(account),
        env,
        config_dir,
    })
}

/// The secret with a fresh access token: refreshed (under the account's refresh lock)
/// when it expires within `credentials.refresh_margin`. Inner Err: why the refresh failed
/// (None: the account was marked invalid by another worker while this one waited).
async fn ensure_fresh(
    ctx: &RunContext<'_>,
    keyring: &Keyring,
    account: &Account,
    secret: Secret,
    agent_id: Uuid,
) -> Result<Result<Secret, Option<String>>, CredentialError> {
    let margin = ctx.settings.credentials.refresh_margin;
    let needs = |s: &Secret| match s {
        Secret::Oauth { file } => {
            oauth::Tokens::find(file).is_some_and(|t| t.expires_within(margin))
        }
        Secret::ApiKey { .. } => false,
    };
    if !needs(&secret) {
        return Ok(Ok(secret));
    }
    let settings = ctx.settings.provider(&account.provider);
    let Some(url) = settings.token_url.filter(|u| !u.trim().is_empty()) else {
        tracing::warn!(account = %account.label, "access token about to expire and no token_url to refresh it");
        return Ok(Ok(secret));
    };
    // Per agent, not per worker: two agents of one worker must not both hold it.
    let holder = &format!("{}/{agent_id}", ctx.owner.worker_id);
    let ttl = ctx.settings.credentials.refresh_lock_ttl;
    let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(5);
    while !ctx
        .store
        .lock_account_refresh(account.id, holder, ttl)
        .await?
    {
        if tokio::time::Instant::now() > deadline {
            return Ok(Err(Some(
                "another worker held the refresh lock too long".into(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Another worker may have refreshed it while this one waited.
    let current = ctx.store.account_by_id(account.id).await?;
    if current.invalid_reason.is_some() {
        ctx.store.unlock_account_refresh(account.id, holder).await?;
        return Ok(Err(None));
    }
    let secret = Secret::open(keyring, &current)?;
    if !needs(&secret) {
        ctx.store.unlock_account_refresh(account.id, holder).await?;
        return Ok(Ok(secret));
    }
    let Secret::Oauth { file } = &secret else {
        return Ok(Ok(secret));
    };
    match oauth::refresh(
        file,
        &url,
        settings.oauth_client_id.as_deref(),
        ctx.settings.credentials.refresh_timeout,
    )
    .await
    {
        Ok(file) => {
            let fresh = Secret::Oauth { file };
            let sealed = fresh.seal(keyring, account.id)?;
            if !ctx
                .store
                .store_refreshed_account(account.id, holder, &sealed, keyring.id())
                .await?
            {
                tracing::warn!(account = %account.label, "refresh lock lost before the new tokens were stored");
            }
            tracing::info!(account = %account.label, "access token refreshed");
            Ok(Ok(fresh))
        }
        Err(e) => {
            // Marked invalid before the lock is let go, so no waiting worker tries again.
            let reason = format!("token refresh failed: {e}");
            ctx.store.mark_account_invalid(account.id, &reason).await?;
            ctx.store.unlock_account_refresh(account.id, holder).await?;
            Ok(Err(Some(reason)))
        }
    }
}
