//! AuthorizationPolicy to RBAC, and properties of RBAC and mutual TLS resolution.

use mesh_api::envoy::envoy::{
    config::{
        listener::v3::{Filter, Listener, filter},
        rbac::v3::{
            Permission, Policy, Principal, Rbac, permission::Rule as PermRule,
            principal::Identifier, rbac::Action as RbacAction,
        },
        route::v3::header_matcher::HeaderMatchSpecifier,
    },
    extensions::filters::{
        http::rbac::v3::Rbac as HttpRbac,
        network::{http_connection_manager::v3::http_filter, rbac::v3::Rbac as NetworkRbac},
    },
    r#type::matcher::v3::{path_matcher, string_matcher::MatchPattern},
};
use mesh_model::security::{
    Action, AuthorizationPolicy, Condition, MtlsMode, MutualTls, Operation, PeerAuthentication,
    Rule, RuleFrom, RuleTo, Source,
};
use mesh_model::selector::WorkloadSelector;
use proptest::prelude::*;
use prost::{Message, Name};

use super::{
    authz::{Layer, authz_filters, rbac_rules},
    inbound::VIRTUAL_INBOUND,
    lds_tests::{decode, hcm_of, mk_ctx, mk_full, mk_labels, mk_proxy, mk_resources, mk_yaml},
    mtls::{Mode, resolve},
    *,
};
use crate::proxy::{Proxy, ProxyKind};

const SERVICES: &str = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: app\n  namespace: shop\nspec:\n  hosts: [app.shop.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  workloadSelector:\n    labels: {app: app}\n  ports:\n  - number: 8080\n    name: http\n    protocol: HTTP\n  - number: 5432\n    name: tcp\n    protocol: TCP\n---\n";

fn app() -> Proxy {
    mk_proxy(ProxyKind::Sidecar, "shop", &[("app", "app")])
}

fn policy(name: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n{body}---\n"
    )
}

fn mk_named(ns: &str, name: &str, spec: AuthorizationPolicy) -> NamedSpec<AuthorizationPolicy> {
    NamedSpec {
        namespace: ns.into(),
        name: name.into(),
        spec,
    }
}

fn http_rbac(l: &Listener, port: u32) -> Vec<Rbac> {
    let chain = l
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.as_ref())
                .is_some_and(|p| p.value == port)
        })
        .expect("chain");
    hcm_of(chain)
        .http_filters
        .iter()
        .filter(|f| f.name == "envoy.filters.http.rbac")
        .map(|f| {
            let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("untyped")
            };
            assert_eq!(any.type_url, HttpRbac::type_url());
            HttpRbac::decode(any.value.as_slice())
                .expect("decodes as Envoy's RBAC")
                .rules
                .expect("rules")
        })
        .collect()
}

fn network_rbac(filters: &[Filter]) -> Vec<Rbac> {
    filters
        .iter()
        .filter(|f| f.name == "envoy.filters.network.rbac")
        .map(|f| {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                panic!("untyped")
            };
            assert_eq!(any.type_url, NetworkRbac::type_url());
            let r = NetworkRbac::decode(any.value.as_slice()).expect("decodes");
            assert!(!r.stat_prefix.is_empty());
            r.rules.expect("rules")
        })
        .collect()
}

fn only_policy(rbac: &Rbac) -> &Policy {
    assert_eq!(rbac.policies.len(), 1, "{rbac:?}");
    rbac.policies.values().next().expect("policy")
}

#[test]
fn deny_on_admin_path_gives_a_deny_rbac_filter_matching_it() {
    let text = SERVICES.to_string()
        + &policy(
            "no-admin",
            "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [/admin, \"/admin/*\"]\n",
        );
    let l: Listener = decode(
        &proxy_resources(&mk_ctx(&mk_yaml(&text)), &app()).listeners,
        VIRTUAL_INBOUND,
    );
    let rbac = http_rbac(&l, 8080);
    assert_eq!(rbac.len(), 1);
    assert_eq!(rbac[0].action, RbacAction::Deny as i32);
    let (name, p) = rbac[0].policies.iter().next().expect("policy");
    assert_eq!(name, "ns[shop]-policy[no-admin]-rule[0]");
    assert_eq!(
        p.principals,
        [Principal {
            identifier: Some(Identifier::Any(true))
        }]
    );
    let Some(PermRule::OrRules(set)) = &p.permissions[0].rule else {
        panic!("not an OR of paths: {:?}", p.permissions)
    };
    let paths: Vec<MatchPattern> = set
        .rules
        .iter()
        .map(|r| match &r.rule {
            Some(PermRule::UrlPath(pm)) => match &pm.rule {
                Some(path_matcher::Rule::Path(sm)) => sm.match_pattern.clone().expect("pattern"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        [
            MatchPattern::Exact("/admin".into()),
            MatchPattern::Prefix("/admin/".into())
        ]
    );
    // Paths are HTTP-only: on the TCP port DENY drops the field and denies more.
    let chain = l
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.as_ref())
                .is_some_and(|p| p.value == 5432)
        })
        .expect("tcp chain");
    let tcp = network_rbac(&chain.filters);
    assert_eq!(tcp[0].action, RbacAction::Deny as i32);
    assert_eq!(
        only_policy(&tcp[0]).permissions,
        [Permission {
            rule: Some(PermRule::Any(true))
        }]
    );
}

#[test]
fn allow_semantics_nothing_everything_and_http_only_fields_on_tcp() {
    let nothing = mk_named("shop", "nothing", AuthorizationPolicy::default());
    let rbac = rbac_rules(&[&nothing], Action::Allow, Layer::Http).expect("allow filter");
    assert_eq!(rbac.action, RbacAction::Allow as i32);
    assert!(
        rbac.policies.is_empty(),
        "an ALLOW without rules denies all"
    );
    assert_eq!(rbac_rules(&[&nothing], Action::Deny, Layer::Http), None);

    let everything = mk_named(
        "shop",
        "all",
        AuthorizationPolicy {
            rules: vec![Rule::default()],
            ..Default::default()
        },
    );
    let rbac = rbac_rules(&[&everything], Action::Allow, Layer::Tcp).expect("allow");
    let p = only_policy(&rbac);
    assert_eq!(
        p.permissions,
        [Permission {
            rule: Some(PermRule::Any(true))
        }]
    );

    let get_only = mk_named(
        "shop",
        "get",
        AuthorizationPolicy {
            rules: vec![Rule {
                to: vec![RuleTo {
                    operation: Some(Operation {
                        methods: vec!["GET".into()],
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let http = rbac_rules(&[&get_only], Action::Allow, Layer::Http).expect("allow");
    let Some(PermRule::Header(h)) = &only_policy(&http).permissions[0].rule else {
        panic!("not a header match")
    };
    assert_eq!(h.name, ":method");
    assert!(matches!(
        &h.header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(sm)) if sm.match_pattern == Some(MatchPattern::Exact("GET".into()))
    ));
    // On TCP the rule can never match: ALLOW keeps its filter, without the rule.
    let tcp = rbac_rules(&[&get_only], Action::Allow, Layer::Tcp).expect("allow");
    assert!(tcp.policies.is_empty());
}

#[test]
fn sources_and_conditions_translate() {
    let text = SERVICES.to_string()
        + &policy(
            "callers",
            "  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/web/sa/frontend, \"*/sa/batch\"]\n    - source:\n        namespaces: [ops]\n        notIpBlocks: [10.9.0.0/16]\n    when:\n    - key: request.headers[X-Tenant]\n      values: [gold]\n    - key: source.ip\n      notValues: [10.0.0.1]\n",
        );
    let ctx = mk_ctx(&mk_yaml(&text));
    let filters = authz_filters(&ctx, &app());
    assert_eq!(filters.http.len(), 1);
    let rbac = rbac_rules(
        &super::authz::applicable_policies(&ctx, &app()),
        Action::Allow,
        Layer::Http,
    )
    .expect("allow");
    let p = only_policy(&rbac);
    // Permission: the header condition.
    let Some(PermRule::Header(h)) = &p.permissions[0].rule else {
        panic!("{:?}", p.permissions)
    };
    assert_eq!(h.name, "x-tenant");
    // Principals: (from-1 OR from-2) AND NOT source.ip.
    let Some(Identifier::AndIds(and)) = &p.principals[0].identifier else {
        panic!("{:?}", p.principals)
    };
    let Some(Identifier::OrIds(sources)) = &and.ids[0].identifier else {
        panic!("{:?}", and.ids[0])
    };
    let Some(Identifier::OrIds(principals)) = &sources.ids[0].identifier else {
        panic!("{:?}", sources.ids[0])
    };
    let names: Vec<MatchPattern> = principals
        .ids
        .iter()
        .map(|i| match &i.identifier {
            Some(Identifier::Authenticated(a)) => a
                .principal_name
                .clone()
                .and_then(|m| m.match_pattern)
                .expect("pattern"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            MatchPattern::Exact("spiffe://cluster.local/ns/web/sa/frontend".into()),
            MatchPattern::Suffix("/sa/batch".into())
        ]
    );
    let Some(Identifier::AndIds(ops)) = &sources.ids[1].identifier else {
        panic!("{:?}", sources.ids[1])
    };
    match &ops.ids[0].identifier {
        Some(Identifier::Authenticated(a)) => {
            let Some(MatchPattern::SafeRegex(re)) =
                a.principal_name.clone().and_then(|m| m.match_pattern)
            else {
                panic!("not a regex")
            };
            assert_eq!(re.regex, "spiffe://[^/]+/ns/ops/.*");
        }
        other => panic!("{other:?}"),
    }
    let Some(Identifier::NotId(not)) = &ops.ids[1].identifier else {
        panic!("{:?}", ops.ids[1])
    };
    let Some(Identifier::DirectRemoteIp(cidr)) = &not.identifier else {
        panic!("{not:?}")
    };
    assert_eq!(
        (
            cidr.address_prefix.as_str(),
            cidr.prefix_len.as_ref().map(|l| l.value)
        ),
        ("10.9.0.0", Some(16))
    );
    let Some(Identifier::NotId(ip)) = &and.ids[1].identifier else {
        panic!("{:?}", and.ids[1])
    };
    assert!(matches!(ip.identifier, Some(Identifier::DirectRemoteIp(_))));
    // The header condition cannot be checked on TCP: the ALLOW rule is dropped there.
    assert_eq!(filters.network.len(), 1);
    assert!(network_rbac(&filters.network)[0].policies.is_empty());
}

#[test]
fn filter_order_selection_custom_and_root_namespace() {
    let text = SERVICES.to_string()
        + &policy("allow", "  rules:\n  - {}\n")
        + &policy(
            "deny",
            "  action: DENY\n  rules:\n  - to:\n    - operation: {ports: [\"5432\"]}\n",
        )
        + &policy("audit", "  action: AUDIT\n  rules:\n  - {}\n")
        + &policy(
            "custom",
            "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - {}\n",
        )
        + &policy(
            "other-app",
            "  selector:\n    matchLabels: {app: other}\n  action: DENY\n  rules:\n  - {}\n",
        )
        + "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: mesh-deny\n  namespace: istio-system\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source: {ipBlocks: [192.0.2.0/24]}\n";
    let ctx = mk_ctx(&mk_yaml(&text));
    let filters = authz_filters(&ctx, &app());
    let actions: Vec<i32> = network_rbac(&filters.network)
        .iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            RbacAction::Log as i32,
            RbacAction::Deny as i32,
            RbacAction::Allow as i32
        ]
    );
    let deny = &network_rbac(&filters.network)[1];
    let mut names: Vec<&str> = deny.policies.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ns[istio-system]-policy[mesh-deny]-rule[0]",
            "ns[shop]-policy[deny]-rule[0]"
        ]
    );
    assert_eq!(filters.http.len(), 3);
}

#[test]
fn rbac_bytes_do_not_depend_on_hash_order() {
    let mut text = SERVICES.to_string();
    for i in 0..20 {
        text += &policy(
            &format!("p{i}"),
            &format!("  rules:\n  - to:\n    - operation: {{paths: [/p{i}]}}\n"),
        );
    }
    let resources = mk_yaml(&text);
    let first = authz_filters(&mk_ctx(&resources), &app());
    for _ in 0..5 {
        assert_eq!(authz_filters(&mk_ctx(&resources), &app()), first);
    }
    assert_eq!(validate::check(&mk_full(&resources, &app())), Vec::new());
}

#[test]
fn bookinfo_ratings_allows_reviews_get() {
    let resources = mk_resources(&super::lds_tests::BOOKINFO);
    let ratings = mk_proxy(
        ProxyKind::Sidecar,
        "bookinfo",
        &[("app", "ratings"), ("version", "v1")],
    );
    let l: Listener = decode(
        &proxy_resources(&mk_ctx(&resources), &ratings).listeners,
        VIRTUAL_INBOUND,
    );
    let rbac = http_rbac(&l, 19082);
    assert_eq!(rbac.len(), 1);
    assert_eq!(rbac[0].action, RbacAction::Allow as i32);
    assert!(
        rbac[0]
            .policies
            .contains_key("ns[bookinfo]-policy[ratings-viewer]-rule[0]")
    );
}

fn arb_values() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            Just("*".to_string()),
            "[a-z]{1,6}".prop_map(|s| s),
            "[a-z]{1,4}".prop_map(|s| format!("{s}*")),
            "[a-z]{1,4}".prop_map(|s| format!("*{s}")),
            Just("/admin".to_string()),
            Just("10.0.0.0/8".to_string()),
            Just("not-an-ip/99".to_string()),
            Just("8080".to_string()),
            Just("99999".to_string()),
            Just("a.b(c)[d]".to_string()),
        ],
        0..3,
    )
}

fn arb_source() -> impl Strategy<Value = Source> {
    (
        arb_values(),
        arb_values(),
        arb_values(),
        arb_values(),
        arb_values(),
        arb_values(),
    )
        .prop_map(
            |(
                principals,
                not_principals,
                namespaces,
                ip_blocks,
                request_principals,
                service_accounts,
            )| Source {
                principals,
                not_principals,
                namespaces,
                ip_blocks,
                request_principals,
                service_accounts,
                ..Default::default()
            },
        )
}

fn arb_operation() -> impl Strategy<Value = Operation> {
    (
        arb_values(),
        arb_values(),
        arb_values(),
        arb_values(),
        arb_values(),
    )
        .prop_map(|(hosts, methods, paths, ports, not_paths)| Operation {
            hosts,
            methods,
            paths,
            ports,
            not_paths,
            ..Default::default()
        })
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    (
        prop_oneof![
            Just("request.headers[x-a]"),
            Just("source.ip"),
            Just("source.namespace"),
            Just("source.principal"),
            Just("destination.port"),
            Just("connection.sni"),
            Just("request.auth.claims[iss]"),
            Just("unknown"),
        ],
        arb_values(),
        arb_values(),
    )
        .prop_map(|(key, values, not_values)| Condition {
            key: key.to_string(),
            values,
            not_values,
        })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        proptest::collection::vec(proptest::option::of(arb_source()), 0..3),
        proptest::collection::vec(proptest::option::of(arb_operation()), 0..3),
        proptest::collection::vec(arb_condition(), 0..3),
    )
        .prop_map(|(from, to, when)| Rule {
            from: from.into_iter().map(|source| RuleFrom { source }).collect(),
            to: to
                .into_iter()
                .map(|operation| RuleTo { operation })
                .collect(),
            when,
        })
}

fn arb_policy() -> impl Strategy<Value = AuthorizationPolicy> {
    (
        prop_oneof![
            Just(None),
            Just(Some(Action::Allow)),
            Just(Some(Action::Deny)),
            Just(Some(Action::Audit)),
            Just(Some(Action::Custom)),
        ],
        proptest::option::of(prop_oneof![Just("app"), Just("other")]),
        proptest::collection::vec(arb_rule(), 0..3),
    )
        .prop_map(|(action, app, rules)| AuthorizationPolicy {
            action,
            selector: app.map(|a| WorkloadSelector {
                match_labels: mk_labels(&[("app", a)]),
            }),
            rules,
            ..Default::default()
        })
}

/// Sets in RBAC trees always hold two or more members and every policy has exactly
/// one permission and one principal.
fn well_formed_perm(p: &Permission) -> bool {
    match &p.rule {
        Some(PermRule::AndRules(s) | PermRule::OrRules(s)) => {
            s.rules.len() >= 2 && s.rules.iter().all(well_formed_perm)
        }
        Some(PermRule::NotRule(inner)) => well_formed_perm(inner),
        Some(_) => true,
        None => false,
    }
}

fn well_formed_id(p: &Principal) -> bool {
    match &p.identifier {
        Some(Identifier::AndIds(s) | Identifier::OrIds(s)) => {
            s.ids.len() >= 2 && s.ids.iter().all(well_formed_id)
        }
        Some(Identifier::NotId(inner)) => well_formed_id(inner),
        Some(_) => true,
        None => false,
    }
}

fn mk_pa(
    ns: &str,
    app: Option<&str>,
    mode: Option<MtlsMode>,
    ports: &[(u32, Option<MtlsMode>)],
) -> NamedSpec<PeerAuthentication> {
    NamedSpec {
        namespace: ns.into(),
        name: format!("{}-{}", app.unwrap_or("ns"), ports.len()),
        spec: PeerAuthentication {
            selector: app.map(|a| WorkloadSelector {
                match_labels: mk_labels(&[("app", a)]),
            }),
            mtls: mode.map(|m| MutualTls { mode: Some(m) }),
            port_level_mtls: ports
                .iter()
                .map(|(p, m)| (*p, MutualTls { mode: *m }))
                .collect(),
        },
    }
}

fn arb_mode() -> impl Strategy<Value = Option<MtlsMode>> {
    prop_oneof![
        Just(None),
        Just(Some(MtlsMode::Unset)),
        Just(Some(MtlsMode::Disable)),
        Just(Some(MtlsMode::Permissive)),
        Just(Some(MtlsMode::Strict)),
    ]
}

fn to_mode(m: MtlsMode) -> Option<Mode> {
    match m {
        MtlsMode::Unset => None,
        MtlsMode::Disable => Some(Mode::Disable),
        MtlsMode::Permissive => Some(Mode::Permissive),
        MtlsMode::Strict => Some(Mode::Strict),
    }
}

proptest! {
    #[test]
    fn random_policies_give_well_formed_valid_rbac(
        policies in proptest::collection::vec(arb_policy(), 0..4),
        ns_choice in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut ctx = mk_ctx(&mk_yaml(SERVICES));
        for (i, spec) in policies.into_iter().enumerate() {
            let ns = if ns_choice[i] { "shop" } else { ROOT_NAMESPACE };
            ctx.authorization_policies.push(mk_named(ns, &format!("p{i}"), spec));
        }
        ctx.authorization_policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let applicable = super::authz::applicable_policies(&ctx, &app());
        for action in [Action::Allow, Action::Deny, Action::Audit] {
            for layer in [Layer::Http, Layer::Tcp] {
                if let Some(rbac) = rbac_rules(&applicable, action, layer) {
                    for p in rbac.policies.values() {
                        prop_assert_eq!(p.permissions.len(), 1);
                        prop_assert_eq!(p.principals.len(), 1);
                        prop_assert!(well_formed_perm(&p.permissions[0]), "{:?}", p);
                        prop_assert!(well_formed_id(&p.principals[0]), "{:?}", p);
                    }
                }
            }
        }
        // A DENY on TCP never allows more than on HTTP: it has at least the rules.
        let deny_http = rbac_rules(&applicable, Action::Deny, Layer::Http).map(|r| r.policies.len());
        let deny_tcp = rbac_rules(&applicable, Action::Deny, Layer::Tcp).map(|r| r.policies.len());
        prop_assert_eq!(deny_http, deny_tcp);
        let listener = super::inbound::inbound_listener(&ctx, &app());
        let own = EnvoyResources {
            listeners: vec![(listener.name.clone(), pack(type_url::LISTENER, &listener))],
            clusters: super::inbound::inbound_clusters(&ctx, &app()),
            ..Default::default()
        };
        prop_assert_eq!(validate::check(&own), Vec::new());
        prop_assert_eq!(validate::check_references(&own)
            .into_iter()
            .filter(|v| !matches!(v, validate::Violation::MissingCluster { cluster, .. } if cluster == super::chains::INBOUND_PASSTHROUGH_CLUSTER))
            .count(), 0);
    }

    #[test]
    fn random_peer_authentications_follow_the_precedence(
        mesh in arb_mode(),
        ns in arb_mode(),
        workload in arb_mode(),
        port in arb_mode(),
        have in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let proxy = mk_proxy(ProxyKind::Sidecar, "ns", &[("app", "a")]);
        let mut list = Vec::new();
        if have[0] { list.push(mk_pa(ROOT_NAMESPACE, None, mesh, &[])); }
        if have[1] { list.push(mk_pa("ns", None, ns, &[])); }
        if have[2] { list.push(mk_pa("ns", Some("a"), workload, &[(80, port)])); }
        if have[3] { list.push(mk_pa("ns", Some("b"), Some(MtlsMode::Disable), &[])); }
        list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let got = resolve(&list, &proxy);
        // The most specific level that sets a mode decides.
        let levels = [
            (have[2], workload),
            (have[1], ns),
            (have[0], mesh),
        ];
        let expected = levels
            .iter()
            .filter(|(present, _)| *present)
            .find_map(|(_, m)| m.and_then(to_mode))
            .unwrap_or(Mode::Permissive);
        prop_assert_eq!(got.workload, expected);
        let expected_port = if have[2] { port.and_then(to_mode).unwrap_or(expected) } else { expected };
        prop_assert_eq!(got.for_port(80), expected_port);
        prop_assert_eq!(got.for_port(81), expected);
    }
}
