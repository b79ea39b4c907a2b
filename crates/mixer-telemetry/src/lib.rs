//! mixer-telemetry: reports turned into metrics.
//!
//! Proxies report what happened to each request as an attribute bag: over the
//! Mixer Report API (batched, delta-encoded bags) or Envoy's access log service.
//! Rules from galley (`config.istio.io/v1alpha2` handler, instance and rule) send
//! metric instances built from those attributes to prometheus handlers, whose
//! metrics are served on 42422. The standard mesh metrics work with no
//! configuration ([`defaults`]).

pub mod accesslog;
pub mod args;
pub mod defaults;
pub mod graph;
pub mod otel;
pub mod pipeline;
pub mod prom;
pub mod report_route;
pub mod samples;
pub mod server;
pub mod sqlstore;
