//! Counts what an agent uses as its supervisor reads the stream: turns each usage event of
//! the provider's parser into what it adds to the agent's totals, once. Parsers report
//! what a message added ([`UsageScope::Delta`]), a run's totals so far (`Run`: claude's and
//! gemini's final lines) or a session's, earlier runs included (`Session`: codex), and the
//! meter subtracts what was already counted. A cost the provider does not report comes from
//! the configured price of the model (marked estimated). Only numbers: the supervisor
//! stores what `count` returns with the event (`EventLog::push_usage`).

use std::collections::BTreeMap;

use crate::domain::{DEFAULT_PRICE, Price, Usage};
use crate::providers::{AgentEvent, UsageScope};

pub(super) struct UsageMeter {
    /// The agent's totals when this run started (a session's earlier runs among them).
    before: Usage,
    /// What this run added so far.
    run: Usage,
    /// The cost this run's provider reported so far (a run total is measured against it).
    run_reported_cost: f64,
    reports_cost: bool,
    /// The provider's prices, by model.
    prices: BTreeMap<String, Price>,
    /// The model the provider said it runs, else the one asked for.
    pub(super) model: Option<String>,
}

impl UsageMeter {
    pub(super) fn new(
        before: Usage,
        reports_cost: bool,
        prices: BTreeMap<String, Price>,
        model: Option<String>,
    ) -> Self {
        Self {
            before,
            run: Usage::default(),
            run_reported_cost: 0.0,
            reports_cost,
            prices,
            model,
        }
    }

    /// For an adopted agent: `stored` of its `before` totals is this run's already.
    pub(super) fn with_run_stored(mut self, stored: Usage) -> Self {
        self.before = self.before.minus(&stored);
        self.run = stored;
        if self.reports_cost && !stored.cost_estimated {
            self.run_reported_cost = stored.cost_usd.unwrap_or(0.0);
        }
        self
    }

    /// The agent's totals with what this run added so far.
    pub(super) fn total(&self) -> Usage {
        self.before.plus(&self.run)
    }

    /// Takes in the model a session reports.
    pub(super) fn observe_model(&mut self, model: &str) {
        if !model.is_empty() {
            self.model = Some(model.to_string());
        }
    }

    /// What a usage event adds to the agent's totals; None for other events and for usage
    /// already counted.
    pub(super) fn count(&mut self, event: &AgentEvent) -> Option<Usage> {
        let AgentEvent::Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_write_tokens,
            cost_usd,
            turns,
            scope,
        } = event
        else {
            return None;
        };
        let reported = [
            *input_tokens,
            *output_tokens,
            *cache_read_tokens,
            *cache_write_tokens,
        ]
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        // What is already counted of what the event's numbers cover.
        let counted = match scope {
            UsageScope::Delta => Usage::default(),
            UsageScope::Run => self.run,
            UsageScope::Session => self.total(),
        };
        let had = [
            counted.input_tokens,
            counted.output_tokens,
            counted.cache_read_tokens,
            counted.cache_write_tokens,
        ];
        let added: [i64; 4] = std::array::from_fn(|i| (reported[i] - had[i]).max(0));
        let mut delta = Usage {
            input_tokens: added[0],
            output_tokens: added[1],
            cache_read_tokens: added[2],
            cache_write_tokens: added[3],
            cost_usd: None,
            cost_estimated: false,
            turns: i64::try_from(*turns).unwrap_or(i64::MAX),
        };
        match cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            Some(cost) => {
                let already = match scope {
                    UsageScope::Delta => 0.0,
                    _ => self.run_reported_cost,
                };
                let added = (cost - already).max(0.0);
                self.run_reported_cost += added;
                delta.cost_usd = Some(added);
            }
            None if !self.reports_cost => {
                if let Some(price) = self.price() {
                    delta.cost_usd = Some(price.cost(&delta));
                    delta.cost_estimated = true;
                }
            }
            None => {}
        }
        if delta.is_empty() {
            return None;
        }
        self.run = self.run.plus(&delta);
        Some(delta)
    }

    /// The price of the model in use: its own, else the provider's `default`.
    fn price(&self) -> Option<Price> {
        self.model
            .as_deref()
            .and_then(|m| self.prices.get(m))
            .or_else(|| self.prices.get(DEFAULT_PRICE))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cost: Option<f64>, scope: UsageScope) -> AgentEvent {
        AgentEvent::Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_usd: cost,
            turns: u64::from(scope == UsageScope::Delta),
            scope,
        }
    }

    #[test]
    fn a_run_total_adds_only_what_its_messages_did_not() {
        let mut meter = UsageMeter::new(Usage::default(), true, BTreeMap::new(), None);
        for _ in 0..2 {
            let d = meter.count(&usage(12, 1, None, UsageScope::Delta)).unwrap();
            assert_eq!((d.input_tokens, d.output_tokens, d.turns), (12, 1, 1));
            assert_eq!(
                d.cost_usd, None,
                "a provider that reports cost is not estimated"
            );
        }
        let d = meter
            .count(&usage(24, 23, Some(0.0007), UsageScope::Run))
            .unwrap();
        assert_eq!((d.input_tokens, d.output_tokens, d.turns), (0, 21, 0));
        assert_eq!(d.cost_usd, Some(0.0007));
        let total = meter.total();
        assert_eq!(
            (total.input_tokens, total.output_tokens, total.turns),
            (24, 23, 2)
        );
        assert_eq!(total.cost_usd, Some(0.0007));
        assert!(!total.cost_estimated);
        assert_eq!(
            meter.count(&usage(24, 23, Some(0.0007), UsageScope::Run)),
            None
        );
    }

    #[test]
    fn a_session_total_subtracts_the_earlier_runs() {
        let before = Usage {
            input_tokens: 20,
            output_tokens: 10,
            turns: 1,
            ..Default::default()
        };
        let prices = BTreeMap::from([(
            "gpt-x".to_string(),
            Price {
                input: 1.0,
                output: 10.0,
                ..Default::default()
            },
        )]);
        let mut meter = UsageMeter::new(before, false, prices, Some("gpt-x".into()));
        let d = meter
            .count(&usage(30, 15, None, UsageScope::Session))
            .unwrap();
        assert_eq!((d.input_tokens, d.output_tokens), (10, 5));
        assert!(d.cost_estimated);
        assert!((d.cost_usd.unwrap() - (10.0 + 50.0) / 1e6).abs() < 1e-15);
        assert_eq!(meter.total().input_tokens, 30);
    }

    #[test]
    fn without_a_price_an_unreported_cost_stays_unknown() {
        let mut meter = UsageMeter::new(Usage::default(), false, BTreeMap::new(), None);
        let d = meter.count(&usage(5, 5, None, UsageScope::Delta)).unwrap();
        assert_eq!(d.cost_usd, None);
        assert!(!d.cost_estimated);
        let default = BTreeMap::from([(
            DEFAULT_PRICE.to_string(),
            Price {
                input: 1e6,
                ..Default::default()
            },
        )]);
        let mut meter = UsageMeter::new(Usage::default(), false, default, Some("other".into()));
        let d = meter.count(&usage(2, 0, None, UsageScope::Delta)).unwrap();
        assert_eq!(d.cost_usd, Some(2.0), "the provider's default price");
    }
}
