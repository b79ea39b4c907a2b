#![allow(clippy::unwrap_used)]

use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

use super::*;

fn caller() -> SpiffeId {
    "spiffe://cluster.local/ns/default/sa/productpage"
        .parse()
        .unwrap()
}

fn csr_with(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn accepts_p256_without_sans_or_with_own_identity() {
    let v = CsrValidator;
    let ok = v.validate_pem(&csr_with(vec![]), &caller()).unwrap();
    assert_eq!(ok.key, KeyKind::EcdsaP256);
    let own = SanType::URI(Ia5String::try_from(caller().uri()).unwrap());
    v.validate_pem(&csr_with(vec![own]), &caller()).unwrap();
}

#[test]
fn accepts_openssl_rsa_2048() {
    let ok = CsrValidator
        .validate_pem(&fixture("rsa2048.csr"), &caller())
        .unwrap();
    assert_eq!(ok.key, KeyKind::Rsa(2048));
}

#[test]
fn refuses_other_identities_and_name_kinds() {
    let cases = [
        SanType::URI(Ia5String::try_from("spiffe://cluster.local/ns/default/sa/admin").unwrap()),
        SanType::DnsName(Ia5String::try_from("productpage.default.svc").unwrap()),
        SanType::Rfc822Name(Ia5String::try_from("root@example.com").unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ];
    for san in cases {
        let own = SanType::URI(Ia5String::try_from(caller().uri()).unwrap());
        let err = CsrValidator
            .validate_pem(&csr_with(vec![own, san.clone()]), &caller())
            .unwrap_err();
        assert!(matches!(err, CsrError::ForbiddenSan(_)), "{san:?}: {err}");
        assert_eq!(err.reason(), "forbidden_san");
    }
}

#[test]
fn refuses_a_csr_for_another_caller() {
    let own = SanType::URI(Ia5String::try_from(caller().uri()).unwrap());
    let other: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .unwrap();
    let err = CsrValidator
        .validate_pem(&csr_with(vec![own]), &other)
        .unwrap_err();
    assert!(matches!(err, CsrError::ForbiddenSan(_)));
}

#[test]
fn refuses_a_tampered_signature() {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let mut der = csr.der().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    assert_eq!(
        CsrValidator.validate_der(&der, &caller()).unwrap_err(),
        CsrError::BadSignature
    );
}

#[test]
fn refuses_a_csr_signed_by_another_key() {
    // The subject key of one CSR with the signature of another.
    let a = CertificateParams::default()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap();
    let b = CertificateParams::default()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap();
    let (a, b) = (a.der().to_vec(), b.der().to_vec());
    // Both have the same layout; the signature is the trailing BIT STRING.
    let sig_len = 72.min(a.len());
    let mut mixed = a[..a.len() - sig_len].to_vec();
    mixed.extend_from_slice(&b[b.len() - sig_len..]);
    let err = CsrValidator.validate_der(&mixed, &caller()).unwrap_err();
    assert!(
        matches!(err, CsrError::BadSignature | CsrError::Malformed(_)),
        "{err}"
    );
}

#[test]
fn refuses_weak_and_unsupported_keys() {
    let err = CsrValidator
        .validate_pem(&fixture("rsa1024.csr"), &caller())
        .unwrap_err();
    assert!(
        matches!(err, CsrError::WeakKey(ref m) if m.contains("1024")),
        "{err}"
    );
    let err = CsrValidator
        .validate_pem(&fixture("p521.csr"), &caller())
        .unwrap_err();
    assert!(matches!(err, CsrError::WeakKey(_)), "{err}");
    let err = CsrValidator
        .validate_pem(&fixture("rsa2048-sha1.csr"), &caller())
        .unwrap_err();
    assert_eq!(err, CsrError::UnsupportedSignature);
}

#[test]
fn refuses_garbage_without_panicking() {
    for input in [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ] {
        let err = CsrValidator.validate_pem(input, &caller()).unwrap_err();
        assert_eq!(err.reason(), "malformed_csr", "{input:?}: {err}");
    }
    let big = "A".repeat(MAX_CSR_BYTES + 1);
    assert_eq!(
        CsrValidator.validate_pem(&big, &caller()).unwrap_err(),
        CsrError::TooLarge
    );
    assert!(
        CsrValidator
            .validate_der(&[0x30, 0x82, 0xff], &caller())
            .is_err()
    );
}

#[test]
fn rsa_bits_counts_significant_bits() {
    assert_eq!(rsa_bits(&[0x00, 0x80, 0x00]), 16);
    assert_eq!(rsa_bits(&[0x01, 0x00]), 9);
    assert_eq!(rsa_bits(&[0, 0]), 0);
}
