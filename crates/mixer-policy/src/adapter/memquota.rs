//! The memquota adapter: quotas counted in this process's memory.
//!
//! Params: `quotas`, each with the `name` of the quota instance it limits,
//! `maxAmount`, `validDuration` (the rolling window; 0 makes a pool whose
//! allocations never expire) and `overrides` (for given `dimensions`, another
//! `maxAmount` and optionally `validDuration`; the first override whose
//! dimensions all match applies); and `minDeduplicationDuration` (default 1s):
//! an allocation repeated with the same deduplication id within it is answered
//! as the first was, and not counted again.
//!
//! Each combination of dimension values has its own count. Windows are exact to
//! the millisecond: allocations are kept per millisecond and leave the window when
//! they are older than it.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Deserialize;

use super::{ParamsError, QuotaResult, decode_params, parse_duration};

const NAME: &str = "memquota";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    quotas: Vec<QuotaParams>,
    #[serde(default)]
    min_deduplication_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuotaParams {
    name: String,
    max_amount: i64,
    #[serde(default)]
    valid_duration: Option<String>,
    #[serde(default)]
    overrides: Vec<OverrideParams>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OverrideParams {
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    max_amount: i64,
    #[serde(default)]
    valid_duration: Option<String>,
}

/// A quota's size and window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) max_amount: i64,
    pub(crate) window: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Quota {
    limit: Limit,
    overrides: Vec<(BTreeMap<String, String>, Limit)>,
}

impl Quota {
    pub(crate) fn limit_for(&self, dimensions: &BTreeMap<String, String>) -> &Limit {
        self.overrides
            .iter()
            .find(|(dims, _)| dims.iter().all(|(k, v)| dimensions.get(k) == Some(v)))
            .map_or(&self.limit, |(_, l)| l)
    }
}

/// Allocations of one quota and dimension combination.
#[derive(Debug, Default)]
struct Counter {
    /// (millisecond since the adapter started, amount), oldest first.
    log: VecDeque<(u64, i64)>,
    used: i64,
}

impl Counter {
    fn expire(&mut self, now_ms: u64, window: Duration) {
        if window.is_zero() {
            return;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        while let Some((at, amount)) = self.log.front() {
            if now_ms.saturating_sub(*at) < window_ms {
                break;
            }
            self.used -= amount;
            self.log.pop_front();
        }
    }

    fn take(&mut self, now_ms: u64, amount: i64) {
        self.used += amount;
        match self.log.back_mut() {
            Some((at, a)) if *at == now_ms => *a += amount,
            _ => self.log.push_back((now_ms, amount)),
        }
    }
}

/// An allocation that failed for a reason other than an exhausted quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// No quota of that name is configured.
    #[error("quota {0} is not configured in this handler")]
    Unknown(String),
    /// A negative amount.
    #[error("quota amount {0} is negative")]
    NegativeAmount(i64),
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<(String, String), Counter>,
    dedup: HashMap<String, (Instant, QuotaResult)>,
}

/// Quotas as memquota's params describe them (also the SQL quota's).
#[derive(Debug, Clone)]
pub(crate) struct QuotaSet {
    pub(crate) quotas: HashMap<String, Quota>,
    pub(crate) dedup_for: Duration,
}

impl QuotaSet {
    /// Reads `params` for `adapter`.
    pub(crate) fn parse(
        adapter: &'static str,
        params: &serde_json::Value,
    ) -> Result<Self, ParamsError> {
        let p: Params = decode_params(adapter, params)?;
        let mut quotas = HashMap::new();
        for (i, q) in p.quotas.into_iter().enumerate() {
            let field = format!("quotas[{i}]");
            if q.name.is_empty() {
                return Err(ParamsError::new(
                    adapter,
                    format!("{field}.name is required"),
                ));
            }
            let base = limit(adapter, &field, q.max_amount, &q.valid_duration)?;
            let mut overrides = Vec::new();
            for (j, o) in q.overrides.into_iter().enumerate() {
                let field = format!("{field}.overrides[{j}]");
                if o.dimensions.is_empty() {
                    return Err(ParamsError::new(
                        adapter,
                        format!("{field}.dimensions is required"),
                    ));
                }
                let mut own = limit(adapter, &field, o.max_amount, &o.valid_duration)?;
                if o.valid_duration.is_none() {
                    own.window = base.window;
                }
                overrides.push((o.dimensions, own));
            }
            if quotas
                .insert(
                    q.name.clone(),
                    Quota {
                        limit: base,
                        overrides,
                    },
                )
                .is_some()
            {
                return Err(ParamsError::new(
                    adapter,
                    format!("{field}: quota {} is listed twice", q.name),
                ));
            }
        }
        let dedup_for = match &p.min_deduplication_duration {
            Some(d) => parse_duration(adapter, "minDeduplicationDuration", d)?,
            None => Duration::from_secs(1),
        };
        Ok(Self { quotas, dedup_for })
    }

    /// The quota named `name`, checking the amount asked for.
    pub(crate) fn get(&self, name: &str, amount: i64) -> Result<&Quota, QuotaError> {
        let quota = self
            .quotas
            .get(name)
            .ok_or_else(|| QuotaError::Unknown(name.to_string()))?;
        if amount < 0 {
            return Err(QuotaError::NegativeAmount(amount));
        }
        Ok(quota)
    }
}

/// What to grant of `amount` when `left` remains.
pub(crate) fn grant(amount: i64, left: i64, best_effort: bool) -> i64 {
    let left = left.max(0);
    if amount <= left {
        amount
    } else if best_effort {
        left
    } else {
        0
    }
}

/// A configured memquota.
#[derive(Debug)]
pub struct MemQuota {
    set: QuotaSet,
    epoch: Instant,
    state: Mutex<State>,
}

impl MemQuota {
    /// Builds a memquota from handler params.
    pub fn new(params: &serde_json::Value) -> Result<Self, ParamsError> {
        Ok(Self {
            set: QuotaSet::parse(NAME, params)?,
            epoch: Instant::now(),
            state: Mutex::new(State::default()),
        })
    }

    /// Allocates `amount` of quota `name` for `dimensions` at `now`. Without
    /// `best_effort` all or nothing is granted; with it, as much as is left.
    /// A non-empty `dedup_id` seen within the deduplication duration gets the
    /// first answer again and takes nothing.
    pub fn alloc(
        &self,
        name: &str,
        dimensions: &BTreeMap<String, String>,
        amount: i64,
        best_effort: bool,
        dedup_id: &str,
        now: Instant,
    ) -> Result<QuotaResult, QuotaError> {
        let limit = self.set.get(name, amount)?.limit_for(dimensions);
        let dedup_for = self.set.dedup_for;
        let mut state = self.state.lock();
        if !dedup_id.is_empty() {
            if let Some((at, result)) = state.dedup.get(dedup_id)
                && now.saturating_duration_since(*at) < dedup_for
            {
                return Ok(result.clone());
            }
            // Forget expired ids now and then, so the map stays small.
            if state.dedup.len() > 1024 {
                state
                    .dedup
                    .retain(|_, (at, _)| now.saturating_duration_since(*at) < dedup_for);
            }
        }
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let counter = state
            .counters
            .entry((name.to_string(), dimension_key(dimensions)))
            .or_default();
        counter.expire(now_ms, limit.window);
        let granted = grant(amount, limit.max_amount - counter.used, best_effort);
        if granted > 0 {
            counter.take(now_ms, granted);
        }
        let result = QuotaResult {
            granted,
            valid_duration: limit.window,
        };
        if !dedup_id.is_empty() {
            state
                .dedup
                .insert(dedup_id.to_string(), (now, result.clone()));
        }
        Ok(result)
    }
}

fn limit(
    adapter: &'static str,
    field: &str,
    max_amount: i64,
    window: &Option<String>,
) -> Result<Limit, ParamsError> {
    if max_amount < 0 {
        return Err(ParamsError::new(
            adapter,
            format!("{field}.maxAmount must not be negative"),
        ));
    }
    let window = match window {
        Some(d) => parse_duration(adapter, &format!("{field}.validDuration"), d)?,
        None => Duration::ZERO,
    };
    Ok(Limit { max_amount, window })
}

/// One string per dimension combination (keys sorted by the map).
pub(crate) fn dimension_key(dimensions: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in dimensions {
        key.push_str(k);
        key.push('\u{1}');
        key.push_str(v);
        key.push('\u{2}');
    }
    key
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn quota() -> MemQuota {
        MemQuota::new(&json!({
            "quotas": [{
                "name": "requestcount.instance.istio-system",
                "maxAmount": 5,
                "validDuration": "1s",
                "overrides": [
                    {"dimensions": {"destination": "reviews", "source": "bot"}, "maxAmount": 1},
                    {"dimensions": {"destination": "reviews"}, "maxAmount": 3, "validDuration": "2s"}
                ]
            }],
            "minDeduplicationDuration": "500ms"
        }))
        .unwrap()
    }

    const Q: &str = "requestcount.instance.istio-system";

    #[test]
    fn a_rolling_window_per_dimension_combination() {
        let q = quota();
        let t0 = Instant::now();
        let web = dims(&[("destination", "productpage")]);
        let granted: i64 = (0..7)
            .map(|_| q.alloc(Q, &web, 1, false, "", t0).unwrap().granted)
            .sum();
        assert_eq!(granted, 5, "maxAmount 5 per window");
        // Another combination has its own count.
        assert_eq!(
            q.alloc(Q, &dims(&[("destination", "details")]), 1, false, "", t0)
                .unwrap()
                .granted,
            1
        );
        // 999 ms later the window still holds them; at 1 s they have left it.
        assert_eq!(
            q.alloc(Q, &web, 1, false, "", t0 + Duration::from_millis(999))
                .unwrap()
                .granted,
            0
        );
        let r = q
            .alloc(Q, &web, 1, false, "", t0 + Duration::from_millis(1000))
            .unwrap();
        assert_eq!(
            r,
            QuotaResult {
                granted: 1,
                valid_duration: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn overrides_apply_in_order_with_their_own_window() {
        let q = quota();
        let t0 = Instant::now();
        let bot = dims(&[("destination", "reviews"), ("source", "bot")]);
        assert_eq!(q.alloc(Q, &bot, 1, false, "", t0).unwrap().granted, 1);
        assert_eq!(q.alloc(Q, &bot, 1, false, "", t0).unwrap().granted, 0);
        let reviews = dims(&[("destination", "reviews"), ("source", "web")]);
        let r = q.alloc(Q, &reviews, 3, false, "", t0).unwrap();
        assert_eq!((r.granted, r.valid_duration), (3, Duration::from_secs(2)));
        assert_eq!(
            q.alloc(Q, &reviews, 1, false, "", t0 + Duration::from_millis(1500))
                .unwrap()
                .granted,
            0
        );
        assert_eq!(
            q.alloc(Q, &reviews, 1, false, "", t0 + Duration::from_secs(2))
                .unwrap()
                .granted,
            1
        );
    }

    #[test]
    fn best_effort_takes_what_is_left_and_all_or_nothing_takes_none() {
        let q = quota();
        let t0 = Instant::now();
        let d = dims(&[("destination", "x")]);
        assert_eq!(q.alloc(Q, &d, 4, false, "", t0).unwrap().granted, 4);
        assert_eq!(q.alloc(Q, &d, 3, false, "", t0).unwrap().granted, 0);
        assert_eq!(q.alloc(Q, &d, 3, true, "", t0).unwrap().granted, 1);
        assert_eq!(q.alloc(Q, &d, 0, false, "", t0).unwrap().granted, 0);
    }

    #[test]
    fn a_repeated_deduplication_id_is_answered_once() {
        let q = quota();
        let t0 = Instant::now();
        let d = dims(&[("destination", "y")]);
        let first = q.alloc(Q, &d, 3, false, "req-1", t0).unwrap();
        let again = q
            .alloc(Q, &d, 3, false, "req-1", t0 + Duration::from_millis(400))
            .unwrap();
        assert_eq!(first, again);
        // The retry took nothing: 2 are left.
        assert_eq!(q.alloc(Q, &d, 2, false, "req-2", t0).unwrap().granted, 2);
        // After the deduplication duration the id counts as new.
        assert_eq!(
            q.alloc(Q, &d, 1, false, "req-1", t0 + Duration::from_millis(600))
                .unwrap()
                .granted,
            0
        );
    }

    #[test]
    fn a_pool_without_window_never_refills() {
        let q = MemQuota::new(&json!({"quotas": [{"name": "pool", "maxAmount": 2}]})).unwrap();
        let t0 = Instant::now();
        let d = BTreeMap::new();
        assert_eq!(q.alloc("pool", &d, 2, false, "", t0).unwrap().granted, 2);
        assert_eq!(
            q.alloc("pool", &d, 1, false, "", t0 + Duration::from_secs(3600))
                .unwrap()
                .granted,
            0
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let q = quota();
        let t0 = Instant::now();
        assert_eq!(
            q.alloc("nope", &BTreeMap::new(), 1, false, "", t0),
            Err(QuotaError::Unknown("nope".into()))
        );
        assert_eq!(
            q.alloc(Q, &BTreeMap::new(), -1, false, "", t0),
            Err(QuotaError::NegativeAmount(-1))
        );
        for (params, needle) in [
            (
                json!({"quotas": [{"name": "", "maxAmount": 1}]}),
                "quotas[0].name",
            ),
            (
                json!({"quotas": [{"name": "a", "maxAmount": -1}]}),
                "quotas[0].maxAmount",
            ),
            (
                json!({"quotas": [{"name": "a", "maxAmount": 1, "validDuration": "x"}]}),
                "quotas[0].validDuration",
            ),
            (
                json!({"quotas": [{"name": "a", "maxAmount": 1, "overrides": [{"maxAmount": 1}]}]}),
                "overrides[0].dimensions",
            ),
            (
                json!({"quotas": [{"name": "a", "maxAmount": 1}, {"name": "a", "maxAmount": 2}]}),
                "listed twice",
            ),
            (json!({"quotas": [{"name": "a"}]}), "maxAmount"),
        ] {
            let e = MemQuota::new(&params).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
    }
}
