//! `numapin serve`: the warm pools, the socket, the hand-outs, and the background work
//! (refill, return, zero).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{self, Grant, Refusal, RefusalKind, Request, Response, Source};
use super::{PoolError, PoolTarget, ServiceConfig, ServiceStats, PROTOCOL_VERSION, WARM_NAME};
use crate::error::{Error, Result};
use crate::ledger::{class_of, Handover, Ledger, VmRecord};
use crate::reservation::{MemPolicy, Reservation};
use crate::units::{NodeId, PageSize};

pub(super) enum State {
    /// Zeroed, charged to the service.
    Warm(VmRecord),
    /// Handed out; the client's description of the file holds the file's lock. The service
    /// keeps a copy of the record's lock description ([`Handover`]): the record cannot be
    /// reaped while the service lives, so the charge stays in the slot until the service takes
    /// it back (`None` only if the record was lost while handing out).
    Out(Option<Handover>),
    /// Being handed out by a connection thread.
    Busy,
    /// Given back by its client: its record taken back (charged to the service again, or
    /// `None` if it must be charged anew); to be zeroed by the background thread.
    Returned(Option<VmRecord>),
}

pub(super) struct Chunk {
    pub(super) target: usize,
    pub(super) file: OwnedFd,
    pub(super) state: State,
    /// How many times it was handed out.
    pub(super) generation: u64,
    /// Back-off for a returned chunk some process still holds: not scanned for again before
    /// this instant; the delay doubles at each deferral (see [`Chunk::defer`]).
    pub(super) recheck: Option<(Instant, Duration)>,
}

pub(super) struct Inner {
    pub(super) cfg: ServiceConfig,
    chunks: Mutex<Vec<Chunk>>,
    stats: Mutex<ServiceStats>,
    /// Per pool: its node's CPUs (where its memory is zeroed).
    pub(super) cpus: Vec<Vec<u32>>,
}

/// The warm-pool service. [`Service::bind`], then [`Service::run`] (blocks).
pub struct Service {
    inner: Arc<Inner>,
    listener: OwnedFd,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("socket", &self.inner.cfg.socket)
            .finish_non_exhaustive()
    }
}

fn setup(socket: &std::path::Path, what: &str, source: std::io::Error) -> Error {
    PoolError::Setup {
        socket: socket.to_path_buf(),
        what: what.into(),
        source,
    }
    .into()
}

impl Service {
    /// Creates the socket (directory and modes set, a stale socket of a dead service replaced)
    /// and checks the pools against the ledger. Nothing is reserved yet.
    ///
    /// # Errors
    /// [`PoolError::Setup`] if the socket cannot be made or another service listens on it;
    /// [`Error::LedgerNoClass`] for a pool the ledger has no class for; [`Error::PageSizeAuto`]
    /// for a pool with a page size that is not concrete.
    pub fn bind(cfg: ServiceConfig) -> Result<Service> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        for p in &cfg.pools {
            let class = class_of(p.page_size).ok_or(Error::PageSizeAuto {
                what: "a warm pool",
            })?;
            cfg.ledger.class_index(p.node, class)?;
        }
        let sock = &cfg.socket;
        if let Some(dir) = sock.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| setup(sock, "create the directory", e))?;
                let mode = if cfg.group.is_some() { 0o750 } else { 0o700 };
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| setup(sock, "chmod the directory", e))?;
                if let Some(g) = cfg.group {
                    std::os::unix::fs::chown(dir, None, Some(g))
                        .map_err(|e| setup(sock, "chown the directory", e))?;
                }
            }
        }
        match std::fs::symlink_metadata(sock) {
            Ok(m) if m.file_type().is_socket() => match protocol::connect(sock) {
                Ok(_) => {
                    return Err(setup(
                        sock,
                        "another service is listening on the socket",
                        std::io::Error::from(std::io::ErrorKind::AddrInUse),
                    ))
                }
                Err(_) => std::fs::remove_file(sock)
                    .map_err(|e| setup(sock, "remove the stale socket", e))?,
            },
            Ok(_) => {
                return Err(setup(
                    sock,
                    "the path exists and is not a socket",
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                ))
            }
            Err(_) => {}
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| setup(sock, "socket", e.into()))?;
        let addr =
            SocketAddrUnix::new(sock.as_path()).map_err(|e| setup(sock, "address", e.into()))?;
        // No moment with a socket others may open: bind under a strict umask, then loosen.
        let old = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o177));
        let r = rustix::net::bind(&fd, &addr);
        rustix::process::umask(old);
        r.map_err(|e| setup(sock, "bind", e.into()))?;
        if let Some(g) = cfg.group {
            std::os::unix::fs::chown(sock, None, Some(g)).map_err(|e| setup(sock, "chown", e))?;
            std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| setup(sock, "chmod", e))?;
        }
        rustix::net::listen(&fd, 128).map_err(|e| setup(sock, "listen", e.into()))?;
        let topo = crate::topology::Topology::from_sysfs().ok();
        let cpus = cfg
            .pools
            .iter()
            .map(|p| {
                topo.as_ref()
                    .and_then(|t| t.node(p.node))
                    .map(|n| n.cpus.clone())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Service {
            inner: Arc::new(Inner {
                cfg,
                chunks: Mutex::new(Vec::new()),
                stats: Mutex::new(ServiceStats::default()),
                cpus,
            }),
            listener: fd,
        })
    }

    /// What the service has done so far.
    pub fn stats(&self) -> ServiceStats {
        self.inner
            .stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// A function that reads [`Service::stats`] from another thread while [`Service::run`]
    /// blocks.
    pub fn stats_reader(&self) -> impl Fn() -> ServiceStats + Send + 'static {
        let inner = Arc::clone(&self.inner);
        move || inner.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Starts the background thread (refill, return, zero: at `SCHED_IDLE`), then accepts
    /// connections forever, one thread per connection.
    ///
    /// # Errors
    /// [`PoolError::Setup`] if `accept` fails for a reason other than a peer that went away.
    pub fn run(&self) -> Result<()> {
        let bg = Arc::clone(&self.inner);
        std::thread::Builder::new()
            .name("numapin-pool".into())
            .spawn(move || bg.background())
            .map_err(|e| setup(&self.inner.cfg.socket, "spawn the background thread", e))?;
        loop {
            let conn =
                match rustix::net::accept_with(&self.listener, rustix::net::SocketFlags::CLOEXEC) {
                    Ok(c) => c,
                    Err(e)
                        if e == rustix::io::Errno::INTR || e == rustix::io::Errno::CONNABORTED =>
                    {
                        continue
                    }
                    Err(e) if e == rustix::io::Errno::MFILE || e == rustix::io::Errno::NFILE => {
                        eprintln!("numapin serve: accept: {e}; retrying in 100 ms");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(e) => return Err(setup(&self.inner.cfg.socket, "accept", e.into())),
                };
            let inner = Arc::clone(&self.inner);
            let spawned = std::thread::Builder::new()
                .name("numapin-conn".into())
                .spawn(move || inner.serve_connection(conn));
            if let Err(e) = spawned {
                eprintln!("numapin serve: cannot spawn a connection thread: {e}");
            }
        }
    }
}

/// Whether `uid`/`gid` (and the peer's supplementary groups) may ask for memory.
fn peer_allowed(cred: &rustix::net::UCred, group: Option<u32>) -> bool {
    let uid = cred.uid.as_raw();
    if uid == 0 || uid == rustix::process::geteuid().as_raw() {
        return true;
    }
    let Some(g) = group else { return false };
    if cred.gid.as_raw() == g {
        return true;
    }
    // Supplementary groups, as the kernel saw them when the peer connected would be better;
    // /proc is what is available (a peer that changed its groups since only loses access).
    std::fs::read_to_string(format!("/proc/{}/status", cred.pid.as_raw_nonzero()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:").map(str::to_owned))
        })
        .is_some_and(|l| l.split_whitespace().any(|x| x.parse() == Ok(g)))
}

fn refusal(kind: RefusalKind, message: String) -> Response {
    Response::Refused(Refusal {
        version: PROTOCOL_VERSION,
        kind,
        message,
    })
}

impl Inner {
    pub(super) fn ledger(&self) -> &Arc<Ledger> {
        &self.cfg.ledger
    }

    pub(super) fn stat(&self, f: impl FnOnce(&mut ServiceStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    pub(super) fn chunks(&self) -> std::sync::MutexGuard<'_, Vec<Chunk>> {
        // A panicking thread cannot leave the vector half-changed (each change is one
        // assignment or push/remove), so a poisoned lock is still usable.
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One connection: read one request, answer it. Every failure ends only this connection.
    fn serve_connection(&self, conn: OwnedFd) {
        let _ = protocol::set_timeouts(&conn, self.cfg.request_timeout);
        let cred = match rustix::net::sockopt::socket_peercred(&conn) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("numapin serve: SO_PEERCRED: {e}");
                return;
            }
        };
        if !peer_allowed(&cred, self.cfg.group) {
            self.stat(|s| s.refused += 1);
            let r = refusal(
                RefusalKind::PeerNotAllowed,
                format!(
                    "uid {} gid {} may not ask for memory: root{} only",
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                    self.cfg
                        .group
                        .map_or(String::new(), |g| format!(" and members of group {g}"))
                ),
            );
            self.send(&conn, &r, &[]);
            return;
        }
        let req = match protocol::recv_msg(conn.as_fd()) {
            Ok(Some((bytes, _fds))) => serde_json::from_slice::<Request>(&bytes),
            // The peer went away (or timed out) before asking: nothing to do.
            Ok(None) | Err(_) => return,
        };
        let req = match req {
            Ok(r) if r.version == PROTOCOL_VERSION => r,
            Ok(r) => {
                self.stat(|s| s.refused += 1);
                let m = format!(
                    "protocol version {} asked, this service speaks {PROTOCOL_VERSION}",
                    r.version
                );
                self.send(&conn, &refusal(RefusalKind::Version, m), &[]);
                return;
            }
            Err(e) => {
                self.stat(|s| s.refused += 1);
                let m = format!("not a request: {e}");
                self.send(&conn, &refusal(RefusalKind::BadRequest, m), &[]);
                return;
            }
        };
        if req.vm.is_empty() || req.vm.len() > 64 {
            self.stat(|s| s.refused += 1);
            let m = format!("the VM name must be 1 to 64 bytes (got {})", req.vm.len());
            self.send(&conn, &refusal(RefusalKind::BadRequest, m), &[]);
            return;
        }
        let t0 = Instant::now();
        if self.serve_warm(&conn, &req, t0) {
            return;
        }
        self.serve_cold(&conn, &req, t0);
    }

    fn send(&self, conn: &OwnedFd, r: &Response, fds: &[std::os::fd::BorrowedFd<'_>]) -> bool {
        match serde_json::to_vec(r) {
            Ok(b) => protocol::send_msg(conn.as_fd(), &b, fds).is_ok(),
            Err(_) => false,
        }
    }

    /// Serves from a warm chunk if one matches; false if none does (or handing it failed
    /// before anything was sent: then the chunk is warm again).
    fn serve_warm(&self, conn: &OwnedFd, req: &Request, t0: Instant) -> bool {
        let matches = |p: &PoolTarget| {
            p.chunk == req.size
                && (p.page_size == req.page_size || req.page_size == PageSize::Auto)
                && (req.nodes.is_empty() || req.nodes == [p.node.0])
                && req.policy != MemPolicy::Interleave
        };
        let picked = {
            let mut chunks = self.chunks();
            // `Auto`: the largest pages warm, as a cold `Auto` prefers the largest that fit.
            let i = chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    matches!(c.state, State::Warm(_)) && matches(&self.cfg.pools[c.target])
                })
                .max_by_key(|(_, c)| self.cfg.pools[c.target].page_size.bytes())
                .map(|(i, _)| i);
            i.map(|i| {
                let c = &mut chunks[i];
                let State::Warm(rec) = std::mem::replace(&mut c.state, State::Busy) else {
                    unreachable!("matched Warm")
                };
                (c.file.as_raw_fd(), rec, c.target, c.generation)
            })
        };
        let Some((raw, rec, target, generation)) = picked else {
            return false;
        };
        let p = self.cfg.pools[target].clone();
        let put_back = |rec: VmRecord| self.set_state(raw, State::Warm(rec));
        // A description of the file of the client's own, locked: the lock lives as long as
        // the client (or anyone it passes the memory to) holds a descriptor or mapping made
        // from it.
        let theirs = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{raw}"))
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                eprintln!("numapin serve: reopen a warm file: {e}");
                put_back(rec);
                return false;
            }
        };
        if !matches!(
            crate::sys::ofd_try_lock(theirs.as_fd(), 0, 1, true),
            Ok(true)
        ) {
            eprintln!("numapin serve: a warm file's lock is held elsewhere; not handing it out");
            put_back(rec);
            return false;
        }
        let h = match rec.hand_over(&req.vm) {
            Ok(h) => h,
            Err(e) => {
                // The record is gone (dropped inside): the file goes back as dirty memory.
                eprintln!("numapin serve: hand over: {e}");
                self.set_state(raw, State::Out(None));
                return false;
            }
        };
        let grant = Response::Granted(Grant {
            version: PROTOCOL_VERSION,
            source: Source::Warm,
            size: p.chunk,
            page_size: p.page_size,
            nodes: vec![p.node.0],
            ledger: self.ledger().path().map(PathBuf::from).unwrap_or_default(),
            slot: h.slot(),
            owner: h.owner(),
            service_seconds: t0.elapsed().as_secs_f64(),
            notes: vec![format!(
                "warm chunk, handed out {generation} time(s) before"
            )],
        });
        if self.send(conn, &grant, &[theirs.as_fd(), h.lock_fd()]) {
            // Keep our copy of the lock's description: the client hands the record back to it
            // (or dies holding it) and the charge never leaves the slot.
            self.set_state(raw, State::Out(Some(h)));
            self.stat(|s| s.warm_served += 1);
            return true;
        }
        // Nothing reached the client: take the record back and keep the chunk warm.
        drop(theirs);
        match h.take_back(self.ledger()) {
            Ok(mut rec) => {
                let _ = rec.rename(WARM_NAME);
                put_back(rec);
            }
            Err(e) => {
                eprintln!("numapin serve: take back a record after a failed send: {e}");
                self.set_state(raw, State::Out(None));
            }
        }
        true
    }

    /// Sets a chunk's state; `Out(Some(_))` (only a hand-out that reached its client) counts
    /// one more hand-out.
    fn set_state(&self, raw: i32, state: State) {
        let mut chunks = self.chunks();
        if let Some(c) = chunks.iter_mut().find(|c| c.file.as_raw_fd() == raw) {
            if matches!(state, State::Out(Some(_))) {
                c.generation += 1;
                c.recheck = None;
            }
            c.state = state;
        }
    }

    /// A cold reservation with the same engine, handed over like a warm one.
    fn serve_cold(&self, conn: &OwnedFd, req: &Request, t0: Instant) {
        let mut b = Reservation::builder(req.size)
            .policy(req.policy)
            .page_size(req.page_size)
            .shared(true)
            .ledger(Arc::clone(self.ledger()))
            .vm(req.vm.clone());
        if !req.nodes.is_empty() {
            b = b.nodes(req.nodes.iter().map(|&n| NodeId(n)));
        }
        let r = match b.build() {
            Ok(r) => r,
            Err(e) => {
                self.stat(|s| s.refused += 1);
                self.send(conn, &refusal(RefusalKind::Unavailable, e.to_string()), &[]);
                return;
            }
        };
        let nodes = r.report().placement.keys().map(|n| n.0).collect();
        let page_size = r.page_size();
        let size = r.len() as u64;
        let mut notes = vec!["no warm chunk matched: a cold reservation".to_string()];
        notes.extend(r.report().notes.iter().cloned());
        let Ok((file, Some(rec))) = r.into_fd() else {
            self.send(
                conn,
                &refusal(
                    RefusalKind::Internal,
                    "shared reservation without file or record".into(),
                ),
                &[],
            );
            return;
        };
        let h = match rec.hand_over(&req.vm) {
            Ok(h) => h,
            Err(e) => {
                self.send(conn, &refusal(RefusalKind::Internal, e.to_string()), &[]);
                return;
            }
        };
        let grant = Response::Granted(Grant {
            version: PROTOCOL_VERSION,
            source: Source::Cold,
            size,
            page_size,
            nodes,
            ledger: self.ledger().path().map(PathBuf::from).unwrap_or_default(),
            slot: h.slot(),
            owner: h.owner(),
            service_seconds: t0.elapsed().as_secs_f64(),
            notes,
        });
        if self.send(conn, &grant, &[file.as_fd(), h.lock_fd()]) {
            self.stat(|s| s.cold_served += 1);
        } else if let Ok(rec) = h.take_back(self.ledger()) {
            // Nothing reached the client: refund now rather than through the reaper.
            drop(rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_root_this_user_or_the_group() {
        use rustix::process::{Gid, Pid, Uid};
        let me = rustix::process::geteuid().as_raw();
        let cred = |uid: u32, gid: u32| rustix::net::UCred {
            // A pid with no /proc entry: supplementary groups unknown.
            pid: Pid::from_raw(i32::MAX).unwrap(),
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
        };
        assert!(peer_allowed(&cred(0, 0), None));
        assert!(peer_allowed(&cred(me, 1), None));
        let other = if me == 65534 { 65533 } else { 65534 };
        assert!(!peer_allowed(&cred(other, 65534), None));
        assert!(!peer_allowed(&cred(other, 65534), Some(100)));
        assert!(peer_allowed(&cred(other, 100), Some(100)));
    }
}
