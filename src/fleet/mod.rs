//! Publishing each host's N+k-safe capacity to the systems fleets already run, and reading it
//! back: Prometheus ([`prometheus`]), Kubernetes NodeResourceTopology ([`nrt`]) and OpenStack
//! Placement ([`placement`]).
//!
//! Pure formatting and parsing: the HTTP server and client live in the `numapin` binary
//! (`numapin exporter`, `numapin plan --prometheus`). See docs/planning.md for the wiring.

pub mod nrt;
pub mod placement;
pub mod prometheus;
