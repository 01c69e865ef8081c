//! `agentfleet webhook …`: webhook subscriptions and their deliveries, from the command line.

use super::{WebhookCommand, output, user};
use crate::fleet::Fleet;
use crate::webhooks;

pub(super) async fn webhook(fleet: &Fleet, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            project,
            json,
        } => {
            let events = (!events.is_empty()).then_some(events);
            let subscribed = webhooks::subscribe(fleet, &url, events, project.as_deref())
                .await
                .map_err(user)?;
            if json {
                output::json(&subscribed);
            } else {
                println!(
                    "webhook {} added ({})",
                    subscribed.webhook.id, subscribed.webhook.url
                );
                println!("secret: {}", subscribed.secret);
                println!("(shown only now: verify each request's webhook-signature with it)");
            }
        }
        WebhookCommand::List { json } => {
            output::webhooks(&webhooks::list(fleet).await.map_err(user)?, json)
        }
        WebhookCommand::Remove { id } => {
            let id = webhooks::remove(fleet, &id).await.map_err(user)?;
            println!("webhook {id} removed");
        }
        WebhookCommand::Deliveries { id, json } => {
            output::deliveries(&webhooks::deliveries(fleet, &id).await.map_err(user)?, json)
        }
        WebhookCommand::Redeliver { delivery_id } => {
            let delivery = webhooks::redeliver(fleet, &delivery_id)
                .await
                .map_err(user)?;
            println!(
                "delivery {} ({}) will be sent again",
                delivery.id, delivery.event
            );
        }
    }
    Ok(())
}
