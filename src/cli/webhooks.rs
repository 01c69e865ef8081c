//! `agentfleet webhook …`: webhook subscriptions and their deliveries, from the command line.

use super::ops::Ops;
use super::{WebhookCommand, output};

pub(super) async fn webhook(ops: &Ops, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            project,
            json,
        } => {
            let events = (!events.is_empty()).then_some(events);
            let subscribed = ops.subscribe(&url, events, project.as_deref()).await?;
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
        WebhookCommand::List { json } => output::webhooks(&ops.webhooks().await?, json),
        WebhookCommand::Remove { id } => {
            let id = ops.remove_webhook(&id).await?;
            println!("webhook {id} removed");
        }
        WebhookCommand::Deliveries { id, json } => {
            output::deliveries(&ops.deliveries(&id).await?, json)
        }
        WebhookCommand::Redeliver { delivery_id } => {
            let delivery = ops.redeliver(&delivery_id).await?;
            println!(
                "delivery {} ({}) will be sent again",
                delivery.id, delivery.event
            );
        }
    }
    Ok(())
}
