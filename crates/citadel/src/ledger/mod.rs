//! The certificate ledger.
