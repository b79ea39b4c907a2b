//! Loading identities: PEM parsing, consistency checks, redaction, SPIFFE IDs.

use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};
use rustls_pki_types::CertificateDer;

use crate::{
    CertIdentityError, TlsError, TlsIdentity, spiffe_id_of,
    test_util::{LeafOptions, TestCa, roots_pem, spiffe},
};

#[test]
fn debug_never_prints_the_key() {
    let ca = TestCa::new("root");
    let leaf = ca.issue(&spiffe("default", "productpage"));
    let identity = leaf.identity(&[&ca]);
    let debug = format!("{identity:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(
        debug.contains("spiffe://cluster.local/ns/default/sa/productpage"),
        "{debug}"
    );
    assert!(!debug.contains("PRIVATE"), "{debug}");
    // No line of the key's base64, nor its DER bytes in any form.
    for line in leaf.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!debug.contains(line), "key material in {debug}");
    }
    let der = identity.key().secret_der();
    assert!(!debug.contains(&format!("{:?}", &der[..16])), "{debug}");
}

#[test]
fn loads_chain_key_and_roots() {
    let ca = TestCa::new("root");
    let id = spiffe("default", "productpage");
    let identity = ca.issue(&id).identity(&[&ca]);
    assert_eq!(identity.spiffe_id(), Some(&id));
    assert_eq!(identity.chain().len(), 1);
    assert_eq!(identity.roots().len(), 1);
    assert!(identity.not_after().is_some());
}

#[test]
fn intermediates_are_part_of_the_chain() {
    let root = TestCa::new("root");
    let issuing = root.intermediate("issuing");
    let leaf = issuing.issue(&spiffe("default", "reviews"));
    let identity = leaf.identity(&[&root]);
    assert_eq!(identity.chain().len(), 2);
}

#[test]
fn several_roots_are_all_kept() {
    let old = TestCa::new("old root");
    let new = TestCa::new("new root");
    let leaf = new.issue(&spiffe("default", "reviews"));
    let identity = leaf.identity(&[&old, &new]);
    assert_eq!(identity.roots().len(), 2);
    assert_eq!(identity.root_store().unwrap().len(), 2);
}

#[test]
fn errors_name_the_file_and_never_quote_the_key() {
    let ca = TestCa::new("root");
    let leaf = ca.issue(&spiffe("default", "productpage"));
    let roots = roots_pem(&[&ca]);

    let e = TlsIdentity::from_pem(b"", leaf.key_pem.as_bytes(), roots.as_bytes()).unwrap_err();
    assert!(e.to_string().starts_with("cert-chain.pem:"), "{e}");

    let e =
        TlsIdentity::from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes(), b"").unwrap_err();
    assert!(e.to_string().starts_with("root-cert.pem:"), "{e}");

    // A key cut short mid-write.
    let half = &leaf.key_pem[..leaf.key_pem.len() / 2];
    let e = TlsIdentity::from_pem(leaf.chain_pem.as_bytes(), half.as_bytes(), roots.as_bytes())
        .unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("key.pem:"), "{text}");
    for line in leaf.key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "key material in {text}");
    }
}

#[test]
fn a_key_of_another_certificate_is_a_mismatch() {
    let ca = TestCa::new("root");
    let a = ca.issue(&spiffe("default", "a"));
    let b = ca.issue(&spiffe("default", "b"));
    let e = TlsIdentity::from_pem(
        a.chain_pem.as_bytes(),
        b.key_pem.as_bytes(),
        roots_pem(&[&ca]).as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
}

#[test]
fn a_chain_from_an_untrusted_root_or_expired_is_refused() {
    let ca = TestCa::new("root");
    let other = TestCa::new("other");
    let leaf = other.issue(&spiffe("default", "a"));
    let e = TlsIdentity::from_pem(
        leaf.chain_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        roots_pem(&[&ca]).as_bytes(),
    )
    .unwrap_err();
    assert!(matches!(e, TlsError::Untrusted { .. }), "{e}");

    let now = time::OffsetDateTime::now_utc();
    let expired = ca.issue_with(
        &spiffe("default", "a"),
        LeafOptions {
            not_before: now - time::Duration::days(2),
            not_after: now - time::Duration::hours(1),
            dns_names: vec![],
        },
    );
    let e = TlsIdentity::from_pem(
        expired.chain_pem.as_bytes(),
        expired.key_pem.as_bytes(),
        roots_pem(&[&ca]).as_bytes(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

fn cert_with_sans(sans: Vec<SanType>) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.self_signed(&key).unwrap().der().clone()
}

fn uri(text: &str) -> SanType {
    SanType::URI(Ia5String::try_from(text).unwrap())
}

#[test]
fn the_spiffe_id_is_the_one_uri_san() {
    let id = "spiffe://cluster.local/ns/default/sa/productpage";
    let with_dns = cert_with_sans(vec![
        SanType::DnsName(Ia5String::try_from("localhost").unwrap()),
        uri(id),
    ]);
    assert_eq!(spiffe_id_of(&with_dns).unwrap().to_string(), id);

    let two = cert_with_sans(vec![uri(id), uri("spiffe://cluster.local/ns/default/sa/x")]);
    assert_eq!(spiffe_id_of(&two), Err(CertIdentityError::ManyUris(2)));

    let none = cert_with_sans(vec![SanType::DnsName(
        Ia5String::try_from("localhost").unwrap(),
    )]);
    assert_eq!(spiffe_id_of(&none), Err(CertIdentityError::NoUri));

    let bad = cert_with_sans(vec![uri("spiffe://cluster.local/default/productpage")]);
    assert!(matches!(
        spiffe_id_of(&bad),
        Err(CertIdentityError::Invalid { .. })
    ));
}
