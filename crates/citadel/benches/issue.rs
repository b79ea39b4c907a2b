//! The cost of issuing a certificate, beside the raw cost of the crypto it uses.
//!
//! `raw/p256_sign` is the ceiling: one ECDSA P-256 signature with ring, the
//! least any issued certificate costs. `raw/p256_verify` is the CSR's proof of
//! possession. `issue/p256` is everything `Authority::issue` does for a P-256
//! CSR: parse, verify, check, build, sign and PEM-encode the chain.

#![allow(clippy::unwrap_used)]

use citadel::ca::{Authority, CaPolicy, CaSource, CsrValidator};
use criterion::{Criterion, criterion_group, criterion_main};
use rcgen::{CertificateParams, KeyPair};
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    },
};

fn bench(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let tbs = vec![0x5a_u8; 400];
    let sig = key.sign(&rng, &tbs).unwrap();
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref().to_vec());

    let mut raw = c.benchmark_group("raw");
    raw.bench_function("p256_sign", |b| b.iter(|| key.sign(&rng, &tbs).unwrap()));
    raw.bench_function("p256_verify", |b| {
        b.iter(|| public.verify(&tbs, sig.as_ref()).unwrap())
    });
    raw.finish();

    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::open(
        CaSource::SelfSigned(dir.path().join("ca")),
        CaPolicy::default(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let caller = "spiffe://cluster.local/ns/default/sa/bench"
        .parse()
        .unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
        .unwrap();
    let mut issue = c.benchmark_group("issue");
    issue.bench_function("csr_validate_p256", |b| {
        b.iter(|| CsrValidator.validate_pem(&csr, &caller).unwrap())
    });
    issue.bench_function("p256", |b| {
        b.iter(|| {
            authority
                .issue(&caller, &csr, 0, time::OffsetDateTime::now_utc())
                .unwrap()
        })
    });
    issue.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
