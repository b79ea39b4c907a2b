//! CSR parsing and validation, then issuing: no input panics, and whenever a CSR
//! is accepted the certificate issued from it names the caller and nothing else.
//!
//! Input: one mode byte (0: the rest is DER; 1: the rest is PEM text; 2: the rest
//! is DER wrapped into PEM here), then the request bytes.

#![no_main]

use std::sync::OnceLock;

use rustls_pki_types::pem::PemObject;
use citadel::ca::{Authority, CaPolicy, CaSource, CsrValidator};
use libfuzzer_sys::fuzz_target;
use mesh_tls::SpiffeId;
use x509_parser::{
    extensions::GeneralName,
    prelude::{FromDer, X509Certificate},
};

struct Fixture {
    _dir: tempfile::TempDir,
    authority: Authority,
    caller: SpiffeId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let authority = Authority::open(
            CaSource::SelfSigned(dir.path().join("ca")),
            CaPolicy::default(),
            time::OffsetDateTime::now_utc(),
        )
        .expect("CA");
        Fixture {
            _dir: dir,
            authority,
            caller: "spiffe://cluster.local/ns/default/sa/fuzz"
                .parse()
                .expect("identity"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let pem = match mode % 3 {
        0 => {
            let _ = CsrValidator.validate_der(rest, &f.caller);
            citadel::ca::material::pem_encode("CERTIFICATE REQUEST", rest)
        }
        1 => match std::str::from_utf8(rest) {
            Ok(s) => s.to_string(),
            Err(_) => return,
        },
        _ => citadel::ca::material::pem_encode("CERTIFICATE REQUEST", rest),
    };
    let accepted = CsrValidator.validate_pem(&pem, &f.caller).is_ok();
    match f
        .authority
        .issue(&f.caller, &pem, 3600, time::OffsetDateTime::now_utc())
    {
        Ok(issued) => {
            assert!(accepted, "issued for a CSR the validator refuses");
            let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.chain_pem[0].as_bytes())
                .expect("issued PEM");
            let (_, leaf) = X509Certificate::from_der(der.as_ref()).expect("issued DER");
            let san = leaf
                .subject_alternative_name()
                .expect("one SAN extension")
                .expect("a SAN");
            let names: Vec<_> = san.value.general_names.iter().collect();
            assert_eq!(names.len(), 1, "exactly one SAN");
            assert!(
                matches!(names[0], GeneralName::URI(u) if *u == f.caller.uri()),
                "the SAN is the caller"
            );
            assert!(!leaf.is_ca());
        }
        Err(e) => assert!(!accepted, "an accepted CSR was not issued: {e}"),
    }
});
