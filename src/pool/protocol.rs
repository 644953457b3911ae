//! The wire protocol between `numapin serve` and its clients: one request and one response per
//! connection, each a single `SOCK_SEQPACKET` message holding a JSON document; the response
//! carries the memory's descriptors with `SCM_RIGHTS`. Versioned: a request of another version
//! is answered with [`RefusalKind::Version`].

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::error::RefusalKind;
use crate::reservation::MemPolicy;
use crate::units::PageSize;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 << 10;

/// What a client asks for: memory for one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The VM's name in the ledger.
    pub vm: String,
    /// Bytes.
    pub size: u64,
    /// Nodes of the policy (empty: any node with a warm pool, else the service's node).
    pub nodes: Vec<u32>,
    /// Memory policy.
    pub policy: MemPolicy,
    /// Page size; `Auto` takes a warm chunk of any page size (the largest pages first), or a
    /// cold reservation's `Auto` choice when none matches.
    pub page_size: PageSize,
}

impl Request {
    /// A request for `size` bytes for `vm`, with the default policy and page size.
    pub fn new(vm: impl Into<String>, size: u64, page_size: PageSize) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            vm: vm.into(),
            size,
            nodes: Vec::new(),
            policy: MemPolicy::Bind,
            page_size,
        }
    }
}

/// How the memory was provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// From a warm pool: populated, zeroed and placed before the request came.
    Warm,
    /// A cold reservation made for this request (no warm memory matched).
    Cold,
}

/// What the service says about memory it hands out (the descriptors come with it: the memory
/// file first, then the ledger record's lock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Warm or cold.
    pub source: Source,
    /// Bytes of the memory file.
    pub size: u64,
    /// Page size of the memory file.
    pub page_size: PageSize,
    /// Nodes the pages are on.
    pub nodes: Vec<u32>,
    /// The service's ledger file (the client must use the same one).
    pub ledger: PathBuf,
    /// The ledger record's slot, to take over ([`crate::Ledger::take_over`]).
    pub slot: u32,
    /// The record's owner word, to check at take-over.
    pub owner: u64,
    /// Seconds the service spent on the request.
    pub service_seconds: f64,
    /// Notes (why cold, what was chosen).
    pub notes: Vec<String>,
}

/// A refusal, with a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What happened, with the numbers.
    pub message: String,
}

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    /// Memory handed out (descriptors attached).
    Granted(Grant),
    /// No memory.
    Refused(Refusal),
}

/// Sends one message with `fds` attached (`SCM_RIGHTS`, at most [`crate::shared::MAX_FDS`]).
pub(crate) fn send_msg(
    socket: BorrowedFd<'_>,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    crate::shared::send_fds(socket, payload, fds)
}

/// Receives one message and the descriptors that came with it (close-on-exec). `Ok(None)` when
/// the peer closed the connection.
pub(crate) fn recv_msg(socket: BorrowedFd<'_>) -> std::io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, fds) = crate::shared::recv_fds(socket, &mut buf)?;
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

/// A connected `SOCK_SEQPACKET` socket to `path`.
pub(crate) fn connect(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(fd)
}

/// Sets receive and send timeouts on a socket.
pub(crate) fn set_timeouts(fd: impl AsFd, t: std::time::Duration) -> std::io::Result<()> {
    use rustix::net::sockopt::{set_socket_timeout, Timeout};
    set_socket_timeout(&fd, Timeout::Recv, Some(t))?;
    set_socket_timeout(&fd, Timeout::Send, Some(t))?;
    Ok(())
}
