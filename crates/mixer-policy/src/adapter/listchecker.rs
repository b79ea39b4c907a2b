//! The listchecker adapter: is a value (a `listentry` instance) on a list?
//!
//! Params: `overrides` (entries always on the list), `providerUrl` (a list
//! fetched over HTTP, one entry per line, refreshed every `refreshInterval`,
//! default 60s, and unusable once older than `ttl`, default 300s), `entryType`
//! (`STRINGS`, `CASE_INSENSITIVE_STRINGS`, `IP_ADDRESSES` with addresses or CIDR
//! ranges, `REGEX` with expressions that must match the whole value), and
//! `blacklist` (a hit refuses with PERMISSION_DENIED; without it, a miss refuses
//! with NOT_FOUND). Answers are reusable for `cachingInterval` (300s) and
//! `cachingUseCount` (10000) uses.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use mixer_core::Value;
use parking_lot::RwLock;
use regex::RegexSet;
use serde::Deserialize;

use super::{CheckResult, ParamsError, code, decode_params, parse_duration};

const NAME: &str = "listchecker";
/// gRPC NOT_FOUND: the value is not on an allow list.
const NOT_FOUND: i32 = 5;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default)]
    provider_url: String,
    #[serde(default)]
    refresh_interval: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    caching_interval: Option<String>,
    #[serde(default)]
    caching_use_count: Option<i32>,
    #[serde(default)]
    overrides: Vec<String>,
    #[serde(default)]
    entry_type: EntryType,
    #[serde(default)]
    blacklist: bool,
}

/// How entries match values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryType {
    /// Exact text.
    #[default]
    Strings,
    /// Text, ignoring ASCII case.
    CaseInsensitiveStrings,
    /// IP addresses and CIDR ranges.
    IpAddresses,
    /// Regular expressions matching the whole value.
    Regex,
}

/// Entries compiled for matching.
#[derive(Debug, Clone)]
enum Entries {
    Strings(HashSet<String>),
    Nets(Vec<IpNet>),
    Regex(RegexSet),
}

impl Entries {
    /// Compiles `lines` (blank lines and `#` comments skipped); the entries that
    /// cannot be read are returned beside.
    fn compile<'a>(
        kind: EntryType,
        lines: impl Iterator<Item = &'a str>,
    ) -> (Entries, Vec<String>) {
        let mut bad = Vec::new();
        let lines: Vec<&str> = lines
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let entries = match kind {
            EntryType::Strings => Entries::Strings(lines.iter().map(|s| s.to_string()).collect()),
            EntryType::CaseInsensitiveStrings => {
                Entries::Strings(lines.iter().map(|s| s.to_ascii_lowercase()).collect())
            }
            EntryType::IpAddresses => Entries::Nets(
                lines
                    .iter()
                    .filter_map(|l| {
                        let net = l
                            .parse::<IpNet>()
                            .ok()
                            .or_else(|| l.parse::<IpAddr>().ok().map(IpNet::from));
                        if net.is_none() {
                            bad.push(format!("{l:?} is not an IP address or CIDR range"));
                        }
                        net
                    })
                    .collect(),
            ),
            EntryType::Regex => {
                let mut good = Vec::new();
                for l in lines {
                    let anchored = format!("^(?:{l})$");
                    match regex::Regex::new(&anchored) {
                        Ok(_) => good.push(anchored),
                        Err(e) => bad.push(format!("{l:?} is not a regular expression: {e}")),
                    }
                }
                match RegexSet::new(&good) {
                    Ok(set) => Entries::Regex(set),
                    Err(e) => {
                        bad.push(format!("the expressions together are too large: {e}"));
                        Entries::Regex(RegexSet::empty())
                    }
                }
            }
        };
        (entries, bad)
    }

    fn contains(&self, kind: EntryType, value: &Value) -> Option<bool> {
        Some(match (self, value) {
            (Entries::Strings(set), Value::String(s)) => match kind {
                EntryType::CaseInsensitiveStrings => set.contains(&s.to_ascii_lowercase()),
                _ => set.contains(&**s),
            },
            (Entries::Strings(set), Value::Ip(ip)) => set.contains(&ip.to_string()),
            (Entries::Nets(nets), Value::Ip(ip)) => nets.iter().any(|n| n.contains(ip)),
            (Entries::Nets(nets), Value::String(s)) => {
                let ip: IpAddr = s.parse().ok()?;
                nets.iter().any(|n| n.contains(&ip))
            }
            (Entries::Regex(set), Value::String(s)) => set.is_match(s),
            _ => return None,
        })
    }
}

/// A fetched list and when it was fetched.
#[derive(Debug, Clone)]
struct Fetched {
    entries: Arc<Entries>,
    at: Instant,
}

/// A configured listchecker.
#[derive(Debug)]
pub struct ListChecker {
    kind: EntryType,
    blacklist: bool,
    overrides: Entries,
    provider_url: Option<String>,
    refresh_interval: Duration,
    ttl: Duration,
    caching_interval: Duration,
    caching_use_count: i32,
    fetched: RwLock<Option<Fetched>>,
}

impl ListChecker {
    /// Builds a listchecker from handler params; an override that cannot be read
    /// refuses the params.
    pub fn new(params: &serde_json::Value) -> Result<Self, ParamsError> {
        let p: Params = decode_params(NAME, params)?;
        let (overrides, bad) =
            Entries::compile(p.entry_type, p.overrides.iter().map(String::as_str));
        if let Some(first) = bad.first() {
            return Err(ParamsError::new(NAME, format!("overrides: {first}")));
        }
        let duration = |field: &str, v: &Option<String>, default: u64| match v {
            Some(text) => parse_duration(NAME, field, text),
            None => Ok(Duration::from_secs(default)),
        };
        let provider_url = (!p.provider_url.is_empty()).then_some(p.provider_url);
        if let Some(url) = &provider_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ParamsError::new(
                NAME,
                format!("providerUrl {url:?} must be an http:// or https:// URL"),
            ));
        }
        if provider_url.is_none() && p.overrides.is_empty() && !p.blacklist {
            return Err(ParamsError::new(
                NAME,
                "an allow list with neither providerUrl nor overrides would refuse everything",
            ));
        }
        let refresh_interval = duration("refreshInterval", &p.refresh_interval, 60)?;
        let ttl = duration("ttl", &p.ttl, 300)?;
        if provider_url.is_some() && ttl < refresh_interval {
            return Err(ParamsError::new(
                NAME,
                "ttl must be at least refreshInterval, or the list expires between refreshes",
            ));
        }
        Ok(Self {
            kind: p.entry_type,
            blacklist: p.blacklist,
            overrides,
            provider_url,
            refresh_interval,
            ttl,
            caching_interval: duration("cachingInterval", &p.caching_interval, 300)?,
            caching_use_count: p.caching_use_count.unwrap_or(10_000).max(0),
            fetched: RwLock::new(None),
        })
    }

    /// The URL to fetch the list from, and how often.
    pub fn provider(&self) -> Option<(&str, Duration)> {
        self.provider_url
            .as_deref()
            .map(|u| (u, self.refresh_interval))
    }

    /// Installs a fetched list (its text, one entry per line) fetched at `at`;
    /// returns the entries that could not be read (skipped).
    pub fn set_list(&self, text: &str, at: Instant) -> Vec<String> {
        let (entries, bad) = Entries::compile(self.kind, text.lines());
        *self.fetched.write() = Some(Fetched {
            entries: Arc::new(entries),
            at,
        });
        bad
    }

    /// Checks `value` at `now`.
    pub fn check(&self, value: &Value, now: Instant) -> CheckResult {
        let answer = |code: i32, message: String| CheckResult {
            code,
            message,
            valid_duration: self.caching_interval,
            valid_use_count: self.caching_use_count,
        };
        let Some(in_overrides) = self.overrides.contains(self.kind, value) else {
            return answer(
                code::INVALID_ARGUMENT,
                format!(
                    "listentry value of type {} cannot be checked against {:?} entries",
                    value.value_type(),
                    self.kind
                ),
            );
        };
        let mut found = in_overrides;
        if !found && self.provider_url.is_some() {
            let fetched = self.fetched.read().clone();
            match fetched {
                Some(f) if now.saturating_duration_since(f.at) <= self.ttl => {
                    found = f.entries.contains(self.kind, value).unwrap_or(false);
                }
                _ => {
                    return CheckResult {
                        code: code::UNAVAILABLE,
                        message: "the list is not available (never fetched, or older than its ttl)"
                            .into(),
                        valid_duration: Duration::ZERO,
                        valid_use_count: 0,
                    };
                }
            }
        }
        let shown = || match value {
            Value::String(s) => s.to_string(),
            Value::Ip(ip) => ip.to_string(),
            other => format!("{other:?}"),
        };
        match (self.blacklist, found) {
            (true, true) => answer(
                code::PERMISSION_DENIED,
                format!("{} is on the deny list", shown()),
            ),
            (false, false) => answer(NOT_FOUND, format!("{} is not on the allow list", shown())),
            _ => answer(code::OK, String::new()),
        }
    }
}

/// Keeps `checker`'s list fetched from its `providerUrl` every refresh interval
/// until `shutdown` (returns at once when it has none). A failed fetch keeps the
/// last list, which serves until its ttl; each failure is logged.
pub async fn refresh(checker: Arc<ListChecker>, shutdown: tokio_util::sync::CancellationToken) {
    let Some((url, every)) = checker.provider().map(|(u, e)| (u.to_string(), e)) else {
        return;
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let fetched = mesh_runtime::http_client::get_url(&url, Duration::from_secs(10)).await;
        match fetched {
            Ok((200, body)) => {
                let text = String::from_utf8_lossy(&body);
                let bad = checker.set_list(&text, Instant::now());
                if !bad.is_empty() {
                    tracing::warn!(%url, skipped = bad.len(), first = %bad[0], "list entries skipped");
                }
            }
            Ok((status, _)) => {
                tracing::warn!(%url, status, "list fetch failed; keeping the last list")
            }
            Err(e) => tracing::warn!(%url, error = %e, "list fetch failed; keeping the last list"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn allow_and_deny_lists_of_each_entry_type() {
        let now = Instant::now();
        let allow = ListChecker::new(&json!({"overrides": ["v1", "v2"]})).unwrap();
        assert!(allow.check(&s("v1"), now).is_ok());
        let r = allow.check(&s("V1"), now);
        assert_eq!(r.code, NOT_FOUND, "{}", r.message);
        assert_eq!(r.valid_duration, Duration::from_secs(300));

        let ci = ListChecker::new(
            &json!({"overrides": ["Jason"], "entryType": "CASE_INSENSITIVE_STRINGS"}),
        )
        .unwrap();
        assert!(ci.check(&s("jASON"), now).is_ok());

        let deny = ListChecker::new(&json!({"overrides": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"], "entryType": "IP_ADDRESSES", "blacklist": true})).unwrap();
        assert_eq!(
            deny.check(&Value::Ip("10.2.3.4".parse().unwrap()), now)
                .code,
            code::PERMISSION_DENIED
        );
        assert_eq!(
            deny.check(&s("192.168.1.7"), now).code,
            code::PERMISSION_DENIED
        );
        assert_eq!(
            deny.check(&s("2001:db8::1"), now).code,
            code::PERMISSION_DENIED
        );
        assert!(deny.check(&s("192.168.1.8"), now).is_ok());
        assert_eq!(
            deny.check(&s("not-an-ip"), now).code,
            code::INVALID_ARGUMENT
        );

        let re = ListChecker::new(
            &json!({"overrides": ["/api/v[0-9]+/.*", "/health"], "entryType": "REGEX"}),
        )
        .unwrap();
        assert!(re.check(&s("/api/v2/users"), now).is_ok());
        assert_eq!(
            re.check(&s("/x/api/v2/users"), now).code,
            NOT_FOUND,
            "anchored at the start"
        );
        assert_eq!(
            re.check(&s("/healthz"), now).code,
            NOT_FOUND,
            "anchored at the end"
        );
    }

    #[test]
    fn a_fetched_list_serves_until_its_ttl() {
        let checker = ListChecker::new(&json!({
            "providerUrl": "http://lists.example/allowed",
            "refreshInterval": "10s", "ttl": "30s", "overrides": ["admin"],
        }))
        .unwrap();
        assert_eq!(
            checker.provider(),
            Some(("http://lists.example/allowed", Duration::from_secs(10)))
        );
        let t0 = Instant::now();
        // Before the first fetch: overrides still answer, the rest is unavailable.
        assert!(checker.check(&s("admin"), t0).is_ok());
        assert_eq!(checker.check(&s("alice"), t0).code, code::UNAVAILABLE);
        let bad = checker.set_list("alice\n# a comment\n\nbob\n", t0);
        assert!(bad.is_empty());
        assert!(
            checker
                .check(&s("bob"), t0 + Duration::from_secs(29))
                .is_ok()
        );
        assert_eq!(checker.check(&s("carol"), t0).code, NOT_FOUND);
        assert_eq!(
            checker.check(&s("bob"), t0 + Duration::from_secs(31)).code,
            code::UNAVAILABLE,
            "a list older than its ttl is not trusted"
        );
        // Unreadable fetched entries are skipped and reported.
        let ips =
            ListChecker::new(&json!({"providerUrl": "https://x/ips", "entryType": "IP_ADDRESSES"}))
                .unwrap();
        let bad = ips.set_list("10.0.0.1\nbogus\n", t0);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(ips.check(&s("10.0.0.1"), t0).is_ok());
    }

    #[tokio::test]
    async fn the_list_is_fetched_over_http_and_refreshed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A list server whose answer changes after the first fetch.
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let app = axum::Router::new().route(
            "/list",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move { if n == 0 { "alice\n" } else { "alice\nbob\n" } }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let checker = Arc::new(
            ListChecker::new(&json!({
                "providerUrl": format!("http://{addr}/list"),
                "refreshInterval": "100ms", "ttl": "10s",
            }))
            .unwrap(),
        );
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(refresh(checker.clone(), shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !checker.check(&s("bob"), Instant::now()).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the refreshed list never arrived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(checker.check(&s("alice"), Instant::now()).is_ok());
        assert!(served.load(Ordering::SeqCst) >= 2);
        shutdown.cancel();
    }

    #[test]
    fn bad_params_are_refused_naming_the_field() {
        for (params, needle) in [
            (
                json!({"overrides": ["10.0.0.0/33"], "entryType": "IP_ADDRESSES"}),
                "overrides",
            ),
            (
                json!({"overrides": ["(unclosed"], "entryType": "REGEX"}),
                "overrides",
            ),
            (
                json!({"providerUrl": "ftp://x", "overrides": ["a"]}),
                "providerUrl",
            ),
            (
                json!({"providerUrl": "http://x", "refreshInterval": "1m", "ttl": "10s"}),
                "ttl",
            ),
            (
                json!({"entryType": "NUMBERS", "overrides": ["a"]}),
                "NUMBERS",
            ),
            (json!({}), "neither providerUrl nor overrides"),
            (
                json!({"overrides": ["a"], "cachingInterval": "later"}),
                "cachingInterval",
            ),
        ] {
            let e = ListChecker::new(&params).unwrap_err().to_string();
            assert!(e.contains(needle), "{params}: {e}");
        }
    }
}
