//! Kubernetes admission webhooks: the `AdmissionReview` exchange and its HTTPS
//! serving, shared by Dromon's webhooks (the sidecar injector's `/inject`).
//!
//! - [`review`]: `admission.k8s.io/v1` and `v1beta1` reviews. Decoding never
//!   panics: whatever cannot be read becomes an error that still carries the
//!   request's uid and version when they could be found, so the answer is an
//!   `invalid` response the API server can match to its request.
//! - [`patch`]: the JSON patch (RFC 6902) turning an object into its mutated form.
//! - [`tls`]: the serving certificate, read from a directory and reloaded when
//!   its files change (a rotated Kubernetes Secret or citadel's agent).
//! - [`serve`]: an HTTPS server (HTTP/1.1 and HTTP/2 by ALPN) for an axum router,
//!   with a handshake timeout and graceful shutdown.

pub mod patch;
pub mod review;
pub mod serve;
pub mod tls;

pub use review::{
    AdmissionRequest, AdmissionResponse, GroupVersionKind, GroupVersionResource, Operation,
    ReviewError, ReviewVersion, decode_review, encode_review,
};
pub use serve::{HttpsServer, ServeError};
pub use tls::{CertFiles, ServingCert, TlsFilesError};
