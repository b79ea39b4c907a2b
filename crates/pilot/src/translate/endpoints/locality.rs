//! Locality-aware load balancing: which endpoints a proxy prefers, by where it runs.
//!
//! A DestinationRule's `loadBalancer.localityLbSetting` makes endpoint assignments
//! depend on the receiving proxy's locality (`region/zone/subzone`). The mesh leaves
//! it off unless a rule sets it. Two mutually exclusive modes exist:
//!
//! - **distribute**: the first `distribute` entry whose `from` pattern covers the
//!   proxy's locality gives each endpoint locality a share of the traffic (`to`
//!   patterns with percentages). Localities no `to` pattern covers get no traffic.
//!   The cluster must then carry `locality_weighted_lb_config`, or Envoy ignores the
//!   weights.
//! - **failover** (the default when the setting is present): endpoints get priorities
//!   by closeness, 0 for the proxy's own subzone, then its zone, then its region, then
//!   the regions its `failover` entries name (in order), then everything else. With
//!   `failoverPriority` labels, endpoints matching the proxy on more of the leading
//!   labels rank first; closeness then orders endpoints within a label rank.
//!   Priorities only help when unhealthy endpoints are ejected, so, like Istio,
//!   failover needs outlier detection in the effective policy; without it every
//!   endpoint stays at priority 0.
//!
//! Envoy and gRPC both require priorities to be contiguous from 0: the ranks computed
//! here are sparse, and `LocalityPlan::contiguous` renumbers them.

use std::collections::{BTreeMap, BTreeSet};

use mesh_model::networking::{
    Labels, LoadBalancerSettings, LocalityDistribute, LocalityLbSetting, OutlierDetection,
};

use crate::model::Endpoint;
use crate::proxy::Proxy;

/// Label keys that name locality parts, resolved from localities when absent.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// A sortable priority rank: (label rank, closeness rank); smaller is preferred.
pub(super) type Rank = (usize, usize);

/// How one cluster's endpoints are arranged for one proxy.
#[derive(Debug, Clone, Default)]
pub struct LocalityPlan<'a> {
    mode: Mode<'a>,
}

#[derive(Debug, Clone, Default)]
enum Mode<'a> {
    /// All endpoints at priority 0 with their own weights.
    #[default]
    Off,
    /// Locality weights from one `distribute` entry.
    Distribute(&'a LocalityDistribute),
    /// Priorities by label match and closeness.
    Failover {
        proxy: [&'a str; 3],
        proxy_labels: &'a Labels,
        failover_regions: Vec<&'a str>,
        failover_priority: &'a [String],
    },
}

impl<'a> LocalityPlan<'a> {
    /// The plan for a cluster with these effective settings, seen from `proxy`.
    pub fn new(
        load_balancer: Option<&'a LoadBalancerSettings>,
        outlier_detection: Option<&OutlierDetection>,
        proxy: &'a Proxy,
    ) -> Self {
        let Some(setting) = load_balancer.and_then(|lb| lb.locality_lb_setting.as_ref()) else {
            return Self::default();
        };
        if setting.enabled == Some(false) {
            return Self::default();
        }
        let proxy_parts = split(&proxy.locality);
        if !setting.distribute.is_empty() {
            // Distribution and failover are exclusive; distribution wins.
            let entry = setting
                .distribute
                .iter()
                .find(|d| pattern_covers(&d.from, proxy_parts));
            return Self {
                mode: entry.map_or(Mode::Off, Mode::Distribute),
            };
        }
        if outlier_detection.is_none() {
            return Self::default();
        }
        Self {
            mode: Mode::Failover {
                proxy: proxy_parts,
                proxy_labels: &proxy.labels,
                failover_regions: failover_regions(setting, proxy_parts[0]),
                failover_priority: &setting.failover_priority,
            },
        }
    }

    /// Whether locality weights decide the split (the cluster needs
    /// `locality_weighted_lb_config`).
    pub fn weighted(&self) -> bool {
        matches!(self.mode, Mode::Distribute(_))
    }

    /// The raw (sparse) rank of an endpoint; see `LocalityPlan::contiguous`.
    pub(super) fn rank(&self, endpoint: &Endpoint) -> Rank {
        let Mode::Failover {
            proxy,
            proxy_labels,
            failover_regions,
            failover_priority,
        } = &self.mode
        else {
            return (0, 0);
        };
        let ep = split(&endpoint.locality);
        let closeness = if proxy[0].is_empty() {
            // The proxy's locality is unknown: nothing is closer than anything else.
            0
        } else if ep[0] == proxy[0] {
            if ep[1] != proxy[1] {
                2
            } else if ep[2] != proxy[2] {
                1
            } else {
                0
            }
        } else {
            match failover_regions.iter().position(|r| *r == ep[0]) {
                Some(i) => 3 + i,
                None => 3 + failover_regions.len(),
            }
        };
        let label_rank = if failover_priority.is_empty() {
            0
        } else {
            let matched = failover_priority
                .iter()
                .take_while(|key| label_matches(key, *proxy, proxy_labels, ep, &endpoint.labels))
                .count();
            failover_priority.len() - matched
        };
        (label_rank, closeness)
    }

    /// Renumbers sparse ranks to priorities 0, 1, 2, ... in rank order.
    pub(super) fn contiguous(ranks: &BTreeSet<Rank>) -> BTreeMap<Rank, u32> {
        ranks
            .iter()
            .zip(0u32..)
            .map(|(rank, priority)| (*rank, priority))
            .collect()
    }

    /// Locality weights under `distribute`: for each `(locality, weight)` (the summed
    /// endpoint weights of one LocalityLbEndpoints), its new weight, or `None` when
    /// the locality gets no traffic. `None` overall when the plan does not
    /// redistribute, or when no locality would be left.
    pub(super) fn distribute(&self, localities: &[([&str; 3], u32)]) -> Option<Vec<Option<u32>>> {
        let Mode::Distribute(entry) = &self.mode else {
            return None;
        };
        // Most specific patterns claim localities first, so `r/z` beats `r/*`.
        let mut targets: Vec<(&String, u32)> = entry.to.iter().map(|(k, v)| (k, *v)).collect();
        targets.sort_by_key(|(pattern, _)| std::cmp::Reverse(specificity(pattern)));
        let mut out: Vec<Option<u32>> = vec![None; localities.len()];
        let mut claimed = vec![false; localities.len()];
        for (pattern, percent) in targets {
            let members: Vec<usize> = (0..localities.len())
                .filter(|i| !claimed[*i] && pattern_covers(pattern, localities[*i].0))
                .collect();
            let total: u64 = members
                .iter()
                .map(|i| u64::from(localities[*i].1.max(1)))
                .sum();
            for i in members {
                claimed[i] = true;
                if percent == 0 || total == 0 {
                    continue;
                }
                let share = u64::from(percent) * u64::from(localities[i].1.max(1));
                // Rounded to the nearest percent, at least 1 so the locality stays.
                let weight = ((share + total / 2) / total).max(1);
                out[i] = Some(u32::try_from(weight).unwrap_or(u32::MAX));
            }
        }
        out.iter().any(Option::is_some).then_some(out)
    }
}

/// The regions the proxy's region fails over to, in rule order, without repeats.
fn failover_regions<'a>(setting: &'a LocalityLbSetting, region: &str) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for f in &setting.failover {
        if f.from == region && !f.to.is_empty() && f.to != region && !out.contains(&f.to.as_str()) {
            out.push(&f.to);
        }
    }
    out
}

/// Whether an endpoint agrees with the proxy on one `failoverPriority` entry: a label
/// key (same value on both; locality labels fall back to the localities), or
/// `key=value` (the endpoint carries that value).
fn label_matches(
    entry: &str,
    proxy: [&str; 3],
    proxy_labels: &Labels,
    ep: [&str; 3],
    ep_labels: &Labels,
) -> bool {
    if let Some((key, value)) = entry.split_once('=') {
        return label_value(key, ep, ep_labels) == Some(value);
    }
    match (
        label_value(entry, proxy, proxy_labels),
        label_value(entry, ep, ep_labels),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn label_value<'a>(key: &str, locality: [&'a str; 3], labels: &'a Labels) -> Option<&'a str> {
    if let Some(v) = labels.get(key) {
        return Some(v.as_str());
    }
    let part = match key {
        REGION_LABEL => locality[0],
        ZONE_LABEL => locality[1],
        SUBZONE_LABEL => locality[2],
        _ => return None,
    };
    (!part.is_empty()).then_some(part)
}

/// `region/zone/subzone` as three parts, missing ones empty.
pub fn split(text: &str) -> [&str; 3] {
    let mut parts = text.splitn(3, '/');
    [
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    ]
}

/// Whether a locality pattern (`region/zone/subzone`, where `*` or a missing part
/// matches anything) covers a locality.
pub(super) fn pattern_covers(pattern: &str, locality: [&str; 3]) -> bool {
    let pattern = split(pattern);
    if pattern[0].is_empty() {
        return false;
    }
    pattern
        .iter()
        .zip(locality)
        .all(|(p, l)| p.is_empty() || *p == "*" || *p == l)
}

/// How many leading parts of a pattern are literal.
fn specificity(pattern: &str) -> usize {
    split(pattern)
        .iter()
        .take_while(|p| !p.is_empty() && **p != "*")
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_cover_localities() {
        assert!(pattern_covers("*", split("a/b/c")));
        assert!(pattern_covers("a/*", split("a/b/c")));
        assert!(pattern_covers("a", split("a/b")));
        assert!(pattern_covers("a/b/*", split("a/b/")));
        assert!(!pattern_covers("a/c/*", split("a/b/c")));
        assert!(!pattern_covers("", split("a/b/c")));
        assert_eq!(specificity("a/b/*"), 2);
        assert_eq!(specificity("*"), 0);
    }

    #[test]
    fn sparse_ranks_become_contiguous() {
        let ranks: BTreeSet<Rank> = [(0, 2), (1, 0), (0, 5)].into();
        let map = LocalityPlan::contiguous(&ranks);
        assert_eq!(map.values().copied().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(map[&(1, 0)], 2);
    }
}
