//! `agentfleet account …`: accounts and their sealed credentials, from the command line.

use anyhow::{Context, bail};

use super::{AccountCommand, output, user};
use crate::fleet::Fleet;

pub(super) async fn account(fleet: &Fleet, command: AccountCommand) -> anyhow::Result<()> {
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
            let secret = match (
                secret.api_key_env,
                secret.api_key_file,
                secret.credentials_file,
            ) {
                (Some(var), _, _) => {
                    let value = std::env::var(&var)
                        .with_context(|| format!("environment variable {var} is not set"))?;
                    AccountInput::api_key(&value, &format!("environment variable {var}"))
                        .map_err(fail)?
                }
                (_, Some(file), _) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("cannot read API key file {}", file.display()))?;
                    AccountInput::api_key(&text, &format!("API key file {}", file.display()))
                        .map_err(fail)?
                }
                (_, _, Some(file)) => {
                    let text = std::fs::read_to_string(&file).with_context(|| {
                        format!("cannot read credentials file {}", file.display())
                    })?;
                    AccountInput::credentials_file(
                        &text,
                        &format!("credentials file {}", file.display()),
                    )
                    .map_err(fail)?
                }
                _ => bail!("give --api-key-env, --api-key-file or --credentials-file"),
            };
            let account = credentials::add_account(
                &fleet.settings,
                &fleet.store,
                &fleet.providers,
                AccountInput {
                    provider,
                    label,
                    secret,
                    max_concurrent,
                },
            )
            .await
            .map_err(fail)?;
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
        AccountCommand::List { json } => {
            output::accounts(&fleet.store.list_accounts().await?, json)
        }
        AccountCommand::Remove { label } => {
            fleet
                .store
                .remove_account(&label)
                .await
                .map_err(|e| user(e.into()))?;
            println!("account {label} removed");
        }
        AccountCommand::Reset { label } => {
            let account = fleet
                .store
                .reset_account(&label)
                .await
                .map_err(|e| user(e.into()))?;
            println!("account {} reset", account.label);
        }
        AccountCommand::RotateKey { new_key_file } => {
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
