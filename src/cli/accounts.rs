//! `agentfleet account …`: accounts and their sealed credentials, from the command line.

use anyhow::{Context, bail};

use super::ops::{NewAccountSecret, Ops};
use super::{AccountCommand, output, user};

pub(super) async fn account(ops: &Ops, command: AccountCommand) -> anyhow::Result<()> {
    use crate::credentials::{self, AccountInput, Keyring};
    let fail = |e: credentials::CredentialError| user(e.into());
    match command {
        AccountCommand::Add {
            provider,
            label,
            secret,
            max_concurrent,
            json,
        } => {
            // Read and checked here in either mode: the API is sent the text as read.
            let secret = match (
                secret.api_key_env,
                secret.api_key_file,
                secret.credentials_file,
            ) {
                (Some(var), _, _) => {
                    let text = std::env::var(&var)
                        .with_context(|| format!("environment variable {var} is not set"))?;
                    let origin = format!("environment variable {var}");
                    NewAccountSecret {
                        input: AccountInput::api_key(&text, &origin).map_err(fail)?,
                        text,
                        is_credentials_file: false,
                    }
                }
                (_, Some(file), _) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read API key file {}", file.display()))?;
                    let origin = format!("API key file {}", file.display());
                    NewAccountSecret {
                        input: AccountInput::api_key(&text, &origin).map_err(fail)?,
                        text,
                        is_credentials_file: false,
                    }
                }
                (_, _, Some(file)) => {
                    let text = std::fs::read_to_string(&file).with_context(|| {
                        format!("cannot read credentials file {}", file.display())
                    })?;
                    let origin = format!("credentials file {}", file.display());
                    NewAccountSecret {
                        input: AccountInput::credentials_file(&text, &origin).map_err(fail)?,
                        text,
                        is_credentials_file: true,
                    }
                }
                _ => bail!("give --api-key-env, --api-key-file or --credentials-file"),
            };
            let account = ops
                .add_account(provider, label, secret, max_concurrent)
                .await?;
            if json {
                output::accounts(std::slice::from_ref(&account), true);
            } else {
                println!(
                    "account {} added ({} {}, {})",
                    account.label,
                    account.provider,
                    account.kind.as_str(),
                    account.fingerprint
                );
            }
        }
        AccountCommand::List { json } => output::accounts(&ops.accounts().await?, json),
        AccountCommand::Remove { label } => {
            ops.remove_account(&label).await?;
            println!("account {label} removed");
        }
        AccountCommand::Reset { label } => {
            let account = ops.reset_account(&label).await?;
            println!("account {} reset", account.label);
        }
        AccountCommand::RotateKey { new_key_file } => {
            let fleet = ops.local("account rotate-key")?;
            let old = Keyring::load(&fleet.settings, false).map_err(fail)?;
            let new = if new_key_file.exists() {
                Keyring::read_file(&new_key_file).map_err(fail)?
            } else {
                let key = Keyring::generate().map_err(fail)?;
                key.write_file(&new_key_file).map_err(fail)?;
                key
            };
            let report = credentials::rotate_key(&fleet.store, &old, &new)
                .await
                .map_err(fail)?;
            println!(
                "{} account(s) re-sealed under key {} ({} already were)",
                report.resealed,
                new.id(),
                report.already
            );
            if report.webhooks > 0 {
                println!("{} webhook secret(s) re-sealed", report.webhooks);
            }
            if !report.changed.is_empty() {
                bail!(
                    "accounts changed while rotating, run it again: {}",
                    report.changed.join(", ")
                );
            }
            match old.generated_file() {
                // The embedded mode's generated key: replaced, so nothing to configure.
                Some(path) => {
                    new.write_file(path).map_err(fail)?;
                    println!(
                        "the generated key file {} now holds the new key",
                        path.display()
                    );
                }
                None => println!(
                    "now set secrets.key_file = {:?} (or secrets.key) on every process",
                    new_key_file.display().to_string()
                ),
            }
        }
    }
    Ok(())
}
