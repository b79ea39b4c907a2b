//! mesh-load
