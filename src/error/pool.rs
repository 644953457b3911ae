//! What can go wrong talking to the warm-pool service (feature `pool`): the data of
//! [`super::Error::Pool`], re-exported by `numapin::pool`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What can go wrong talking to the warm-pool service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The service's socket could not be reached.
    #[error("cannot connect to the warm-pool service at {}: {source}; is `numapin serve` running, and may this user open the socket (root or the service's group)?", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sending or receiving failed (the service died, or timed out).
    #[error("warm-pool service at {}: {op} failed: {source}; check the service's log", socket.display())]
    Io {
        /// The socket.
        socket: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The other side did not speak the protocol.
    #[error("warm-pool service at {}: protocol error: {what}; client and service must be the same numapin version (this client speaks protocol {protocol})", socket.display())]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        what: String,
        /// The protocol version this client speaks (`pool::PROTOCOL_VERSION`).
        protocol: u32,
    },
    /// The service refused the request.
    #[error("warm-pool service at {} refused the request ({kind:?}): {message}", socket.display())]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// Why, as a kind.
        kind: RefusalKind,
        /// Why, in words with the numbers.
        message: String,
    },
    /// Setting up the service failed.
    #[error("cannot start the warm-pool service on {}: {what}: {source}", socket.display())]
    Setup {
        /// The socket.
        socket: PathBuf,
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why the service did not hand out memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// The request was not a valid request document.
    BadRequest,
    /// The request's protocol version is not the service's.
    Version,
    /// The peer's uid/gid is not allowed (root and the configured group only).
    PeerNotAllowed,
    /// Neither warm memory nor a cold reservation could serve it (the message has the
    /// reservation's error: admission refused, pool short...).
    Unavailable,
    /// Something failed inside the service.
    Internal,
}
