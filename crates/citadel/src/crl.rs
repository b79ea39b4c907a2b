//! The certificate revocation list: every revoked, unexpired certificate of the
//! ledger, signed by the current issuer, served on the monitoring port at `/crl`
//! (DER) and `/crl.pem`.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::OffsetDateTime;

use crate::{
    ca::CaMaterial,
    ledger::{Revocation, RevocationReason},
};

/// How long a CRL is valid; it is rebuilt on every request.
pub const CRL_VALIDITY: time::Duration = time::Duration::hours(1);

/// Why no CRL could be made.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// A ledger serial is not hex.
    #[error("serial {0:?} in the ledger is not hex")]
    Serial(String),
    /// Signing failed.
    #[error("cannot sign the CRL: {0}")]
    Sign(String),
}

/// A signed CRL (DER and PEM).
pub struct SignedCrl {
    /// DER bytes.
    pub der: Vec<u8>,
    /// PEM text.
    pub pem: String,
}

/// Builds and signs the CRL for `revoked` with `material`'s issuer.
pub fn build(
    material: &CaMaterial,
    revoked: &[Revocation],
    now: OffsetDateTime,
) -> Result<SignedCrl, CrlError> {
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for r in revoked {
        let bytes = hex::decode(&r.serial).map_err(|_| CrlError::Serial(r.serial.clone()))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at).unwrap_or(now),
            reason_code: Some(reason_code(r.reason)),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(&material.issuer)
        .map_err(|e| CrlError::Sign(e.to_string()))?;
    let der = crl.der().to_vec();
    let pem = crate::ca::material::pem_encode("X509 CRL", &der);
    Ok(SignedCrl { der, pem })
}

fn reason_code(reason: RevocationReason) -> rcgen::RevocationReason {
    match reason {
        RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
        RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
        RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
        RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
    }
}
