//! Token prices and the cost of an answer. kt ships list prices for common models; a
//! configuration's `pricing.models` adds or replaces entries, and `pricing.defaults: false`
//! leaves only its own. A model is found by its exact name, then without a provider prefix
//! (`openai/gpt-4o`) and without a release-date suffix (`gpt-4o-2024-08-06`,
//! `claude-sonnet-4-20250514`) or `-latest`.

use std::collections::HashMap;

use crate::config::{ModelPrice, PolicyConfig};
use crate::usage::Usage;

/// US dollars per 1,000 tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
    pub reasoning: f64,
}

impl From<&ModelPrice> for Price {
    fn from(p: &ModelPrice) -> Self {
        Price {
            input: p.input_cost_per_1k_tokens,
            cached_input: p.cached_input_cost_per_1k_tokens.unwrap_or(p.input_cost_per_1k_tokens),
            output: p.output_cost_per_1k_tokens,
            reasoning: p.reasoning_cost_per_1k_tokens.unwrap_or(p.output_cost_per_1k_tokens),
        }
    }
}

impl Price {
    /// The cost of `u` in US dollars.
    pub fn cost(&self, u: &Usage) -> f64 {
        let fresh = u.prompt.saturating_sub(u.cached) as f64;
        let answered = u.completion.saturating_sub(u.reasoning) as f64;
        (fresh * self.input
            + u.cached as f64 * self.cached_input
            + answered * self.output
            + u.reasoning as f64 * self.reasoning)
            / 1000.0
    }
}

/// Shipped list prices, US dollars per million tokens: (model, input, cached input, output).
/// Reasoning tokens are billed as output. Providers change prices: check them and
/// override with `pricing.models`.
pub const DEFAULT_PRICES: &[(&str, f64, f64, f64)] = &[
    ("gpt-5", 1.25, 0.125, 10.0),
    ("gpt-5-mini", 0.25, 0.025, 2.0),
    ("gpt-5-nano", 0.05, 0.005, 0.40),
    ("gpt-4.1", 2.0, 0.50, 8.0),
    ("gpt-4.1-mini", 0.40, 0.10, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.40),
    ("gpt-4o", 2.50, 1.25, 10.0),
    ("gpt-4o-mini", 0.15, 0.075, 0.60),
    // The first gpt-4o snapshot kept its launch price.
    ("gpt-4o-2024-05-13", 5.0, 5.0, 15.0),
    ("o1", 15.0, 7.50, 60.0),
    ("o3", 2.0, 0.50, 8.0),
    ("o4-mini", 1.10, 0.275, 4.40),
    ("text-embedding-3-small", 0.02, 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.13, 0.0),
    ("claude-opus-4", 15.0, 1.50, 75.0),
    ("claude-opus-4-1", 15.0, 1.50, 75.0),
    ("claude-sonnet-4", 3.0, 0.30, 15.0),
    ("claude-sonnet-4-5", 3.0, 0.30, 15.0),
    ("claude-3-7-sonnet", 3.0, 0.30, 15.0),
    ("claude-haiku-4-5", 1.0, 0.10, 5.0),
    ("claude-3-5-haiku", 0.80, 0.08, 4.0),
    ("gemini-2.5-pro", 1.25, 0.31, 10.0),
    ("gemini-2.5-flash", 0.30, 0.075, 2.50),
];

/// The prices of one configuration.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

impl PriceTable {
    pub fn of(config: &PolicyConfig) -> Self {
        let pricing = config.pricing.as_ref();
        let mut prices = HashMap::new();
        if pricing.is_none_or(|p| p.defaults) {
            for (model, input, cached, output) in DEFAULT_PRICES {
                let price = Price {
                    input: input / 1000.0,
                    cached_input: cached / 1000.0,
                    output: output / 1000.0,
                    reasoning: output / 1000.0,
                };
                prices.insert((*model).to_owned(), price);
            }
        }
        for (model, p) in pricing.map(|p| &p.models).into_iter().flatten() {
            prices.insert(model.clone(), Price::from(p));
        }
        PriceTable { prices }
    }

    /// Every priced model, sorted by name.
    pub fn entries(&self) -> Vec<(&str, Price)> {
        let mut out: Vec<(&str, Price)> = self.prices.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// The price of `model`: its own entry, else that of its name without a provider
    /// prefix, then without a release-date or `-latest` suffix.
    pub fn price(&self, model: &str) -> Option<Price> {
        // Priced once per answer: the exact name is tried first and the others only
        // made when it misses.
        let get = |m: &str| self.prices.get(m).copied();
        get(model).or_else(|| {
            let unprefixed = model.rsplit_once('/').map_or(model, |(_, m)| m);
            get(unprefixed).or_else(|| get(undated(unprefixed)))
        })
    }

    /// A table of just these prices (an organisation's, kept by the control plane).
    pub fn from_prices(entries: impl IntoIterator<Item = (String, Price)>) -> Self {
        PriceTable {
            prices: entries.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// The price of `model` with this table laid over `under`: each form of the name
    /// (exact, without provider prefix, without release date) is looked up here first,
    /// then in `under`, so an exact entry below wins over a looser one above.
    pub fn price_over(&self, under: &PriceTable, model: &str) -> Option<Price> {
        let get = |m: &str| self.prices.get(m).or_else(|| under.prices.get(m)).copied();
        get(model).or_else(|| {
            let unprefixed = model.rsplit_once('/').map_or(model, |(_, m)| m);
            get(unprefixed).or_else(|| get(undated(unprefixed)))
        })
    }

    /// The cost of `usage` on `model`, when the model has a price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }
}

/// `model` without a trailing `-YYYY-MM-DD`, `-YYYYMMDD` or `-latest`.
fn undated(model: &str) -> &str {
    if let Some(base) = model.strip_suffix("-latest") {
        return base;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((base, date)) = model.rsplit_once('-')
        && date.len() == 8
        && digits(date)
    {
        return base;
    }
    let mut parts = model.rsplitn(4, '-');
    if let (Some(day), Some(month), Some(year), Some(base)) = (parts.next(), parts.next(), parts.next(), parts.next())
        && (year.len(), month.len(), day.len()) == (4, 2, 2)
        && digits(year)
        && digits(month)
        && digits(day)
    {
        return base;
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, load_sources};

    fn table(extra: &str) -> PriceTable {
        let text = format!("pack: {{name: p, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\n{extra}");
        let outcome = load_sources(&[Source {
            name: "p.yaml".into(),
            text,
        }]);
        PriceTable::of(&outcome.config.unwrap_or_else(|| panic!("{:?}", outcome.diagnostics)))
    }

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
        Usage {
            prompt,
            completion,
            cached,
            reasoning,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn models_are_found_by_name_prefix_and_release_date() {
        let t = table("");
        let gpt4o = t.price("gpt-4o").expect("gpt-4o");
        for name in [
            "gpt-4o-2024-08-06",
            "openai/gpt-4o",
            "gpt-4o-latest",
            "azure/gpt-4o-2024-11-20",
        ] {
            assert_eq!(t.price(name), Some(gpt4o), "{name}");
        }
        assert_eq!(t.price("claude-sonnet-4-20250514"), t.price("claude-sonnet-4"));
        // A different model is not a dated variant.
        assert_ne!(t.price("gpt-4o-mini"), Some(gpt4o));
        assert_eq!(t.price("gpt-4o-audio-preview"), None);
        assert_eq!(t.price("my-finetune"), None);
        assert_eq!(t.price(""), None);
    }

    #[test]
    fn cost_splits_cached_and_reasoning_tokens() {
        let t = table("");
        // gpt-4o: $2.50 / $1.25 cached / $10 per million.
        let c = t.cost("gpt-4o", &usage(1_000_000, 0, 0, 0)).expect("priced");
        assert!(close(c, 2.5), "{c}");
        let c = t
            .cost("gpt-4o", &usage(1_000_000, 400_000, 100_000, 0))
            .expect("priced");
        assert!(close(c, 0.6 * 2.5 + 0.4 * 1.25 + 0.1 * 10.0), "{c}");
        // o3: reasoning billed as output.
        let c = t.cost("o3", &usage(0, 0, 1_000, 800)).expect("priced");
        assert!(close(c, 0.008), "{c}");
        // Odd counts never make a negative cost.
        assert!(t.cost("o3", &usage(5, 9, 1, 7)).is_some_and(|c| c >= 0.0));
    }

    #[test]
    fn configured_prices_add_to_or_replace_the_shipped_ones() {
        let t = table(
            "pricing:\n  models:\n    gpt-4o: {input_cost_per_1k_tokens: 0.001, output_cost_per_1k_tokens: 0.002}\n    local-llama: {input_cost_per_1k_tokens: 0, output_cost_per_1k_tokens: 0, cached_input_cost_per_1k_tokens: 0}\n",
        );
        let p = t.price("gpt-4o").expect("overridden");
        assert_eq!(
            (p.input, p.cached_input, p.output, p.reasoning),
            (0.001, 0.001, 0.002, 0.002)
        );
        assert_eq!(t.cost("local-llama", &usage(10, 0, 10, 0)), Some(0.0));
        assert!(t.price("gpt-4o-mini").is_some());
        let only = table(
            "pricing: {defaults: false, models: {m: {input_cost_per_1k_tokens: 1, output_cost_per_1k_tokens: 2}}}\n",
        );
        assert_eq!(only.entries().len(), 1);
        assert!(only.price("gpt-4o").is_none());
    }

    #[test]
    fn an_organisation_table_lies_over_the_configuration() {
        let config = table("");
        let org = PriceTable::from_prices([(
            "gpt-4o".to_owned(),
            Price {
                input: 1.0,
                cached_input: 1.0,
                output: 2.0,
                reasoning: 2.0,
            },
        )]);
        assert_eq!(org.price_over(&config, "gpt-4o").map(|p| p.output), Some(2.0));
        assert_eq!(org.price_over(&config, "openai/gpt-4o").map(|p| p.input), Some(1.0));
        // The configuration's exact entry wins over the organisation's undated one.
        let snapshot = org.price_over(&config, "gpt-4o-2024-05-13").map(|p| p.input);
        assert!(snapshot.is_some_and(|i| close(i, 0.005)));
        assert!(
            org.price_over(&config, "gpt-4o-mini")
                .is_some_and(|p| close(p.input, 0.00015))
        );
        assert_eq!(org.price_over(&config, "unknown"), None);
    }

    #[test]
    fn negative_prices_are_refused_by_lint() {
        let outcome = load_sources(&[Source {
            name: "p.yaml".into(),
            text: "pack: {name: p, version: 1.0.0, enabled: true}\npolicies: {chain: []}\npricing: {models: {m: {input_cost_per_1k_tokens: -1, output_cost_per_1k_tokens: 2}}}\n".into(),
        }]);
        assert!(outcome.config.is_none());
        assert!(
            outcome.errors().any(|d| d.path.contains("pricing")),
            "{:?}",
            outcome.diagnostics
        );
    }
}
