//! The lookups analysis needs, built in one pass over the resources.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::AnalysisOptions;
use crate::{
    host,
    kind::Kind,
    networking::{Gateway, Labels, ServiceEntry},
    resource::{Resource, Spec},
};

/// Hosts reversed character by character, so that "every host under `.example.com`"
/// is a prefix range.
fn reversed(h: &str) -> String {
    h.chars().rev().collect()
}

/// Every suffix of `h` that starts at a dot (`.b.c` and `.c` for `a.b.c`).
fn dot_suffixes(h: &str) -> impl Iterator<Item = &str> {
    h.match_indices('.').map(move |(i, _)| &h[i..])
}

pub(super) struct Index<'a> {
    /// Concrete hosts declared by ServiceEntries or known otherwise.
    exact_hosts: HashSet<String>,
    /// The same, reversed, for wildcard lookups.
    reversed_hosts: BTreeSet<String>,
    /// Suffixes (`.example.com`) of wildcard ServiceEntry hosts.
    wildcard_suffixes: HashSet<String>,
    /// The same, reversed.
    reversed_suffixes: BTreeSet<String>,
    /// DestinationRules by concrete host.
    drs_by_host: HashMap<String, Vec<&'a crate::networking::DestinationRule>>,
    /// DestinationRules by wildcard suffix.
    drs_by_suffix: HashMap<String, Vec<&'a crate::networking::DestinationRule>>,
    /// ServiceEntries by concrete host.
    ses_by_host: HashMap<String, Vec<&'a ServiceEntry>>,
    /// Hosts given in the options (endpoints unknown).
    external_hosts: HashSet<&'a str>,
    /// Gateways by (namespace, name).
    gateways: HashMap<(&'a str, &'a str), &'a Gateway>,
    /// Handlers and instances by (kind, namespace, name).
    mixer: HashSet<(Kind, &'a str, &'a str)>,
    /// DestinationRules without workloadSelector, by (namespace, host).
    pub unselected_drs: BTreeMap<(&'a str, String), Vec<&'a Resource>>,
    /// Sidecars without workloadSelector, by namespace.
    pub unselected_sidecars: BTreeMap<&'a str, Vec<&'a Resource>>,
}

impl<'a> Index<'a> {
    pub fn build(resources: &[&'a Resource], opts: &'a AnalysisOptions) -> Self {
        let mut ix = Index {
            exact_hosts: HashSet::new(),
            reversed_hosts: BTreeSet::new(),
            wildcard_suffixes: HashSet::new(),
            reversed_suffixes: BTreeSet::new(),
            drs_by_host: HashMap::new(),
            drs_by_suffix: HashMap::new(),
            ses_by_host: HashMap::new(),
            external_hosts: opts.known_hosts.iter().map(String::as_str).collect(),
            gateways: HashMap::new(),
            mixer: HashSet::new(),
            unselected_drs: BTreeMap::new(),
            unselected_sidecars: BTreeMap::new(),
        };
        for h in &opts.known_hosts {
            ix.add_host(h.clone());
        }
        for r in resources {
            let ns = r.meta.namespace.as_str();
            let name = r.meta.name.as_str();
            match &r.spec {
                Spec::ServiceEntry(se) => {
                    for h in &se.hosts {
                        let fq = host::fqdn(h, ns).into_owned();
                        if let Some(suffix) = fq.strip_prefix('*') {
                            ix.reversed_suffixes.insert(reversed(suffix));
                            ix.wildcard_suffixes.insert(suffix.to_string());
                        } else {
                            ix.ses_by_host.entry(fq.clone()).or_default().push(se);
                            ix.add_host(fq);
                        }
                    }
                }
                Spec::DestinationRule(dr) => {
                    let fq = host::fqdn(&dr.host, ns).into_owned();
                    if dr.workload_selector.is_none() {
                        ix.unselected_drs
                            .entry((ns, fq.clone()))
                            .or_default()
                            .push(r);
                    }
                    match fq.strip_prefix('*') {
                        Some(suffix) => ix
                            .drs_by_suffix
                            .entry(suffix.to_string())
                            .or_default()
                            .push(dr),
                        None => ix.drs_by_host.entry(fq).or_default().push(dr),
                    }
                }
                Spec::Gateway(gw) => {
                    ix.gateways.insert((ns, name), gw);
                }
                Spec::Sidecar(sc)
                    if sc
                        .workload_selector
                        .as_ref()
                        .is_none_or(|s| s.labels.is_empty()) =>
                {
                    ix.unselected_sidecars.entry(ns).or_default().push(r);
                }
                Spec::Handler(_) => {
                    ix.mixer.insert((Kind::Handler, ns, name));
                }
                Spec::Instance(_) => {
                    ix.mixer.insert((Kind::Instance, ns, name));
                }
                _ => {}
            }
        }
        ix
    }

    fn add_host(&mut self, h: String) {
        self.reversed_hosts.insert(reversed(&h));
        self.exact_hosts.insert(h);
    }

    /// Whether a (fully qualified) destination host is declared or known.
    pub fn host_known(&self, h: &str) -> bool {
        if let Some(suffix) = h.strip_prefix('*') {
            // A wildcard destination is known when a wildcard entry covers it, or some
            // declared host (or narrower wildcard) falls under it.
            if dot_suffixes(suffix).any(|s| self.wildcard_suffixes.contains(s)) {
                return true;
            }
            let rev = reversed(suffix);
            let under = |set: &BTreeSet<String>| {
                set.range(rev.clone()..)
                    .next()
                    .is_some_and(|r| r.starts_with(&rev))
            };
            return under(&self.reversed_hosts) || under(&self.reversed_suffixes);
        }
        self.exact_hosts.contains(h) || dot_suffixes(h).any(|s| self.wildcard_suffixes.contains(s))
    }

    /// Whether some DestinationRule for `h` (exactly, or by a wildcard covering it)
    /// defines `subset`.
    pub fn subset_defined(&self, h: &str, subset: &str) -> bool {
        let defines = |drs: Option<&Vec<&crate::networking::DestinationRule>>| {
            drs.is_some_and(|v| {
                v.iter()
                    .any(|dr| dr.subsets.iter().any(|s| s.name == subset))
            })
        };
        if defines(self.drs_by_host.get(h)) {
            return true;
        }
        let concrete = h.strip_prefix('*').unwrap_or(h);
        dot_suffixes(concrete).any(|s| defines(self.drs_by_suffix.get(s)))
    }

    /// Whether `labels` select no endpoint of the ServiceEntries declaring `h`, judged
    /// only when every such entry lists its endpoints.
    pub fn subset_selects_nothing(&self, h: &str, labels: &Labels) -> bool {
        if self.external_hosts.contains(h) {
            return false;
        }
        let Some(entries) = self.ses_by_host.get(h) else {
            return false;
        };
        if entries.iter().any(|se| se.endpoints.is_empty()) {
            return false;
        }
        !entries
            .iter()
            .flat_map(|se| se.endpoints.iter())
            .any(|ep| labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)))
    }

    /// The Gateway `namespace/name`, if it exists.
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&'a Gateway> {
        self.gateways.get(&(namespace, name)).copied()
    }

    /// Whether a handler or instance exists.
    pub fn exists(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.mixer.contains(&(kind, namespace, name))
    }
}
