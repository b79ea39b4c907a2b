//! The certificate agent.
