#![allow(clippy::unwrap_used)]

use super::*;
use crate::{
    parse::{ParseOptions, parse_document_set},
    validation::test_support::mk_doc,
};

/// Parses one valid resource.
fn mk(kind: Kind, ns: &str, name: &str, spec: &str) -> Resource {
    let set = parse_document_set(
        "t.yaml",
        &mk_doc(kind, ns, name, spec),
        &ParseOptions::default(),
    );
    let errs: Vec<_> = set.errors().map(ToString::to_string).collect();
    assert!(errs.is_empty(), "{errs:#?}");
    set.accepted.into_iter().next().unwrap()
}

fn mk_se(ns: &str, name: &str, host: &str, endpoints: &str) -> Resource {
    let spec = if endpoints.is_empty() {
        format!(
            "hosts: [{host}]\nports:\n- number: 9080\n  name: http\n  protocol: HTTP\nresolution: DNS\nlocation: MESH_INTERNAL\n"
        )
    } else {
        format!(
            "hosts: [{host}]\nports:\n- number: 9080\n  name: http\n  protocol: HTTP\nresolution: STATIC\nlocation: MESH_INTERNAL\nendpoints:\n{endpoints}"
        )
    };
    mk(Kind::ServiceEntry, ns, name, &spec)
}

fn mk_vs(
    ns: &str,
    name: &str,
    hosts: &str,
    gateways: Option<&str>,
    dest: &str,
    subset: &str,
) -> Resource {
    let mut spec = format!("hosts: {hosts}\n");
    if let Some(g) = gateways {
        spec.push_str(&format!("gateways: {g}\n"));
    }
    spec.push_str(&format!(
        "http:\n- route:\n  - destination:\n      host: {dest}\n"
    ));
    if !subset.is_empty() {
        spec.push_str(&format!("      subset: {subset}\n"));
    }
    mk(Kind::VirtualService, ns, name, &spec)
}

fn mk_dr(ns: &str, name: &str, host: &str, subsets: &[(&str, &str)]) -> Resource {
    let mut spec = format!("host: {host}\n");
    if !subsets.is_empty() {
        spec.push_str("subsets:\n");
        for (n, v) in subsets {
            spec.push_str(&format!("- name: {n}\n  labels:\n    version: {v}\n"));
        }
    }
    mk(Kind::DestinationRule, ns, name, &spec)
}

fn mk_gw(ns: &str, name: &str, hosts: &str) -> Resource {
    mk(
        Kind::Gateway,
        ns,
        name,
        &format!(
            "selector:\n  istio: ingressgateway\nservers:\n- port:\n    number: 80\n    name: http\n    protocol: HTTP\n  hosts: {hosts}\n"
        ),
    )
}

fn run(resources: &[Resource]) -> Vec<AnalysisMessage> {
    let refs: Vec<&Resource> = resources.iter().collect();
    analyze(&refs)
}

/// The (code, resource name, field) of every message.
fn found(resources: &[Resource]) -> Vec<(&'static str, String, Option<String>)> {
    run(resources)
        .into_iter()
        .map(|m| (m.code, m.resource.name, m.field))
        .collect()
}

fn codes(resources: &[Resource]) -> Vec<&'static str> {
    run(resources).into_iter().map(|m| m.code).collect()
}

const EP: &str = "- address: 127.0.0.1\n  labels:\n    version: v1\n";

#[test]
fn a_consistent_set_has_no_findings() {
    let set = vec![
        mk_se(
            "bookinfo",
            "reviews",
            "reviews.bookinfo.svc.cluster.local",
            EP,
        ),
        mk_dr("bookinfo", "reviews", "reviews", &[("v1", "v1")]),
        mk_vs("bookinfo", "reviews", "[reviews]", None, "reviews", "v1"),
        mk_gw("bookinfo", "gw", "[\"*.example.com\"]"),
        mk_vs(
            "bookinfo",
            "edge",
            "[www.example.com]",
            Some("[gw]"),
            "reviews",
            "",
        ),
    ];
    assert_eq!(found(&set), vec![]);
}

#[test]
fn gal0101_destination_host_not_found() {
    let set = vec![mk_vs("ns", "vs", "[a]", None, "ratings", "")];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0101",
            "vs".to_string(),
            Some("spec.http[0].route[0].destination.host".to_string())
        )]
    );
    let msg = &run(&set)[0];
    assert_eq!(msg.level, Level::Warning);
    assert!(
        msg.message.contains("ratings.ns.svc.cluster.local"),
        "{}",
        msg.message
    );
    // Declared by a ServiceEntry (exactly or by wildcard), or known: no finding.
    let set = vec![
        mk_vs("ns", "vs", "[a]", None, "ratings", ""),
        mk_se("other", "se", "ratings.ns.svc.cluster.local", ""),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
    let set = vec![
        mk_vs("ns", "vs", "[a]", None, "api.example.com", ""),
        mk(
            Kind::ServiceEntry,
            "ns",
            "wild",
            "hosts: [\"*.example.com\"]\nports:\n- number: 443\n  name: tls\n  protocol: TLS\n",
        ),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
    let resources = [mk_vs("ns", "vs", "[a]", None, "ratings", "")];
    let refs: Vec<&Resource> = resources.iter().collect();
    let opts = AnalysisOptions {
        known_hosts: vec!["ratings.ns.svc.cluster.local".to_string()],
    };
    assert!(analyze_with(&refs, &opts).is_empty());
}

#[test]
fn gal0101_wildcard_destinations_match_hosts_under_them() {
    let set = vec![
        mk_vs("ns", "vs", "[a]", None, "\"*.example.com\"", ""),
        mk_se("ns", "se", "api.example.com", ""),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
    let set = vec![
        mk_vs("ns", "vs", "[a]", None, "\"*.example.com\"", ""),
        mk_se("ns", "se", "api.example.org", ""),
    ];
    assert_eq!(codes(&set), vec!["GAL0101"]);
}

#[test]
fn gal0102_subset_not_found() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", EP),
        mk_dr("ns", "dr", "reviews", &[("v1", "v1")]),
        mk_vs("ns", "vs", "[reviews]", None, "reviews", "v2"),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0102",
            "vs".to_string(),
            Some("spec.http[0].route[0].destination.subset".to_string())
        )]
    );
    assert_eq!(run(&set)[0].level, Level::Error);
    // A DestinationRule in another namespace for the same FQDN counts.
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", EP),
        mk_dr(
            "other",
            "dr",
            "reviews.ns.svc.cluster.local",
            &[("v1", "v1")],
        ),
        mk_vs("ns", "vs", "[reviews]", None, "reviews", "v1"),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
}

#[test]
fn gal0103_gateway_not_found() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_gw("ns", "gw", "[\"*\"]"),
        mk_vs(
            "ns",
            "vs",
            "[www.example.com]",
            Some("[gw, other/missing, mesh]"),
            "reviews",
            "",
        ),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0103",
            "vs".to_string(),
            Some("spec.gateways[1]".to_string())
        )]
    );
    let msg = &run(&set)[0];
    assert!(msg.message.contains("other/missing"), "{}", msg.message);
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_gw("istio-system", "ingress", "[\"*\"]"),
        mk_vs(
            "ns",
            "vs",
            "[www.example.com]",
            Some("[istio-system/ingress]"),
            "reviews",
            "",
        ),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
}

#[test]
fn gal0103_match_gateways_are_checked_too() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk(
            Kind::VirtualService,
            "ns",
            "vs",
            "hosts: [reviews]\nhttp:\n- match:\n  - gateways: [nope]\n  route:\n  - destination:\n      host: reviews\n",
        ),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0103",
            "vs".to_string(),
            Some("spec.http[0].match[0].gateways[0]".to_string())
        )]
    );
}

#[test]
fn gal0104_conflicting_destination_rules() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_dr("ns", "a", "reviews", &[]),
        mk_dr("ns", "b", "reviews.ns.svc.cluster.local", &[]),
    ];
    assert_eq!(
        found(&set),
        vec![
            ("GAL0104", "a".to_string(), Some("spec.host".to_string())),
            ("GAL0104", "b".to_string(), Some("spec.host".to_string())),
        ]
    );
    // Different namespaces, or a workloadSelector: no conflict.
    let set = vec![
        mk_dr("ns", "a", "reviews.ns.svc.cluster.local", &[]),
        mk_dr("other", "b", "reviews.ns.svc.cluster.local", &[]),
        mk(
            Kind::DestinationRule,
            "ns",
            "c",
            "host: reviews\nworkloadSelector:\n  matchLabels:\n    app: productpage\n",
        ),
    ];
    assert!(!codes(&set).contains(&"GAL0104"));
}

#[test]
fn gal0105_virtual_service_unbound() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_vs("ns", "empty", "[a.example.com]", Some("[]"), "reviews", ""),
        mk_vs(
            "ns",
            "missing",
            "[b.example.com]",
            Some("[gone]"),
            "reviews",
            "",
        ),
    ];
    let f = found(&set);
    assert!(
        f.contains(&(
            "GAL0105",
            "empty".to_string(),
            Some("spec.gateways".to_string())
        )),
        "{f:?}"
    );
    assert!(
        f.contains(&(
            "GAL0105",
            "missing".to_string(),
            Some("spec.gateways".to_string())
        )),
        "{f:?}"
    );
    // One existing gateway (or mesh) is enough.
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_vs(
            "ns",
            "vs",
            "[b.example.com]",
            Some("[gone, mesh]"),
            "reviews",
            "",
        ),
    ];
    assert!(!codes(&set).contains(&"GAL0105"));
}

#[test]
fn gal0106_conflicting_virtual_service_hosts() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_vs("ns", "a", "[reviews]", None, "reviews", ""),
        mk_vs(
            "ns",
            "b",
            "[reviews.ns.svc.cluster.local]",
            Some("[mesh]"),
            "reviews",
            "",
        ),
    ];
    assert_eq!(
        found(&set),
        vec![
            (
                "GAL0106",
                "a".to_string(),
                Some("spec.hosts[0]".to_string())
            ),
            (
                "GAL0106",
                "b".to_string(),
                Some("spec.hosts[0]".to_string())
            ),
        ]
    );
    // Same host on different gateways: no conflict.
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_gw("ns", "gw", "[\"*\"]"),
        mk_vs("ns", "a", "[www.example.com]", None, "reviews", ""),
        mk_vs("ns", "b", "[www.example.com]", Some("[gw]"), "reviews", ""),
    ];
    assert!(!codes(&set).contains(&"GAL0106"));
}

#[test]
fn gal0107_multiple_sidecars_without_selector() {
    let sc = |name: &str, selector: &str| {
        mk(
            Kind::Sidecar,
            "ns",
            name,
            &format!("{selector}egress:\n- hosts: [\"./*\"]\n"),
        )
    };
    let set = vec![sc("a", ""), sc("b", "")];
    assert_eq!(
        found(&set),
        vec![
            ("GAL0107", "a".to_string(), None),
            ("GAL0107", "b".to_string(), None)
        ]
    );
    let set = vec![
        sc("a", ""),
        sc("b", "workloadSelector:\n  labels:\n    app: x\n"),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
}

#[test]
fn gal0108_rule_reference_not_found() {
    let handler = mk(
        Kind::Handler,
        "istio-system",
        "prom",
        "compiledAdapter: prometheus\n",
    );
    let instance = mk(
        Kind::Instance,
        "istio-system",
        "requestcount",
        "compiledTemplate: metric\n",
    );
    let rule = mk(
        Kind::Rule,
        "istio-system",
        "r",
        "actions:\n- handler: prom\n  instances: [requestcount, requestsize]\n- handler: gone.other\n  instances: [requestcount.istio-system]\n",
    );
    assert_eq!(
        found(&[handler.clone(), instance.clone(), rule]),
        vec![
            (
                "GAL0108",
                "r".to_string(),
                Some("spec.actions[0].instances[1]".to_string())
            ),
            (
                "GAL0108",
                "r".to_string(),
                Some("spec.actions[1].handler".to_string())
            ),
        ]
    );
    let rule = mk(
        Kind::Rule,
        "default",
        "r",
        "actions:\n- handler: prom.istio-system\n  instances: [requestcount.metric.istio-system]\n",
    );
    assert_eq!(codes(&[handler, instance, rule]), Vec::<&str>::new());
}

#[test]
fn gal0109_gateway_host_not_in_gateway() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_gw("ns", "gw", "[\"*.example.com\"]"),
        mk_vs("ns", "vs", "[www.example.org]", Some("[gw]"), "reviews", ""),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0109",
            "vs".to_string(),
            Some("spec.gateways[0]".to_string())
        )]
    );
    // Namespace-scoped gateway hosts only serve VirtualServices of that namespace.
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_gw(
            "istio-system",
            "gw",
            "[\"team-a/*.example.com\", \"./admin.example.com\"]",
        ),
        mk_vs(
            "team-b",
            "vs",
            "[www.example.com]",
            Some("[istio-system/gw]"),
            "reviews.ns.svc.cluster.local",
            "",
        ),
        mk_vs(
            "team-a",
            "ok",
            "[api.example.com]",
            Some("[istio-system/gw]"),
            "reviews.ns.svc.cluster.local",
            "",
        ),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0109",
            "vs".to_string(),
            Some("spec.gateways[0]".to_string())
        )]
    );
}

#[test]
fn gal0110_subset_selects_nothing() {
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", EP),
        mk_dr("ns", "dr", "reviews", &[("v1", "v1"), ("v9", "v9")]),
    ];
    assert_eq!(
        found(&set),
        vec![(
            "GAL0110",
            "dr".to_string(),
            Some("spec.subsets[1].labels".to_string())
        )]
    );
    assert_eq!(run(&set)[0].level, Level::Info);
    // Without listed endpoints nothing can be said.
    let set = vec![
        mk_se("ns", "se", "reviews.ns.svc.cluster.local", ""),
        mk_dr("ns", "dr", "reviews", &[("v9", "v9")]),
    ];
    assert_eq!(codes(&set), Vec::<&str>::new());
}

#[test]
fn output_is_sorted_and_deterministic() {
    let set = vec![
        mk_vs("ns", "b", "[x]", Some("[gone]"), "nowhere", "v1"),
        mk_vs("ns", "a", "[y]", Some("[gone]"), "nowhere", "v1"),
    ];
    let first = run(&set);
    let keys: Vec<_> = first.iter().map(|m| (m.resource.clone(), m.code)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let reversed: Vec<Resource> = set.into_iter().rev().collect();
    assert_eq!(run(&reversed), first);
}

#[test]
fn message_types_are_unique() {
    let mut codes: Vec<&str> = MESSAGE_TYPES.iter().map(|t| t.code).collect();
    codes.dedup();
    assert_eq!(codes.len(), 11);
}
