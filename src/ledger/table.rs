//! The shared layout of a ledger and the lock-free algorithm over it.
//!
//! Everything here reads words that another (possibly hostile or crashed) process may have
//! written, so every value read is checked before it is used as an index or in arithmetic; a
//! bad value becomes [`Bad`], which the caller turns into `Error::LedgerInvalid`. Offsets are
//! computed from the geometry validated once at open and kept in this process ([`Geometry`]),
//! never re-read from the file. See docs/ledger.md for the layout and the correctness argument.

use super::region::Region;
use crate::sync::{AtomicU128, AtomicU64, Ordering};

/// `"NUMAPLDG"` read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"NUMAPLDG");
/// Layout version.
pub(crate) const VERSION: u64 = 1;
/// Header bytes.
pub(crate) const HEADER_LEN: usize = 128;
/// One class descriptor (read-mostly) and one class counter (hot) each take a cache line.
pub(crate) const LINE: usize = 64;
/// Fixed part of a VM slot, before the per-class charges.
const SLOT_FIXED: usize = 144;
/// Most classes a ledger may have.
pub(crate) const MAX_CLASSES: u64 = 1024;
/// Most VM slots (the counter's tag holds `slot + 1` in 12 bits).
pub(crate) const MAX_SLOTS: u64 = 4095;
/// Largest byte count a counter or charge may hold (52 bits: 4 PiB).
pub(crate) const MAX_BYTES: u64 = (1 << 52) - 1;
/// Longest VM name in bytes.
pub(crate) const NAME_MAX: usize = 64;

// Header words (byte offsets).
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 8;
pub(crate) const H_CLASSES: usize = 16;
pub(crate) const H_SLOTS: usize = 24;
pub(crate) const H_LEN: usize = 32;
pub(crate) const H_PIDNS: usize = 40;

// Class descriptor words.
pub(crate) const D_NODE: usize = 0;
pub(crate) const D_PAGE: usize = 8;
pub(crate) const D_CAPACITY: usize = 16;
pub(crate) const D_RESERVE: usize = 24;
pub(crate) const D_HEADROOM_PPM: usize = 32;
pub(crate) const D_LIMIT: usize = 40;

// Slot words.
const S_OWNER: usize = 0;
const S_INTENT_SEQ: usize = 8;
const S_INTENT: usize = 16; // two words: intent buffers for even and odd sequence numbers
const S_DONE: usize = 32;
const S_POPULATED: usize = 40;
const S_GUEST_USED: usize = 48;
const S_GUEST_PEAK: usize = 56;
const S_NAME_LEN: usize = 64;
const S_NAME: usize = 72; // NAME_MAX bytes
const S_CHARGED: usize = SLOT_FIXED;

/// Owner word: bit 63 = held by a reaper; bits 41..63 = pid; bits 0..41 = start time (ticks).
pub(crate) const OWNER_REAPING: u64 = 1 << 63;
const OWNER_PID_SHIFT: u32 = 41;
const OWNER_START_MASK: u64 = (1 << OWNER_PID_SHIFT) - 1;
const OWNER_PID_MASK: u64 = (1 << 22) - 1;

/// A value read from the file was out of range; the string says which.
#[derive(Debug)]
pub(crate) struct Bad {
    what: &'static str,
    a: u64,
    b: u64,
}

impl Bad {
    /// The message: what is wrong and the two numbers involved.
    pub(crate) fn text(&self) -> String {
        format!("{} (values {}, {})", self.what, self.a, self.b)
    }
}

pub(crate) type R<T> = std::result::Result<T, Bad>;

/// A plain value, cheap to return on the fast path (no allocation, no drop).
#[cold]
fn bad<T>(what: &'static str, a: u64, b: u64) -> R<T> {
    Err(Bad { what, a, b })
}

/// Packs a process identity into an owner word.
pub(crate) fn owner_word(pid: u32, start_time: u64) -> Option<u64> {
    if u64::from(pid) > OWNER_PID_MASK || start_time > OWNER_START_MASK || pid == 0 {
        return None;
    }
    Some((u64::from(pid) << OWNER_PID_SHIFT) | start_time)
}

/// The pid and start time of an owner word.
pub(crate) fn owner_parts(w: u64) -> (u32, u64) {
    (
        ((w >> OWNER_PID_SHIFT) & OWNER_PID_MASK) as u32,
        w & OWNER_START_MASK,
    )
}

/// A class counter: bytes reserved (52 bits) and the tag of the operation that wrote it last
/// (slot + 1 in 12 bits, 0 = none; that slot's operation sequence number in the high word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    pub(crate) bytes: u64,
    /// `slot + 1`, or 0.
    pub(crate) tag_slot: u64,
    pub(crate) tag_seq: u64,
}

impl Counter {
    pub(crate) fn decode(w: u128) -> Counter {
        let low = w as u64;
        Counter {
            bytes: low & MAX_BYTES,
            tag_slot: low >> 52,
            tag_seq: (w >> 64) as u64,
        }
    }
    pub(crate) fn encode(self) -> u128 {
        (u128::from(self.tag_seq) << 64) | u128::from((self.tag_slot << 52) | self.bytes)
    }
}

/// The geometry of a ledger, validated once and kept in process memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) classes: usize,
    pub(crate) slots: usize,
}

impl Geometry {
    pub(crate) fn desc_off(&self, c: usize) -> usize {
        HEADER_LEN + c * LINE
    }
    pub(crate) fn ctr_off(&self, c: usize) -> usize {
        HEADER_LEN + (self.classes + c) * LINE
    }
    pub(crate) fn slot_stride(&self) -> usize {
        (SLOT_FIXED + 8 * self.classes).div_ceil(LINE) * LINE
    }
    pub(crate) fn slot_off(&self, s: usize) -> usize {
        HEADER_LEN + 2 * self.classes * LINE + s * self.slot_stride()
    }
    /// Total bytes of a ledger of this geometry.
    pub(crate) fn len(&self) -> usize {
        self.slot_off(self.slots)
    }
    /// Checks header counts; `None` when they are out of range.
    pub(crate) fn new(classes: u64, slots: u64) -> Option<Geometry> {
        if classes == 0 || classes > MAX_CLASSES || slots == 0 || slots > MAX_SLOTS {
            return None;
        }
        Some(Geometry {
            classes: classes as usize,
            slots: slots as usize,
        })
    }
}

/// A ledger's memory plus its validated geometry: the algorithm.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) region: Region,
    pub(crate) geo: Geometry,
}

impl Table {
    #[inline]
    pub(crate) fn w(&self, off: usize) -> R<&AtomicU64> {
        match self.region.w64(off) {
            Some(w) => Ok(w),
            None => bad(
                "word at offset outside the mapping (offset, length)",
                off as u64,
                self.region.len() as u64,
            ),
        }
    }

    /// A header or descriptor word (read with Acquire: written once at creation or by an
    /// operator changing capacity, published by the file's creation/`link`).
    #[inline]
    pub(crate) fn load(&self, off: usize) -> R<u64> {
        Ok(self.w(off)?.load(Ordering::Acquire))
    }

    pub(crate) fn store(&self, off: usize, v: u64) -> R<()> {
        self.w(off)?.store(v, Ordering::Release);
        Ok(())
    }

    #[inline]
    pub(crate) fn counter(&self, c: usize) -> R<&AtomicU128> {
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        match self.region.w128(self.geo.ctr_off(c)) {
            Some(w) => Ok(w),
            None => bad(
                "counter outside the mapping (class, length)",
                c as u64,
                self.region.len() as u64,
            ),
        }
    }

    /// Byte offset of slot `s`.
    #[inline]
    fn slot_base(&self, s: usize) -> R<usize> {
        if s >= self.geo.slots {
            return bad(
                "slot index out of range (index, slots)",
                s as u64,
                self.geo.slots as u64,
            );
        }
        Ok(self.geo.slot_off(s))
    }

    #[inline]
    fn slot_word(&self, s: usize, field: usize) -> R<&AtomicU64> {
        if s >= self.geo.slots {
            return bad(
                "slot index out of range (index, slots)",
                s as u64,
                self.geo.slots as u64,
            );
        }
        self.w(self.geo.slot_off(s) + field)
    }

    #[inline]
    fn charged_word(&self, s: usize, c: usize) -> R<&AtomicU64> {
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        self.slot_word(s, S_CHARGED + 8 * c)
    }

    /// Reads a counter, checking its tag.
    pub(crate) fn read_counter(&self, c: usize) -> R<Counter> {
        // Acquire: pairs with the AcqRel CAS that wrote it, so that the `done` marks its writer
        // made before (helping) are visible to what we read next.
        let k = Counter::decode(self.counter(c)?.load(Ordering::Acquire));
        if k.tag_slot > self.geo.slots as u64 {
            return bad(
                "counter tagged with slot out of range (class, slot + 1)",
                c as u64,
                k.tag_slot,
            );
        }
        Ok(k)
    }

    #[inline]
    pub(crate) fn limit(&self, c: usize) -> R<u64> {
        let l = self.load(self.geo.desc_off(c) + D_LIMIT)?;
        if l > MAX_BYTES {
            return bad("limit out of range (class, limit)", c as u64, l);
        }
        Ok(l)
    }

    // ---- slots --------------------------------------------------------------------------

    pub(crate) fn owner(&self, s: usize) -> R<u64> {
        // Acquire: pairs with the Release that freed or claimed the slot.
        Ok(self.slot_word(s, S_OWNER)?.load(Ordering::Acquire))
    }

    /// Claims slot `s` for `me` if it is free (`expect` = 0) or held by the dead `expect`.
    pub(crate) fn claim(&self, s: usize, expect: u64, me: u64) -> R<bool> {
        // AcqRel: acquire what the previous holder wrote before it freed the slot (or, for a
        // dead holder, whatever it published); release nothing yet.
        Ok(self
            .slot_word(s, S_OWNER)?
            .compare_exchange(expect, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok())
    }

    /// Frees slot `s` held by `me`; false if someone else holds it.
    pub(crate) fn free(&self, s: usize, me: u64) -> R<bool> {
        // Release: everything we wrote to the slot happens-before the next claim.
        Ok(self
            .slot_word(s, S_OWNER)?
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok())
    }

    /// The first sequence number a new holder of slot `s` may use.
    pub(crate) fn next_seq(&self, s: usize) -> R<u64> {
        let a = self.slot_word(s, S_INTENT_SEQ)?.load(Ordering::Acquire);
        let b = self.slot_word(s, S_DONE)?.load(Ordering::Acquire);
        // Sequence numbers grow by one per operation: 2^63 of them cannot have happened, so a
        // larger one is corruption (and would overflow the holder's `seq += 1` later).
        match a.max(b).checked_add(1) {
            Some(n) if n < 1 << 63 => Ok(n),
            _ => bad(
                "sequence number out of range (slot, seq)",
                s as u64,
                a.max(b),
            ),
        }
    }

    pub(crate) fn charged(&self, s: usize, c: usize) -> R<u64> {
        let v = self.charged_word(s, c)?.load(Ordering::Acquire);
        if v > MAX_BYTES {
            return bad("charge out of range (slot, bytes)", s as u64, v);
        }
        Ok(v)
    }

    pub(crate) fn set_name(&self, s: usize, name: &str) -> R<()> {
        let b = name.as_bytes();
        let n = b.len().min(NAME_MAX);
        for i in 0..NAME_MAX / 8 {
            let mut w = [0u8; 8];
            for (j, x) in w.iter_mut().enumerate() {
                if let Some(&c) = b[..n].get(i * 8 + j) {
                    *x = c;
                }
            }
            self.slot_word(s, S_NAME + 8 * i)?
                .store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        // Release: the name bytes before the length that publishes them.
        self.slot_word(s, S_NAME_LEN)?
            .store(n as u64, Ordering::Release);
        Ok(())
    }

    pub(crate) fn name(&self, s: usize) -> R<String> {
        let n = self.slot_word(s, S_NAME_LEN)?.load(Ordering::Acquire);
        if n > NAME_MAX as u64 {
            return bad("name length out of range (slot, length)", s as u64, n);
        }
        let mut bytes = Vec::with_capacity(NAME_MAX);
        for i in 0..NAME_MAX / 8 {
            let w = self.slot_word(s, S_NAME + 8 * i)?.load(Ordering::Relaxed);
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        bytes.truncate(n as usize);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub(crate) fn set_stat(&self, s: usize, which: Stat, v: u64) -> R<()> {
        let f = match which {
            Stat::Populated => S_POPULATED,
            Stat::GuestUsed => S_GUEST_USED,
            Stat::GuestPeak => S_GUEST_PEAK,
        };
        self.slot_word(s, f)?.store(v, Ordering::Relaxed);
        Ok(())
    }

    /// Raises a statistic to `v` if it is lower (for peaks: writers may race).
    pub(crate) fn raise_stat(&self, s: usize, which: Stat, v: u64) -> R<()> {
        let f = match which {
            Stat::Populated => S_POPULATED,
            Stat::GuestUsed => S_GUEST_USED,
            Stat::GuestPeak => S_GUEST_PEAK,
        };
        self.slot_word(s, f)?.fetch_max(v, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn stat(&self, s: usize, which: Stat) -> R<u64> {
        let f = match which {
            Stat::Populated => S_POPULATED,
            Stat::GuestUsed => S_GUEST_USED,
            Stat::GuestPeak => S_GUEST_PEAK,
        };
        Ok(self.slot_word(s, f)?.load(Ordering::Relaxed))
    }

    /// Clears a slot's descriptive fields (its charges must be zero already).
    pub(crate) fn clear_info(&self, s: usize) -> R<()> {
        self.slot_word(s, S_NAME_LEN)?.store(0, Ordering::Relaxed);
        for st in [Stat::Populated, Stat::GuestUsed, Stat::GuestPeak] {
            self.set_stat(s, st, 0)?;
        }
        Ok(())
    }

    // ---- the algorithm --------------------------------------------------------------------

    /// Makes sure the operation `(slot, seq)` that wrote a counter we are about to overwrite is
    /// recorded as applied in its slot (`done >= seq`), so that its effect stays known after
    /// the tag disappears from the counter. Idempotent; anyone may do it.
    #[inline]
    fn help(&self, tag_slot: u64, tag_seq: u64) -> R<()> {
        let s = (tag_slot - 1) as usize;
        let done = self.slot_word(s, S_DONE)?;
        // Acquire: if it is already marked, our later CAS is ordered after that mark.
        if done.load(Ordering::Acquire) < tag_seq {
            // AcqRel: the mark must be visible to whoever reads the counter word we write next
            // (our CAS is AcqRel and sequenced after this).
            done.fetch_max(tag_seq, Ordering::AcqRel);
        }
        Ok(())
    }

    /// One operation of the holder of slot `s`: move its charge on class `c` from `from` to
    /// `to` bytes, and the class counter by the same amount.
    ///
    /// Protocol (see docs/ledger.md): (1) publish the intent `(c, to)` under sequence number
    /// `seq` in the slot; (2) CAS the counter, tagging it with `(s, seq)`, after helping the
    /// operation whose tag it replaces; (3) store the new charge and mark `done = seq`. A crash
    /// anywhere leaves the slot resolvable by [`Table::resolve`].
    ///
    /// Returns `Ok(Err(reserved))` when a charge does not fit under `limit` (the counter is
    /// then untouched: nothing to undo).
    ///
    /// `guess` is the counter word the caller expects (the one it wrote last): when right, the
    /// compare-exchange needs no load before it; when wrong, the failed exchange returns the
    /// current word. On success returns the word written.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn apply(
        &self,
        s: usize,
        seq: u64,
        c: usize,
        from: u64,
        to: u64,
        limit: Option<u64>,
        guess: Option<u128>,
        crash: Crash,
    ) -> R<Result<u128, u64>> {
        if to > MAX_BYTES || from > MAX_BYTES {
            return bad(
                "charge larger than the ledger can hold (from, to)",
                from,
                to,
            );
        }
        let ctr = self.counter(c)?;
        let base = self.slot_base(s)?;
        let charged = self.w(base + S_CHARGED + 8 * c)?;
        let done = self.w(base + S_DONE)?;
        // (1) Intent: buffer by parity of seq so that writing the next intent never clobbers
        // the one a reaper may be reading for the published seq.
        self.w(base + S_INTENT + 8 * (seq as usize & 1))?
            .store(((c as u64) << 52) | to, Ordering::Relaxed);
        // Release: the intent buffer before the seq that names it. The CAS below is AcqRel,
        // so both are visible before the counter changes.
        self.w(base + S_INTENT_SEQ)?.store(seq, Ordering::Release);
        if crash == Crash::AfterIntent {
            return Ok(Ok(0));
        }
        // (2) The counter.
        // `fresh`: `cur` was read from the counter (a guess may be stale, and a refusal or an
        // error must be judged on a real reading, never on a guess).
        let (mut cur, mut fresh) = match guess {
            Some(g) => (g, false),
            None => (ctr.load(Ordering::Acquire), true),
        };
        loop {
            let k = Counter::decode(cur);
            let bytes = if k.tag_slot > self.geo.slots as u64 {
                None
            } else if to >= from {
                match k.bytes.checked_add(to - from) {
                    Some(b) if b <= MAX_BYTES => Some(b),
                    // Past what a counter holds is past every limit (limits are at most
                    // MAX_BYTES): under admission that is a refusal, not corruption.
                    _ if limit.is_some() => Some(u64::MAX),
                    _ => None,
                }
            } else {
                k.bytes.checked_sub(from - to)
            };
            let refused = matches!((bytes, limit), (Some(b), Some(l)) if to >= from && b > l);
            let bytes = match bytes {
                Some(b) if !refused => b,
                _ if !fresh => {
                    cur = ctr.load(Ordering::Acquire);
                    fresh = true;
                    continue;
                }
                Some(_) => return Ok(Err(k.bytes)),
                None => {
                    return bad(
                        "counter cannot move by the charge: less than released, over 4 PiB, or tagged with a bad slot (counter bytes, change)",
                        k.bytes,
                        to.abs_diff(from),
                    )
                }
            };
            if k.tag_slot != 0 && k.tag_slot - 1 != s as u64 {
                self.help(k.tag_slot, k.tag_seq)?;
            }
            let new = Counter {
                bytes,
                tag_slot: s as u64 + 1,
                tag_seq: seq,
            }
            .encode();
            // AcqRel: release our intent and our help marks to whoever reads this word;
            // acquire the marks and intents of the writer we replace. Weak: we loop anyway.
            match ctr.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    cur = new;
                    break;
                }
                Err(seen) => {
                    cur = seen;
                    fresh = true;
                }
            }
        }
        if crash == Crash::AfterCounter {
            return Ok(Ok(cur));
        }
        // (3) Commit in the slot: the charge, then the mark.
        charged.store(to, Ordering::Release);
        if crash == Crash::AfterCharge {
            return Ok(Ok(cur));
        }
        done.store(seq, Ordering::Release);
        Ok(Ok(cur))
    }

    /// The word offsets one holder uses for one class, validated once (see [`Lane`]).
    pub(crate) fn lane(&self, s: usize, c: usize) -> R<Lane> {
        let base = self.slot_base(s)?;
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        let l = Lane {
            ctr: self.geo.ctr_off(c),
            limit: self.geo.desc_off(c) + D_LIMIT,
            charged: base + S_CHARGED + 8 * c,
            intent: [base + S_INTENT, base + S_INTENT + 8],
            seq: base + S_INTENT_SEQ,
            done: base + S_DONE,
            tag: s as u64 + 1,
            class_bits: (c as u64) << 52,
        };
        // Every offset inside the mapping, so that the fast path's lookups cannot fail after
        // its compare-exchange.
        self.counter(c)?;
        for off in [l.limit, l.charged, l.intent[0], l.intent[1], l.seq, l.done] {
            self.w(off)?;
        }
        Ok(l)
    }

    /// The common case of [`Table::apply`], in as few instructions as it takes: the counter
    /// still holds the word this holder wrote last (`guess`), no other operation's tag is to be
    /// helped, the result fits. The same steps as `apply` (intent, one compare-exchange, commit)
    /// minus the cases it declines: then it returns `None` before touching the counter, having
    /// only published an intent that `apply`, called next with the same `seq`, publishes again.
    #[inline]
    pub(crate) fn fast_apply(
        &self,
        l: &Lane,
        seq: u64,
        from: u64,
        to: u64,
        guess: u128,
    ) -> Option<u128> {
        let r = &self.region;
        let ctr = r.w128(l.ctr)?;
        let charged = r.w64(l.charged)?;
        let done = r.w64(l.done)?;
        let k = Counter::decode(guess);
        if k.tag_slot != l.tag || to > MAX_BYTES {
            return None;
        }
        let bytes = if to >= from {
            let limit = r.w64(l.limit)?.load(Ordering::Acquire);
            let b = k.bytes.checked_add(to - from)?;
            if b > limit || b > MAX_BYTES {
                return None;
            }
            b
        } else {
            k.bytes.checked_sub(from - to)?
        };
        // (1) Intent, as in `apply`.
        r.w64(l.intent[seq as usize & 1])?
            .store(l.class_bits | to, Ordering::Relaxed);
        r.w64(l.seq)?.store(seq, Ordering::Release);
        // (2) One compare-exchange from the guess; any failure goes to `apply`.
        let new = Counter {
            bytes,
            tag_slot: l.tag,
            tag_seq: seq,
        }
        .encode();
        ctr.compare_exchange(guess, new, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        // (3) Commit, as in `apply`.
        charged.store(to, Ordering::Release);
        done.store(seq, Ordering::Release);
        Some(new)
    }

    /// Settles the last operation of slot `s`, whose holder is dead (so nothing changes the
    /// slot's own words any more except `done`, raised by helpers): if it reached the counter,
    /// its charge becomes the slot's charge; if not, the slot's charge stays as it was. Returns
    /// the sequence number after which the new holder continues.
    pub(crate) fn resolve(&self, s: usize) -> R<u64> {
        let p = self.slot_word(s, S_INTENT_SEQ)?.load(Ordering::Acquire);
        let next = self.next_seq(s)?;
        if p == 0 {
            return Ok(next);
        }
        let intent = self
            .slot_word(s, S_INTENT + 8 * (p as usize & 1))?
            .load(Ordering::Acquire);
        let c = (intent >> 52) as usize;
        let to = intent & MAX_BYTES;
        if c >= self.geo.classes {
            return bad(
                "intent names a class out of range (slot, class)",
                s as u64,
                c as u64,
            );
        }
        let done = self.slot_word(s, S_DONE)?;
        let mut applied = done.load(Ordering::Acquire) >= p;
        if !applied {
            // The counter first, then `done` again: whoever overwrote our tag marked `done`
            // before its CAS, and our Acquire load of that CAS (or a later one) makes the mark
            // visible to the second load.
            let k = self.read_counter(c)?;
            applied =
                (k.tag_slot == s as u64 + 1 && k.tag_seq == p) || done.load(Ordering::Acquire) >= p;
        }
        if applied {
            self.charged_word(s, c)?.store(to, Ordering::Release);
            done.fetch_max(p, Ordering::AcqRel);
        }
        Ok(next)
    }
}

/// Where an operation stops, to simulate its process dying there (tests and loom models);
/// `Never` in real use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Run the whole operation.
    Never,
    /// Stop after publishing the intent, before the counter.
    AfterIntent,
    /// Stop after the counter moved, before the slot's charge is stored.
    AfterCounter,
    /// Stop after the slot's charge is stored, before `done` is marked.
    AfterCharge,
}

/// Byte offsets of the words one slot holder uses for one class, computed and bounds-checked
/// once when the holder claims the slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lane {
    ctr: usize,
    limit: usize,
    charged: usize,
    intent: [usize; 2],
    seq: usize,
    done: usize,
    /// `slot + 1`, as the counter's tag holds it.
    tag: u64,
    /// The class index shifted into the intent word.
    class_bits: u64,
}

/// The per-VM statistics a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Populated,
    GuestUsed,
    GuestPeak,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_round_trips() {
        let k = Counter {
            bytes: MAX_BYTES,
            tag_slot: MAX_SLOTS,
            tag_seq: u64::MAX,
        };
        assert_eq!(Counter::decode(k.encode()), k);
    }

    #[test]
    fn owner_word_round_trips() {
        let w = owner_word(4_194_303, (1 << 41) - 1).unwrap();
        assert_eq!(owner_parts(w), (4_194_303, (1 << 41) - 1));
        assert_eq!(w & OWNER_REAPING, 0);
        assert!(owner_word(1 << 22, 0).is_none());
        assert!(owner_word(0, 5).is_none());
    }

    #[test]
    fn geometry_bounds() {
        assert!(Geometry::new(0, 1).is_none());
        assert!(Geometry::new(1, MAX_SLOTS + 1).is_none());
        let g = Geometry::new(MAX_CLASSES, MAX_SLOTS).unwrap();
        assert!(g.len() < 64 << 20);
        assert_eq!(g.slot_stride() % LINE, 0);
    }
}
