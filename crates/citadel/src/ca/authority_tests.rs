#![allow(clippy::unwrap_used)]

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use x509_parser::{
    extensions::GeneralName,
    prelude::{FromDer, X509Certificate},
};

use super::*;
use crate::ca::material::{CertInfo, parse_certs};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn caller() -> SpiffeId {
    "spiffe://cluster.local/ns/default/sa/productpage"
        .parse()
        .unwrap()
}

fn csr() -> String {
    let key = KeyPair::generate().unwrap();
    CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn self_signed(dir: &Path) -> Authority {
    Authority::open(
        CaSource::SelfSigned(dir.join("ca")),
        CaPolicy::default(),
        now(),
    )
    .unwrap()
}

/// The leaf verifies up the returned chain, ending at a root of the bundle.
fn assert_chain_verifies(issued: &IssuedCert, roots_pem: &str) {
    let chain: Vec<CertInfo> = issued
        .chain_pem
        .iter()
        .map(|p| parse_certs(p, "chain").unwrap().remove(0))
        .collect();
    for pair in chain.windows(2) {
        crate::ca::material::verify_signed_by(&pair[0], &pair[1]).unwrap();
    }
    let roots = parse_certs(roots_pem, "roots").unwrap();
    let top = chain.last().unwrap();
    assert!(roots.iter().any(|r| r.fingerprint == top.fingerprint));
}

fn leaf_sans(pem: &str) -> Vec<String> {
    let der = parse_certs(pem, "leaf").unwrap().remove(0).der;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn first_start_creates_a_ten_year_root_with_a_private_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let mode = std::fs::metadata(tmp.path().join("ca/ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let m = ca.material().unwrap();
    let years = (m.signing.not_after - m.signing.not_before).whole_days() / 365;
    assert_eq!(years, 10);
    // A second start keeps the same root.
    let again = self_signed(tmp.path());
    assert_eq!(
        again.material().unwrap().signing.fingerprint,
        m.signing.fingerprint
    );
}

#[test]
fn issues_a_leaf_naming_only_the_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let t = now();
    let issued = ca.issue(&caller(), &csr(), 0, t).unwrap();
    assert_eq!(issued.chain_pem.len(), 2);
    assert_eq!(
        leaf_sans(&issued.chain_pem[0]),
        vec![format!("URI:{}", caller())]
    );
    assert_eq!((issued.not_after - t).whole_hours(), 24);
    assert_chain_verifies(&issued, &ca.roots_pem().unwrap());
    let der = parse_certs(&issued.chain_pem[0], "leaf")
        .unwrap()
        .remove(0)
        .der;
    let (_, leaf) = X509Certificate::from_der(der.as_ref()).unwrap();
    assert!(!leaf.is_ca());
    assert_eq!(hex::encode(leaf.raw_serial()), issued.serial);
}

#[test]
fn lifetimes_follow_the_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let t = now();
    let neg = ca.issue(&caller(), &csr(), -5, t).unwrap();
    assert_eq!((neg.not_after - t).whole_hours(), 24);
    let hour = ca.issue(&caller(), &csr(), 3600, t).unwrap();
    assert_eq!((hour.not_after - t).whole_seconds(), 3600);
    let too_long = 91 * 24 * 3600;
    let err = ca.issue(&caller(), &csr(), too_long, t).unwrap_err();
    assert!(matches!(err, IssueError::TtlTooLong { .. }), "{err}");
    assert_eq!(err.reason(), "ttl_too_long");
}

#[test]
fn no_leaf_outlives_its_issuer_and_an_expired_issuer_issues_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let root_end = ca.material().unwrap().signing.not_after;
    let near_end = root_end - time::Duration::hours(2);
    let issued = ca.issue(&caller(), &csr(), 86_400, near_end).unwrap();
    assert!(issued.not_after <= root_end);
    let err = ca
        .issue(&caller(), &csr(), 0, root_end + time::Duration::hours(1))
        .unwrap_err();
    assert!(matches!(err, IssueError::IssuerUnavailable(_)), "{err}");
}

#[test]
fn refuses_identities_of_another_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let foreign: SpiffeId = "spiffe://other.domain/ns/default/sa/x".parse().unwrap();
    let err = ca.issue(&foreign, &csr(), 0, now()).unwrap_err();
    assert!(matches!(err, IssueError::ForeignIdentity(_)));
}

/// Writes an Istio-style cacerts directory: root -> intermediate (the signer).
fn plugged_cacerts(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::CommonName, "Plugged Root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name = DistinguishedName::new();
    int.distinguished_name
        .push(DnType::CommonName, "Cluster Intermediate");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let int_cert = int.signed_by(&int_key, &root_issuer).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), int_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        format!("{}{}", int_cert.pem(), root_cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    (int_cert.pem(), root_cert.pem())
}

#[test]
fn a_plugged_ca_with_an_intermediate_issues_the_full_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    let (int_pem, root_pem) = plugged_cacerts(&dir);
    let ca = Authority::open(CaSource::Plugged(dir), CaPolicy::default(), now()).unwrap();
    let issued = ca.issue(&caller(), &csr(), 0, now()).unwrap();
    assert_eq!(issued.chain_pem.len(), 3);
    assert_eq!(issued.chain_pem[1], int_pem);
    assert_eq!(issued.chain_pem[2], root_pem);
    assert_chain_verifies(&issued, &root_pem);
}

#[test]
fn a_plugged_ca_is_checked_and_reloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cacerts");
    plugged_cacerts(&dir);
    // A key that does not match the certificate is refused at start.
    let good_key = std::fs::read_to_string(dir.join("ca-key.pem")).unwrap();
    std::fs::write(
        dir.join("ca-key.pem"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let err =
        Authority::open(CaSource::Plugged(dir.clone()), CaPolicy::default(), now()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    std::fs::write(dir.join("ca-key.pem"), &good_key).unwrap();
    let ca = Authority::open(CaSource::Plugged(dir.clone()), CaPolicy::default(), now()).unwrap();
    let before = ca.material().unwrap().signing.fingerprint.clone();

    // Broken files: issuing stops with IssuerUnavailable, nothing panics.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("ca-cert.pem"), "garbage").unwrap();
    assert!(ca.refresh(now()));
    let err = ca.issue(&caller(), &csr(), 0, now()).unwrap_err();
    assert!(matches!(err, IssueError::IssuerUnavailable(_)), "{err}");

    // A rotated issuer is picked up without restart.
    std::thread::sleep(Duration::from_millis(20));
    plugged_cacerts(&dir);
    assert!(ca.refresh(now()));
    let after = ca.material().unwrap().signing.fingerprint.clone();
    assert_ne!(before, after);
    let issued = ca.issue(&caller(), &csr(), 0, now()).unwrap();
    assert_eq!(issued.issuer_fingerprint, after);
    assert!(!ca.refresh(now()), "unchanged files are not reloaded");
}

#[test]
fn a_self_signed_root_is_renewed_with_the_same_key_and_both_stay_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let t0 = now();
    let old = ca.material().unwrap();
    let before = ca.issue(&caller(), &csr(), 0, t0).unwrap();

    let late = t0 + time::Duration::days(365 * 9);
    assert!(ca.refresh(late));
    let new = ca.material().unwrap();
    assert_ne!(new.signing.fingerprint, old.signing.fingerprint);
    assert_eq!(new.roots.len(), 2, "old and new roots are both trusted");
    assert!(new.signing.not_after > old.signing.not_after);

    // Certificates from before and after verify under either root.
    let after = ca.issue(&caller(), &csr(), 0, late).unwrap();
    let leaf_before = parse_certs(&before.chain_pem[0], "l").unwrap().remove(0);
    let leaf_after = parse_certs(&after.chain_pem[0], "l").unwrap().remove(0);
    for root in &new.roots {
        crate::ca::material::verify_signed_by(&leaf_before, root).unwrap();
        crate::ca::material::verify_signed_by(&leaf_after, root).unwrap();
    }
}

#[test]
fn debug_output_never_shows_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = self_signed(tmp.path());
    let key = std::fs::read_to_string(tmp.path().join("ca/ca-key.pem")).unwrap();
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let shown = format!("{ca:?} {:?}", ca.material().unwrap());
    assert!(!shown.contains(&body[..40]));
    assert!(!shown.contains("PRIVATE KEY"));
}
