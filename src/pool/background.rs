//! The service's background thread: takes returned memory back (its record included), zeroes
//! it at idle priority on the node's CPUs, trims pools over their target and refills those
//! under it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::service::{Chunk, Inner, State};
use super::{zero, WARM_NAME, ZEROING_NAME};
use crate::ledger::{class_of, Handover, VmRecord};
use crate::reservation::Reservation;
use crate::units::format_bytes;

/// The first and the longest wait before `/proc` is scanned again for a chunk that came back
/// but is still held (one scan reads every process's descriptors).
const RECHECK_FIRST: Duration = Duration::from_millis(50);
const RECHECK_MAX: Duration = Duration::from_secs(2);

impl Chunk {
    fn due(&self, now: Instant) -> bool {
        self.recheck.is_none_or(|(at, _)| now >= at)
    }

    fn defer(&mut self, now: Instant) {
        let delay = self
            .recheck
            .map_or(RECHECK_FIRST, |(_, d)| (d * 2).min(RECHECK_MAX));
        self.recheck = Some((now + delay, delay));
    }
}

impl Inner {
    /// The background thread's loop (never returns): at `SCHED_IDLE`, every `poll`.
    pub(super) fn background(&self) {
        if let Err(e) = crate::sys::set_idle_priority() {
            eprintln!(
                "numapin serve: SCHED_IDLE refused ({e}); background work runs at normal priority"
            );
        }
        loop {
            self.collect_returns();
            self.recycle_one();
            self.trim();
            self.refill_one();
            std::thread::sleep(self.cfg.poll);
        }
    }

    /// Takes back handed-out chunks whose client is done: the file's lock dropped, no process
    /// holds or maps the file, and no process holds the record's lock description any more.
    /// The record is taken back there and then (renamed [`ZEROING_NAME`]), so the charge never
    /// leaves its slot; the chunk is then ready to be zeroed.
    fn collect_returns(&self) {
        // Probe the locks under the chunks' lock (cheap), scan /proc without it (slow: it must
        // not hold up hand-outs). Only this thread touches chunks that are out.
        let now = Instant::now();
        let candidates: Vec<(i32, OwnedFd)> = {
            let chunks = self.chunks();
            chunks
                .iter()
                .filter(|c| matches!(c.state, State::Out(_)) && c.due(now))
                .filter(|c| !crate::sys::ofd_is_locked(c.file.as_fd(), 0, 1).unwrap_or(true))
                .filter_map(|c| c.file.try_clone().ok().map(|f| (c.file.as_raw_fd(), f)))
                .collect()
        };
        for (raw, file) in candidates {
            if zero::held_elsewhere(file.as_fd()) {
                self.defer(raw, now, None);
                continue;
            }
            let Some((h, target)) = self.take_out(raw) else {
                continue;
            };
            let rec = match h {
                Some(h) if h.held_elsewhere(self.ledger()) => {
                    // The memory is back but some process still holds its record: wait until
                    // it lets go (or dies) rather than write a slot it may still write.
                    self.defer(raw, now, Some(h));
                    continue;
                }
                Some(h) => match h.reclaim(self.ledger()) {
                    Ok(Some(rec)) => self.as_pool_record(rec, target),
                    Ok(None) => None,
                    Err(e) => {
                        eprintln!("numapin serve: take back a returned record: {e}");
                        None
                    }
                },
                None => None,
            };
            let mut chunks = self.chunks();
            if let Some(c) = chunks.iter_mut().find(|c| c.file.as_raw_fd() == raw) {
                c.state = State::Returned(rec);
            }
            self.stat(|s| s.returned += 1);
        }
    }

    /// Counts a deferral and backs off scanning for this chunk; `h`: its record's hand-over,
    /// taken out to be checked, goes back (the chunk stays out).
    fn defer(&self, raw: i32, now: Instant, h: Option<Handover>) {
        if let Some(c) = self.chunks().iter_mut().find(|c| c.file.as_raw_fd() == raw) {
            if h.is_some() {
                c.state = State::Out(h);
            }
            c.defer(now);
        }
        self.stat(|s| s.deferred += 1);
    }

    /// Takes a handed-out chunk's [`Handover`] out of its state (marking it busy).
    fn take_out(&self, raw: i32) -> Option<(Option<Handover>, usize)> {
        let mut chunks = self.chunks();
        let c = chunks
            .iter_mut()
            .find(|c| c.file.as_raw_fd() == raw && matches!(c.state, State::Out(_)))?;
        let State::Out(h) = std::mem::replace(&mut c.state, State::Busy) else {
            unreachable!("matched Out")
        };
        Some((h, c.target))
    }

    /// A record taken back, made the service's again: renamed (zeroing), and holding exactly
    /// the chunk's charge (a client may have charged or released through it; then it is
    /// settled anew).
    fn as_pool_record(&self, mut rec: VmRecord, target: usize) -> Option<VmRecord> {
        let p = &self.cfg.pools[target];
        let class = class_of(p.page_size).unwrap_or(4096);
        if rec.rename(ZEROING_NAME).is_err() {
            return None;
        }
        if rec.total() != p.chunk || rec.charged(p.node, class) != p.chunk {
            eprintln!(
                "numapin serve: a returned record holds {} (the chunk is {}); charging it anew",
                format_bytes(rec.total()),
                format_bytes(p.chunk)
            );
            return None;
        }
        rec.set_populated(p.chunk);
        Some(rec)
    }

    /// Zeroes one returned chunk (on the node's CPUs, at idle priority) and puts it back warm.
    /// Its charge is the service's throughout (taken back before zeroing).
    fn recycle_one(&self) {
        let picked = {
            let mut chunks = self.chunks();
            chunks
                .iter_mut()
                .find(|c| matches!(c.state, State::Returned(_)))
                .map(|c| {
                    let State::Returned(rec) = std::mem::replace(&mut c.state, State::Busy) else {
                        unreachable!("matched Returned")
                    };
                    (c.file.as_raw_fd(), c.target, rec)
                })
        };
        let Some((raw, target, rec)) = picked else {
            return;
        };
        let p = self.cfg.pools[target].clone();
        let cpus = &self.cpus[target];
        let saved = crate::sys::affinity().ok();
        if !cpus.is_empty() {
            let _ = crate::sys::set_affinity(cpus);
        }
        let zeroed = {
            let chunks = self.chunks();
            chunks
                .iter()
                .find(|c| c.file.as_raw_fd() == raw)
                .and_then(|c| c.file.try_clone().ok())
        }
        .map(|f| zero::zero_file(f.as_fd()));
        if let Some(s) = saved {
            let _ = crate::sys::set_affinity(&s);
        }
        match zeroed {
            Some(Ok((secs, cpu))) => self.stat(|s| {
                s.zeroed_bytes += p.chunk;
                s.zero_seconds += secs;
                s.zero_cpu_seconds += cpu;
            }),
            other => {
                eprintln!(
                    "numapin serve: zeroing a returned chunk failed ({other:?}); dropping it"
                );
                self.remove(raw);
                return; // `rec` drops here: its charge goes with the memory
            }
        }
        let rec = match rec {
            Some(rec) => Ok(rec),
            // The record was lost or freed by its holder: settle any dead one first, so the
            // bytes are not counted twice, then charge the chunk anew.
            None => {
                let _ = self.ledger().reap();
                self.ledger().vm(ZEROING_NAME).and_then(|mut r| {
                    r.try_charge(p.node, class_of(p.page_size).unwrap_or(4096), p.chunk)
                        .map(|()| {
                            r.set_populated(p.chunk);
                            r
                        })
                })
            }
        };
        let warm = rec.and_then(|mut rec| {
            // Named warm and made servable at once, under the lock hand-outs take: whoever sees
            // the warm record in the ledger and then asks gets this chunk.
            let mut chunks = self.chunks();
            rec.rename(WARM_NAME)?;
            if let Some(c) = chunks.iter_mut().find(|c| c.file.as_raw_fd() == raw) {
                // A record charged anew may hold a lock above the file: keep the memory above
                // its lock (`shared::keep_above`), so that were the service to die, the memory
                // goes before the charge.
                if let Some(l) = rec.lock_raw_fd().filter(|&l| l > raw) {
                    if let Ok(f) = rustix::io::fcntl_dupfd_cloexec(&c.file, l + 1) {
                        c.file = f;
                    }
                }
                c.state = State::Warm(rec);
            }
            Ok(())
        });
        if let Err(e) = warm {
            eprintln!("numapin serve: a returned chunk cannot be charged again ({e}); freeing it");
            self.remove(raw);
        }
    }

    fn remove(&self, raw: i32) {
        let mut chunks = self.chunks();
        chunks.retain(|c| c.file.as_raw_fd() != raw);
        drop(chunks);
        self.stat(|s| s.dropped += 1);
    }

    /// Drops warm chunks above a pool's target, fresh ones first (recycled ones were zeroed
    /// already, and keeping them proves nothing is lost).
    fn trim(&self) {
        for (t, p) in self.cfg.pools.iter().enumerate() {
            let mut chunks = self.chunks();
            let held = chunks
                .iter()
                .filter(|c| c.target == t && !matches!(c.state, State::Out(_)))
                .count();
            let mut excess = held.saturating_sub(p.count as usize);
            while excess > 0 {
                let Some(i) = chunks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.target == t && matches!(c.state, State::Warm(_)))
                    .min_by_key(|(_, c)| c.generation)
                    .map(|(i, _)| i)
                else {
                    break;
                };
                chunks.remove(i);
                excess -= 1;
                self.stat(|s| s.dropped += 1);
            }
        }
    }

    /// Makes one new warm chunk for the first pool below its target.
    fn refill_one(&self) {
        let want = {
            let chunks = self.chunks();
            self.cfg.pools.iter().enumerate().find(|(t, p)| {
                chunks
                    .iter()
                    .filter(|c| c.target == *t && !matches!(c.state, State::Out(_)))
                    .count()
                    < p.count as usize
            })
        };
        let Some((t, p)) = want else { return };
        let t0 = Instant::now();
        let r = Reservation::builder(p.chunk)
            .node(p.node)
            .page_size(p.page_size)
            .shared(true)
            .ledger(Arc::clone(self.ledger()))
            // Warm only once it can be handed out (the kernel zeroes it meanwhile).
            .vm(ZEROING_NAME)
            .build();
        match r.map(Reservation::into_fd) {
            Ok(Ok((file, Some(mut rec)))) => {
                let mut chunks = self.chunks();
                if let Err(e) = rec.rename(WARM_NAME) {
                    eprintln!("numapin serve: refill: {e}");
                    return;
                }
                chunks.push(Chunk {
                    target: t,
                    file,
                    state: State::Warm(rec),
                    generation: 0,
                    recheck: None,
                });
                drop(chunks);
                self.stat(|s| {
                    s.refilled_bytes += p.chunk;
                    s.refill_seconds += t0.elapsed().as_secs_f64();
                });
            }
            Ok(_) => eprintln!("numapin serve: refill made a reservation without file or record"),
            Err(e) => {
                eprintln!(
                    "numapin serve: cannot refill pool {}:{}:{}: {e}; retrying in 1 s",
                    p.node,
                    p.page_size,
                    format_bytes(p.chunk)
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
