//! The client side: ask the service for memory, take over its ledger record, adopt it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::protocol::{self, Grant, Request, Response, PROTOCOL_VERSION};
use super::PoolError;
use crate::error::Result;
use crate::ledger::{Ledger, VmRecord};
use crate::reservation::Reservation;
use crate::units::NodeId;

/// Asks a warm-pool service (`numapin serve`) for memory. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct PoolClient {
    socket: PathBuf,
    ledger: Arc<Ledger>,
    timeout: Duration,
}

/// Memory from the service, adopted: mapped shared, placement verified, its ledger record held
/// by this process. When the reservation drops, memory from a warm pool goes back to the
/// service with its charge (the service takes the record back: the bytes stay counted while
/// they are zeroed); a cold reservation's charge is released with its memory.
#[derive(Debug)]
pub struct Served {
    /// The adopted memory (use [`Reservation::as_fd`] to pass it on, or build a vm-memory
    /// layout from it).
    pub reservation: Reservation,
    /// What the service said about it.
    pub grant: Grant,
}

impl PoolClient {
    /// A client of the service at `socket`, charging in `ledger` (the service's ledger file:
    /// records are handed over within one ledger).
    pub fn new(socket: impl Into<PathBuf>, ledger: Arc<Ledger>) -> PoolClient {
        PoolClient {
            socket: socket.into(),
            ledger,
            // A cold reservation of a large guest can take a while.
            timeout: Duration::from_secs(600),
        }
    }

    /// How long to wait for the service's answer (default 600 s).
    pub fn timeout(mut self, t: Duration) -> PoolClient {
        self.timeout = t;
        self
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn io(&self, op: &'static str) -> impl Fn(std::io::Error) -> PoolError + '_ {
        move |source| PoolError::Io {
            socket: self.socket.clone(),
            op,
            source,
        }
    }

    fn protocol(&self, what: String) -> PoolError {
        PoolError::Protocol {
            socket: self.socket.clone(),
            what,
            protocol: PROTOCOL_VERSION,
        }
    }

    /// Asks for memory and takes over its ledger record, without mapping it: the sealed memory
    /// file (its descriptor keeps the memory out of the pool until it and every mapping of it
    /// are gone), the record (hold it as long as the memory), and the service's grant. A warm
    /// grant's record is marked [`VmRecord::hand_back_on_drop`]: dropping it leaves its charge
    /// for the service, which takes it back with the memory once neither is held any more.
    ///
    /// # Errors
    /// [`PoolError`] (as [`crate::Error::Pool`]) for connection, protocol and refusals;
    /// [`crate::Error::HandoverRefused`] if the record cannot be taken over (e.g. another
    /// ledger file). On error the descriptors received are closed: the service gets the
    /// memory back and the record is reaped.
    pub fn request_fd(&self, req: &Request) -> Result<(OwnedFd, VmRecord, Grant)> {
        let sock = protocol::connect(&self.socket).map_err(|source| PoolError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        protocol::set_timeouts(&sock, self.timeout).map_err(self.io("setsockopt"))?;
        let body = serde_json::to_vec(req).map_err(|e| self.protocol(e.to_string()))?;
        protocol::send_msg(sock.as_fd(), &body, &[]).map_err(self.io("send"))?;
        let Some((bytes, fds)) = protocol::recv_msg(sock.as_fd()).map_err(self.io("recv"))? else {
            return Err(self
                .protocol("the service closed the connection without an answer".into())
                .into());
        };
        let resp: Response = serde_json::from_slice(&bytes)
            .map_err(|e| self.protocol(format!("bad response: {e}")))?;
        let grant = match resp {
            Response::Refused(r) => {
                return Err(PoolError::Refused {
                    socket: self.socket.clone(),
                    kind: r.kind,
                    message: r.message,
                }
                .into())
            }
            Response::Granted(g) => g,
        };
        if grant.version != PROTOCOL_VERSION {
            return Err(self
                .protocol(format!(
                    "response version {} (mine {PROTOCOL_VERSION})",
                    grant.version
                ))
                .into());
        }
        let mut fds = fds.into_iter();
        let (Some(memfd), Some(lock), None) = (fds.next(), fds.next(), fds.next()) else {
            return Err(self
                .protocol("a grant must carry exactly two descriptors (memory, record)".into())
                .into());
        };
        let mut record = self.ledger.take_over(grant.slot, grant.owner, lock)?;
        if grant.source == super::Source::Warm {
            // The service keeps warm memory and a copy of the record's lock: when this record
            // drops, its charge stays for the service to take back with the memory.
            record.hand_back_on_drop();
        }
        // The memory above its record's lock, so that dying frees it before the charge goes.
        let memfd = match record.lock_raw_fd() {
            Some(l) => crate::shared::keep_above(memfd, l).map_err(self.io("fcntl(F_DUPFD)"))?,
            None => memfd,
        };
        Ok((memfd, record, grant))
    }

    /// Asks for memory, takes over its ledger record and adopts it ([`Reservation::adopt`]:
    /// checks the seals, size, page size and placement against the request, maps it shared,
    /// allocates nothing).
    ///
    /// # Errors
    /// As [`PoolClient::request_fd`], and every error of [`crate::AdoptBuilder::build`]
    /// (then the record is released and the memory goes back to the service).
    pub fn request(&self, req: &Request) -> Result<Served> {
        let (memfd, record, grant) = self.request_fd(req)?;
        let mut b = Reservation::adopt(memfd)
            .size(req.size)
            .policy(req.policy)
            .charge(record);
        if req.page_size.bytes().is_some() {
            b = b.page_size(req.page_size);
        }
        if !req.nodes.is_empty() {
            b = b.nodes(req.nodes.iter().map(|&n| NodeId(n)));
        }
        Ok(Served {
            reservation: b.build()?,
            grant,
        })
    }
}
