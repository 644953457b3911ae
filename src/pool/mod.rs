//! Warm pools: memory populated, zeroed, placed and sealed before anyone asks for it, held by
//! a host service (`numapin serve`) and handed out as sealed memfds over a UNIX socket.
//!
//! ```text
//!   numapin serve                                      a VMM process (PoolClient)
//!   warm chunks per (node, page size) ── memfd + ledger lock ──SCM_RIGHTS──▶ take over the
//!     charged to the service's records                          record, adopt the memfd
//!   ▲ zeroed at SCHED_IDLE on the node's CPUs ◀── the memfd's lock drops when the client is
//!   └──────────────────────────────────────────── done with the memory (exit, close, unmap)
//! ```
//!
//! - **Handing out** ([`Service`], [`PoolClient`]): a request (VM name, size, nodes, policy,
//!   page size; [`Request`]) is answered with the memory file and the descriptor that holds
//!   its ledger record ([`crate::ledger::Handover`]): the charge stays in its slot and only its
//!   holder changes, so the bytes never count twice or not at all. A request no warm chunk
//!   matches is served by a cold reservation with the same engine: the service never refuses
//!   what a cold reservation would grant.
//! - **Getting it back**: each handed-out memory file gets a new open file description with an
//!   OFD lock on its first byte; the client's descriptors and mappings keep that description
//!   (and the lock) alive, so the lock drops exactly when the client is done with the memory.
//!   The service then checks `/proc` that no process still maps or holds the file, takes the
//!   record back (it kept a copy of the record's lock description, so the record was never
//!   reaped; the client's drop hands it back, [`crate::ledger::VmRecord::hand_back_on_drop`]),
//!   zeroes the memory at idle priority on the node's CPUs and puts it back warm: the bytes
//!   stay charged from the hand-out to the next one.
//! - **Ledger**: warm memory is charged to records named [`WARM_NAME`] held by the service;
//!   `numapin status` shows them per node and class. If the service dies, its records die with
//!   it (reaped like any other), and clients keep theirs.
//!
//! See `docs/pool.md`.

mod background;
mod client;
mod config;
mod holdback;
mod protocol;
mod service;
mod zero;

use std::path::PathBuf;

pub use crate::error::{PoolError, RefusalKind};
pub use client::{PoolClient, Served};
pub use config::{PoolTarget, ServiceConfig, ServiceStats};
pub use holdback::pools_from_holdback;
pub use protocol::{Grant, Refusal, Request, Response, Source, MAX_MESSAGE, PROTOCOL_VERSION};
pub use service::Service;
pub use zero::{memset_gib_per_s, zero_file};

/// The ledger name of the records that hold warm memory (charged to the service; the planner
/// counts it as free, see [`crate::snapshot::WARM_VM_NAME`]).
pub const WARM_NAME: &str = crate::snapshot::WARM_VM_NAME;

/// The ledger name of the records holding memory the service is zeroing (a refill being
/// populated, or memory taken back from a VM); renamed [`WARM_NAME`] once it can be handed out.
pub const ZEROING_NAME: &str = crate::snapshot::ZEROING_VM_NAME;

/// Where the service listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/numapin/serve.sock";

/// The environment variable naming the service's socket.
pub const ENV_SOCKET: &str = "NUMAPIN_SOCKET";

/// The socket path: `$NUMAPIN_SOCKET` if set and not empty, else [`DEFAULT_SOCKET`].
pub fn default_socket() -> PathBuf {
    match std::env::var_os(ENV_SOCKET) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}
