//! What agents used: tokens by kind, cost and model turns — per agent (kept current while it
//! runs), per usage record (what one stored event added) and summed over many (`GET
//! /v1/usage`). Costs a provider does not report are estimated from configured prices
//! ([`Price`]) and marked as such.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Tokens, cost and turns: an agent's totals, one usage event's share, or a sum of them.
/// Input tokens are those not read from the provider's prompt cache; cache reads and
/// writes are counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// In US dollars, where the provider reported it or a price was configured; null when
    /// neither.
    pub cost_usd: Option<f64>,
    /// Some of the cost comes from the configured prices (`pricing.<provider>.<model>`)
    /// rather than from the provider.
    pub cost_estimated: bool,
    /// Model turns (responses) the provider reported.
    pub turns: i64,
}

impl Usage {
    /// All four kinds of tokens.
    pub fn tokens(&self) -> i64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    /// Nothing used (and no cost known).
    pub fn is_empty(&self) -> bool {
        self.tokens() == 0 && self.turns == 0 && self.cost_usd.is_none_or(|c| c == 0.0)
    }

    /// `self` and `other` together.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cache_read_tokens: self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens + other.cache_write_tokens,
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
            cost_estimated: self.cost_estimated || other.cost_estimated,
            turns: self.turns + other.turns,
        }
    }

    /// `self` without `other` (a part of it).
    pub fn minus(&self, other: &Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens - other.input_tokens,
            output_tokens: self.output_tokens - other.output_tokens,
            cache_read_tokens: self.cache_read_tokens - other.cache_read_tokens,
            cache_write_tokens: self.cache_write_tokens - other.cache_write_tokens,
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (a, None) => a,
                (a, Some(b)) => Some(a.unwrap_or(0.0) - b),
            },
            cost_estimated: self.cost_estimated,
            turns: self.turns - other.turns,
        }
    }

    /// The tokens by kind, as the metrics label them.
    pub fn by_kind(&self) -> [(&'static str, i64); 4] {
        [
            ("input", self.input_tokens),
            ("output", self.output_tokens),
            ("cache_read", self.cache_read_tokens),
            ("cache_write", self.cache_write_tokens),
        ]
    }
}

/// Limits on what one agent may use, over all its runs; one it goes over stops it
/// (`stopped`, `budget_exceeded:<which>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Tokens of all four kinds together.
    #[serde(
        default,
        deserialize_with = "super::integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9223372036854775807_i64)]
    pub max_tokens: Option<i64>,
    /// US dollars, reported or estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0)]
    pub max_cost_usd: Option<f64>,
    /// Model turns.
    #[serde(
        default,
        deserialize_with = "super::integral::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 9223372036854775807_i64)]
    pub max_turns: Option<i64>,
}

impl Budget {
    /// No limit set.
    pub fn is_empty(&self) -> bool {
        self.max_tokens.is_none() && self.max_cost_usd.is_none() && self.max_turns.is_none()
    }

    /// The first limit `used` is over (`tokens`, `cost`, `turns`), if any.
    pub fn exceeded(&self, used: &Usage) -> Option<&'static str> {
        if self.max_tokens.is_some_and(|max| used.tokens() > max) {
            return Some("tokens");
        }
        if self
            .max_cost_usd
            .is_some_and(|max| used.cost_usd.unwrap_or(0.0) > max)
        {
            return Some("cost");
        }
        if self.max_turns.is_some_and(|max| used.turns > max) {
            return Some("turns");
        }
        None
    }

    /// Why the budget cannot be taken (a limit not above zero), naming the field.
    pub fn invalid(&self) -> Option<String> {
        for (field, value) in [
            ("max_tokens", self.max_tokens),
            ("max_turns", self.max_turns),
        ] {
            if value.is_some_and(|v| v < 1) {
                return Some(format!("budget.{field} must be at least 1"));
            }
        }
        match self.max_cost_usd {
            Some(c) if !(c.is_finite() && c > 0.0) => {
                Some("budget.max_cost_usd must be a positive number".into())
            }
            _ => None,
        }
    }
}

/// Midnight (UTC) of `now`'s day: where a project's daily budget starts counting.
pub fn start_of_utc_day(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The limit of a project's daily budget, as stop reasons name it.
pub const PROJECT_DAILY_COST: &str = "project_daily_cost";

/// The stop reason of an agent that went over its budget's `which` limit.
pub fn budget_reason(which: &str) -> String {
    format!("budget_exceeded:{which}")
}

/// A model's prices in US dollars per million tokens (`[pricing.<provider>.<model>]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default)]
    pub cache_read: f64,
    #[serde(default)]
    pub cache_write: f64,
}

impl Price {
    /// What `usage`'s tokens cost at these prices.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let per_token = |tokens: i64, per_million: f64| tokens as f64 * per_million / 1e6;
        per_token(usage.input_tokens, self.input)
            + per_token(usage.output_tokens, self.output)
            + per_token(usage.cache_read_tokens, self.cache_read)
            + per_token(usage.cache_write_tokens, self.cache_write)
    }
}

/// The name of the price a provider's models without their own use.
pub const DEFAULT_PRICE: &str = "default";

/// What `GET /v1/usage` and `agentfleet usage` sum by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    #[default]
    Project,
    Account,
    Provider,
    /// The UTC day the usage was recorded.
    Day,
}

impl UsageGroup {
    pub const ALL: [Self; 4] = [Self::Project, Self::Account, Self::Provider, Self::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Project => "project",
            Self::Account => "account",
            Self::Provider => "provider",
            Self::Day => "day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// One group's sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageTotal {
    /// The project's, account's (label; empty for the CLI's own login) or provider's name,
    /// or the day (`YYYY-MM-DD`).
    pub key: String,
    /// How many agents the usage is of.
    pub agents: i64,
    pub usage: Usage,
}

/// The answer of `GET /v1/usage`: the sums per group over `[since, until)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub group_by: UsageGroup,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub groups: Vec<UsageTotal>,
    /// All groups together.
    pub total: Usage,
}

impl UsageReport {
    /// The report of `groups`, with their total.
    pub fn new(
        group_by: UsageGroup,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
        groups: Vec<UsageTotal>,
    ) -> Self {
        let total = groups
            .iter()
            .fold(Usage::default(), |sum, g| sum.plus(&g.usage));
        Self {
            group_by,
            since,
            until,
            groups,
            total,
        }
    }
}

/// The pattern of a time before now as callers give it: a number and a unit, `s`, `m`, `h`,
/// `d` or `w` (`7d`: seven days ago).
pub const AGO_PATTERN: &str = r"^[0-9]{1,6}[smhdw]$";

/// The time `text` (see [`AGO_PATTERN`]) before `now`; None when it is not such a text. A
/// time before 1970 is no bound at all (None inside Some).
pub fn parse_ago(text: &str, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
    let unit = text.chars().last()?;
    let number = &text[..text.len() - unit.len_utf8()];
    if number.is_empty() || number.len() > 6 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = number.parse().ok()?;
    let seconds = n * match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    let at = now - chrono::TimeDelta::seconds(seconds);
    Some((at >= DateTime::UNIX_EPOCH).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_now_are_a_number_and_a_unit() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .to_utc();
        let at = |s| parse_ago(s, now);
        assert_eq!(
            at("7d"),
            Some(Some(
                DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
                    .unwrap()
                    .to_utc()
            ))
        );
        assert_eq!(
            at("90s").unwrap().unwrap(),
            now - chrono::TimeDelta::seconds(90)
        );
        assert_eq!(at("999999w"), Some(None), "before 1970: no bound");
        for bad in ["", "d", "7", "7y", "-1d", "1.5h", "1234567d", "7 d", "٧d"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_budget_is_exceeded_once_usage_goes_over_a_limit() {
        let budget = Budget {
            max_tokens: Some(100),
            max_cost_usd: Some(1.0),
            max_turns: Some(2),
        };
        let mut used = Usage {
            input_tokens: 60,
            output_tokens: 40,
            cost_usd: Some(1.0),
            turns: 2,
            ..Default::default()
        };
        assert_eq!(budget.exceeded(&used), None, "at a limit is not over it");
        used.cache_read_tokens = 1;
        assert_eq!(budget.exceeded(&used), Some("tokens"));
        used.cache_read_tokens = 0;
        used.cost_usd = Some(1.01);
        assert_eq!(budget.exceeded(&used), Some("cost"));
        used.cost_usd = None;
        used.turns = 3;
        assert_eq!(budget.exceeded(&used), Some("turns"));
        assert!(Budget::default().exceeded(&used).is_none());
        let bad = Budget {
            max_cost_usd: Some(0.0),
            ..Default::default()
        };
        assert!(bad.invalid().unwrap().contains("budget.max_cost_usd"));
    }

    #[test]
    fn prices_are_per_million_tokens_of_each_kind() {
        let price = Price {
            input: 3.0,
            output: 15.0,
            cache_read: 0.3,
            cache_write: 3.75,
        };
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 2_000,
            cache_read_tokens: 10_000,
            cache_write_tokens: 0,
            ..Default::default()
        };
        assert!((price.cost(&usage) - (3.0 + 0.03 + 0.003)).abs() < 1e-12);
    }

    #[test]
    fn an_unknown_cost_stays_unknown_when_added_to_another() {
        let a = Usage {
            input_tokens: 1,
            ..Default::default()
        };
        assert_eq!(a.plus(&a).cost_usd, None);
        let b = Usage {
            cost_usd: Some(0.5),
            cost_estimated: true,
            ..Default::default()
        };
        let sum = a.plus(&b);
        assert_eq!(sum.cost_usd, Some(0.5));
        assert!(sum.cost_estimated);
        assert_eq!(sum.input_tokens, 1);
    }
}
