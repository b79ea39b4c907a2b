#![allow(clippy::unwrap_used)]

use std::path::Path;

use crate::ca::{CaPolicy, CaSource};

use super::*;

fn authority(dir: &Path) -> Authority {
    Authority::open(
        CaSource::SelfSigned(dir.join("ca")),
        CaPolicy::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap()
}

fn identity() -> SpiffeId {
    "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap()
}

fn service_account() -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some("cart".into()),
            namespace: Some("shop".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

fn issued_secret(a: &Authority, ttl: Duration, now: OffsetDateTime) -> (Secret, SecretMaterial) {
    let (_, material) = issue(a, &identity(), &[], ttl, now).unwrap();
    (build_secret(&service_account(), &material, None), material)
}

fn set(secret: &mut Secret, key: &str, value: &str) {
    secret
        .data
        .as_mut()
        .unwrap()
        .insert(key.into(), ByteString(value.as_bytes().to_vec()));
}

#[test]
fn names_map_service_accounts_to_secrets_and_back() {
    assert_eq!(secret_name("cart"), "istio.cart");
    assert_eq!(service_account_of("istio.cart"), Some("cart"));
    assert_eq!(service_account_of("istio."), None);
    assert_eq!(service_account_of("cart"), None);
}

#[test]
fn a_built_secret_has_istios_shape_and_is_owned_by_its_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let (secret, material) =
        issued_secret(&a, Duration::from_secs(3600), OffsetDateTime::now_utc());
    assert_eq!(secret.metadata.name.as_deref(), Some("istio.cart"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE));
    let data = secret.data.as_ref().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, [CERT_CHAIN_KEY, KEY_KEY, ROOT_CERT_KEY]);
    assert_eq!(data[ROOT_CERT_KEY].0, a.roots_pem().unwrap().into_bytes());
    // Self-signed: the chain is the leaf alone, the root is not repeated.
    let chain = String::from_utf8(data[CERT_CHAIN_KEY].0.clone()).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 1);
    assert_eq!(data[KEY_KEY].0, material.key_pem().as_bytes());
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ServiceAccount", "cart", "uid-1")
    );
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
        MANAGED_BY
    );
    // On the wire the data is base64, as Secrets carry it.
    let json = serde_json::to_value(&secret).unwrap();
    let b64 = json["data"][ROOT_CERT_KEY].as_str().unwrap();
    assert!(!b64.contains("BEGIN"));
}

#[test]
fn a_renewal_keeps_foreign_metadata_and_the_resource_version() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let (mut found, _) = issued_secret(&a, Duration::from_secs(3600), OffsetDateTime::now_utc());
    found.metadata.resource_version = Some("42".into());
    found
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("team".into(), "shop".into());
    let (_, fresh) = issue(
        &a,
        &identity(),
        &[],
        Duration::from_secs(3600),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let renewed = build_secret(&service_account(), &fresh, Some(&found));
    assert_eq!(renewed.metadata.resource_version.as_deref(), Some("42"));
    assert_eq!(renewed.metadata.labels.as_ref().unwrap()["team"], "shop");
    assert_eq!(renewed.metadata.owner_references.as_ref().unwrap().len(), 1);
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let (_, material) = issue(
        &a,
        &identity(),
        &[],
        Duration::from_secs(3600),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let text = format!("{material:?}");
    assert!(text.contains("redacted"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[test]
fn a_fresh_secret_is_current_until_between_half_and_four_fifths_of_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let now = OffsetDateTime::now_utc();
    let (secret, material) = issued_secret(&a, Duration::from_secs(1000), now);
    let roots = a.roots_pem().unwrap();
    let Verdict::Current { renew_at, serial } =
        assess(&secret, &identity(), &[], &roots, SystemTime::now())
    else {
        panic!("a fresh secret is current");
    };
    assert_eq!(serial, material.serial);
    // citadel backdates notBefore by a minute: the lifetime is 1060 s.
    let nb = SystemTime::from(now) - Duration::from_secs(60);
    let since = renew_at.duration_since(nb).unwrap().as_secs_f64();
    assert!(
        (0.5 * 1060.0 - 1.0..=0.8 * 1060.0 + 1.0).contains(&since),
        "{since}"
    );
    assert_eq!(
        assess(&secret, &identity(), &[], &roots, renew_at),
        Verdict::Renew(RenewReason::Due)
    );
}

#[test]
fn the_renewal_point_is_stable_per_certificate_and_spread_between_them() {
    assert_eq!(renewal_fraction("ab12"), renewal_fraction("ab12"));
    let fractions: Vec<f64> = (0..1000)
        .map(|i| renewal_fraction(&format!("{i:x}")))
        .collect();
    assert!(
        fractions
            .iter()
            .all(|f| (RENEW_FROM..=RENEW_UNTIL).contains(f))
    );
    assert!(fractions.iter().any(|f| *f < 0.53));
    assert!(fractions.iter().any(|f| *f > 0.77));
}

#[test]
fn a_changed_root_a_wrong_identity_or_broken_data_means_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let (secret, _) = issued_secret(&a, Duration::from_secs(3600), OffsetDateTime::now_utc());
    let roots = a.roots_pem().unwrap();
    let now = SystemTime::now();
    let other_root = {
        let dir2 = tempfile::tempdir().unwrap();
        authority(dir2.path()).roots_pem().unwrap()
    };
    // The CA now trusts another bundle (a rotation): renew.
    let rotated = format!("{other_root}{roots}");
    assert_eq!(
        assess(&secret, &identity(), &[], &rotated, now),
        Verdict::Renew(RenewReason::RootChanged)
    );
    let other: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    assert!(matches!(
        assess(&secret, &other, &[], &roots, now),
        Verdict::Renew(RenewReason::WrongIdentity(_))
    ));
    let mut broken = secret.clone();
    set(&mut broken, KEY_KEY, "garbage");
    assert!(matches!(
        assess(&broken, &identity(), &[], &roots, now),
        Verdict::Renew(RenewReason::Unusable(_))
    ));
    let mut empty = secret.clone();
    empty.data = None;
    assert!(matches!(
        assess(&empty, &identity(), &[], &roots, now),
        Verdict::Renew(RenewReason::Unusable(_))
    ));
    let mut opaque = secret;
    opaque.type_ = Some("Opaque".into());
    assert!(matches!(
        assess(&opaque, &identity(), &[], &roots, now),
        Verdict::Foreign(_)
    ));
}

#[test]
fn an_expired_certificate_is_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    // The fresh root is valid from five minutes ago: a certificate issued four
    // minutes ago for three minutes has expired.
    let past = OffsetDateTime::now_utc() - time::Duration::minutes(4);
    let (secret, _) = issued_secret(&a, Duration::from_secs(180), past);
    let roots = a.roots_pem().unwrap();
    assert!(matches!(
        assess(&secret, &identity(), &[], &roots, SystemTime::now()),
        Verdict::Renew(_)
    ));
}

#[test]
fn dns_names_are_issued_and_a_change_of_them_renews() {
    let dir = tempfile::tempdir().unwrap();
    let a = authority(dir.path());
    let roots = a.roots_pem().unwrap();
    let names = vec![
        "cart.shop.svc".to_string(),
        "cart.shop.svc.cluster.local".to_string(),
    ];
    let now = OffsetDateTime::now_utc();
    let (_, material) = issue(&a, &identity(), &names, Duration::from_secs(3600), now).unwrap();
    let secret = build_secret(&service_account(), &material, None);
    assert!(matches!(
        assess(&secret, &identity(), &names, &roots, SystemTime::now()),
        Verdict::Current { .. }
    ));
    // The SPIFFE identity stays the certificate's identity.
    let chain = material.chain_pem.as_bytes();
    let tls =
        TlsIdentity::from_pem(chain, material.key_pem().as_bytes(), roots.as_bytes()).unwrap();
    assert_eq!(tls.spiffe_id(), Some(&identity()));
    let fewer = &names[..1];
    assert_eq!(
        assess(&secret, &identity(), fewer, &roots, SystemTime::now()),
        Verdict::Renew(RenewReason::DnsNamesChanged(names.clone()))
    );
    let (plain, _) = issued_secret(&a, Duration::from_secs(3600), now);
    assert_eq!(
        assess(&plain, &identity(), &names, &roots, SystemTime::now()),
        Verdict::Renew(RenewReason::DnsNamesChanged(Vec::new()))
    );
}
