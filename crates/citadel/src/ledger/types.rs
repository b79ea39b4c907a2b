//! The ledger's records: issued certificates, revocations and their reasons.

use std::fmt;
use std::str::FromStr;

use super::LedgerError;

/// Longest serial accepted, in hex digits (RFC 5280: at most 20 octets).
const MAX_SERIAL_HEX: usize = 40;
/// Length of a SHA-256 fingerprint in hex digits.
const FINGERPRINT_HEX: usize = 64;

/// A certificate as citadel issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Serial number: lowercase hex, no colons.
    pub serial: String,
    /// The SPIFFE URI the certificate names.
    pub identity: String,
    /// Start of validity, unix seconds.
    pub not_before: i64,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// SHA-256 of the issuing certificate's DER, lowercase hex.
    pub issuer_fingerprint: String,
}

/// One certificate in the ledger with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// The certificate as recorded.
    pub certificate: IssuedCertificate,
    /// When it was recorded, unix seconds.
    pub issued_at: i64,
    /// Its revocation, if revoked.
    pub revoked: Option<Revocation>,
}

/// The revocation of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number of the revoked certificate.
    pub serial: String,
    /// When it was revoked, unix seconds.
    pub revoked_at: i64,
    /// Why it was revoked.
    pub reason: RevocationReason,
}

/// Why a certificate was revoked: the RFC 5280 `CRLReason`s that apply to a workload CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationReason {
    /// No reason given (code 0).
    Unspecified,
    /// The workload's private key leaked (code 1).
    KeyCompromise,
    /// The issuing CA's key leaked (code 2).
    CaCompromise,
    /// The workload's identity or attributes changed (code 3).
    AffiliationChanged,
    /// A newer certificate replaces it (code 4).
    Superseded,
    /// The workload is gone (code 5).
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 6] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];

    /// The RFC 5280 `CRLReason` code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
        }
    }

    /// The reason with this RFC 5280 code, if it is one of ours.
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        RevocationReason::ALL
            .into_iter()
            .find(|reason| reason.code() == code)
    }

    /// The kebab-case name, e.g. `key-compromise`.
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CaCompromise => "ca-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A revocation reason name that is not one of [`RevocationReason::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?}: expected one of unspecified, key-compromise, \
     ca-compromise, affiliation-changed, superseded, cessation-of-operation"
)]
pub struct ParseRevocationReasonError(pub String);

impl FromStr for RevocationReason {
    type Err = ParseRevocationReasonError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|reason| reason.name() == name)
            .ok_or_else(|| ParseRevocationReasonError(name.to_owned()))
    }
}

impl IssuedCertificate {
    /// Checks the fields' formats before the certificate is written.
    pub(super) fn validate(&self) -> Result<(), LedgerError> {
        let invalid = |reason: String| LedgerError::InvalidCertificate {
            serial: self.serial.clone(),
            reason,
        };
        if self.serial.is_empty()
            || self.serial.len() > MAX_SERIAL_HEX
            || !is_lower_hex(&self.serial)
        {
            return Err(invalid(format!(
                "serial must be 1 to {MAX_SERIAL_HEX} lowercase hex digits without colons"
            )));
        }
        match self.identity.strip_prefix("spiffe://") {
            Some(rest) if !rest.is_empty() => {}
            _ => {
                return Err(invalid(format!(
                    "identity {:?} is not a spiffe:// URI",
                    self.identity
                )));
            }
        }
        if self.not_before > self.not_after {
            return Err(invalid(format!(
                "not_before {} is after not_after {}",
                self.not_before, self.not_after
            )));
        }
        for (field, value) in [
            ("fingerprint", &self.fingerprint),
            ("issuer_fingerprint", &self.issuer_fingerprint),
        ] {
            if value.len() != FINGERPRINT_HEX || !is_lower_hex(value) {
                return Err(invalid(format!(
                    "{field} must be a SHA-256 digest: {FINGERPRINT_HEX} lowercase hex digits"
                )));
            }
        }
        Ok(())
    }
}

/// Accepts a serial as openssl prints it (`0A:1B:...`) as well as ours (`0a1b...`).
pub(super) fn normalize_serial(serial: &str) -> String {
    serial
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn is_lower_hex(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reasons_round_trip_through_names_and_codes() {
        for reason in RevocationReason::ALL {
            assert_eq!(reason.to_string().parse::<RevocationReason>(), Ok(reason));
            assert_eq!(RevocationReason::from_code(reason.code()), Some(reason));
        }
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::CessationOfOperation.code(), 5);
        assert_eq!(RevocationReason::from_code(6), None);
        let error = "keyCompromise".parse::<RevocationReason>().unwrap_err();
        assert!(error.to_string().contains("key-compromise"), "{error}");
    }

    #[test]
    fn serials_are_normalized_for_lookups() {
        assert_eq!(normalize_serial(" 0A:1b:FF "), "0a1bff");
        assert_eq!(normalize_serial("0a1bff"), "0a1bff");
    }
}
