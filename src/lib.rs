#![doc = include_str!("../README.md")]
//!
//! # Modules
//! - [`topology`]: NUMA nodes, CPUs, memory and hugepage pools, read from sysfs.
//! - [`reservation`]: the builder and the RAII region (map → bind → populate → lock → verify).
//! - [`ledger`]: host-wide accounting and lock-free admission control, shared by every VMM.
//! - [`snapshot`]: one host's ledger at one moment, as `numapin status --json` prints it.
//! - [`smaps`]: the kernel's view of a mapping, for audits and tests.
//! - [`units`]: node ids, page sizes, byte sizes.
//!
//! # Lint policy
//! `unsafe` is denied at the crate root and allowed only in the modules that need it (`sys`,
//! `populate`, `reservation`); every block has a `// SAFETY:` comment. `missing_docs` warns
//! (CI turns warnings into errors).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
pub mod ledger;
#[allow(unsafe_code)]
mod populate;
#[allow(unsafe_code)]
pub mod reservation;
pub mod smaps;
pub mod snapshot;
pub(crate) mod sync;
#[allow(unsafe_code)]
pub mod sys;
pub mod topology;
pub mod units;

pub use error::{Error, PolicyDenial, Result};
pub use ledger::{Charge, ClassSpec, Ledger, LedgerConfig};
pub use reservation::{
    FaultGuarantee, LockKind, MemPolicy, PendingReservation, Plan, PopulateProgress, Report,
    Reservation, ReservationBuilder,
};
pub use topology::{HugepagePool, NumaNode, ThpMode, Topology};
pub use units::{format_bytes, parse_size, NodeId, PageSize};
