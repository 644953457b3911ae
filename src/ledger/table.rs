//! The shared layout of a ledger and the lock-free algorithm over it.
//!
//! Everything here reads words that another (possibly hostile or crashed) process may have
//! written, so every value read is checked before it is used as an index or in arithmetic; a
//! bad value becomes [`Bad`], which the caller turns into `Error::LedgerInvalid`. Offsets are
//! computed from the geometry validated once at open and kept in this process ([`Geometry`]),
//! never re-read from the file. See docs/ledger.md for the layout and the correctness argument.

use std::ptr::NonNull;

use super::region::Region;
use crate::sync::{AtomicU64, Ordering};

pub(crate) use super::layout::{
    owner_parts, owner_word, Bad, Counter, Geometry, Word, D_CAPACITY, D_HEADROOM_PPM, D_LIMIT,
    D_NODE, D_PAGE, D_RESERVE, HEADER_LEN, H_CLASSES, H_LEN, H_MAGIC, H_PIDNS, H_SLOTS, H_VERSION,
    MAGIC, MAX_BYTES, MAX_CLASSES, MAX_SLOTS, MAX_TOTAL, NAME_MAX, OWNER_REAPING, R, UNIT, VERSION,
};

use super::layout::*;

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

    /// Counter `k` of class `c` (`CHARGED` or `RELEASED`).
    #[inline]
    pub(crate) fn counter(&self, c: usize, k: usize) -> R<&AtomicU64> {
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        self.w(self.geo.ctr_off(c, k))
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

    /// The mark of slot `s` for counter `k` of class `c`: the largest word of `s` on that
    /// counter known to have been replaced by someone else (raised by `fetch_max` only).
    #[inline]
    fn applied_word(&self, s: usize, c: usize, k: usize) -> R<&AtomicU64> {
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        self.slot_word(s, self.geo.marks_off() + 16 * c + 8 * (k & 1))
    }

    /// Reads one counter word, checking its tag.
    fn read_word(&self, c: usize, k: usize) -> R<u64> {
        // Acquire: pairs with the AcqRel CAS that wrote it, so that the marks its writer made
        // before (helping) are visible to what we read next.
        let w = self.counter(c, k)?.load(Ordering::Acquire);
        if Word::decode(w).tag > self.geo.slots as u64 {
            return bad(
                "counter tagged with slot out of range (class, slot + 1)",
                c as u64,
                Word::decode(w).tag,
            );
        }
        Ok(w)
    }

    /// Reads a class's two counters at one moment: charged, then released, then charged again
    /// until it did not move (a total never recurs, so an unchanged word means nothing was
    /// charged in between, and `charged - released` held when `released` was read). Gives up
    /// after a bounded number of tries under constant churn and judges the last reading.
    pub(crate) fn read_counter(&self, c: usize) -> R<Counter> {
        let mut ch = self.read_word(c, CHARGED)?;
        let mut tries = 0;
        loop {
            let rel = self.read_word(c, RELEASED)?;
            let again = self.read_word(c, CHARGED)?;
            tries += 1;
            if again == ch || tries >= 64 {
                let (charged, released) = (Word::decode(ch).total, Word::decode(rel).total);
                return match charged
                    .checked_sub(released)
                    .and_then(|u| u.checked_mul(UNIT))
                {
                    Some(bytes) if bytes <= MAX_BYTES => Ok(Counter { bytes }),
                    _ => bad(
                        "class counters out of range: released more than charged, or over 4 PiB reserved (charged, released)",
                        charged,
                        released,
                    ),
                };
            }
            ch = again;
        }
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
        // Sequence numbers grow by one per operation: 2^63 of them cannot have happened, so a
        // larger one is corruption (and would overflow the holder's `seq += 1` later).
        match a.checked_add(1) {
            Some(n) if n < 1 << 63 => Ok(n),
            _ => bad("sequence number out of range (slot, seq)", s as u64, a),
        }
    }

    pub(crate) fn charged(&self, s: usize, c: usize) -> R<u64> {
        let v = self.charged_word(s, c)?.load(Ordering::Acquire);
        if v > MAX_BYTES || v % UNIT != 0 {
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

    /// Records that the operation of slot `t` which wrote `word` on counter `k` of class `c`
    /// was applied, because we are about to replace `word` and with it the counter's evidence.
    /// True whoever calls it and however late: the caller read `word` from the counter, so it
    /// was written; `fetch_max` never lowers a mark. Idempotent.
    #[inline]
    fn mark(&self, t: usize, c: usize, k: usize, word: u64) -> R<()> {
        let a = self.applied_word(t, c, k)?;
        // Acquire: if already marked, our later CAS is ordered after that mark.
        if a.load(Ordering::Acquire) < word {
            // AcqRel: the mark must be visible to whoever reads the counter word we write next
            // (our CAS is AcqRel and sequenced after this).
            a.fetch_max(word, Ordering::AcqRel);
        }
        Ok(())
    }

    /// One operation of the holder of slot `s`: move its charge on class `c` from `from` to
    /// `to` bytes (multiples of [`UNIT`]): a charge adds the difference to the class's
    /// `charged` counter, a release to its `released` counter.
    ///
    /// Protocol (see docs/ledger.md): (1) publish the intent `(counter, to, new word)` under
    /// sequence number `seq` in the slot; (2) CAS the counter from the word read to the new
    /// word tagged with `s`, after marking the operation whose word it replaces as applied;
    /// (3) store the new charge. A crash anywhere leaves the slot resolvable by
    /// [`Table::resolve`].
    ///
    /// Returns `Ok(Err(reserved))` when a charge does not fit under `limit` (nothing was
    /// written to the counters then: nothing to undo).
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
        guess: Option<u64>,
        crash: Crash,
    ) -> R<Result<u64, u64>> {
        if to > MAX_BYTES || from > MAX_BYTES || to % UNIT != 0 || from % UNIT != 0 {
            return bad(
                "charge not a multiple of 4 KiB or larger than the ledger can hold (from, to)",
                from,
                to,
            );
        }
        if to == from {
            // Nothing moves; writing the same total again would break "a word never recurs".
            return Ok(Ok(0));
        }
        let k = if to > from { CHARGED } else { RELEASED };
        let d = to.abs_diff(from) / UNIT;
        let ctr = self.counter(c, k)?;
        let base = self.slot_base(s)?;
        let charged = self.w(base + S_CHARGED + 8 * c)?;
        let buf = base + S_INTENT + 16 * (seq as usize & 1);
        let (what_w, new_w) = (self.w(buf)?, self.w(buf + 8)?);
        let seq_w = self.w(base + S_INTENT_SEQ)?;
        let what = (((2 * c + k) as u64) << 52) | to;
        let tag = s as u64 + 1;
        // `fresh`: `cur` was read from the counter (a guess may be stale, and a refusal or an
        // error must be judged on a real reading, never on a guess).
        let (mut cur, mut fresh) = match guess {
            Some(g) => (g, false),
            None => (self.read_word(c, k)?, true),
        };
        let mut published = false;
        loop {
            let w = Word::decode(cur);
            if w.tag > self.geo.slots as u64 {
                if fresh {
                    return bad(
                        "counter tagged with slot out of range (class, slot + 1)",
                        c as u64,
                        w.tag,
                    );
                }
                (cur, fresh) = (self.read_word(c, k)?, true);
                continue;
            }
            let Some(total) = w.total.checked_add(d).filter(|&t| t <= MAX_TOTAL) else {
                if !fresh {
                    (cur, fresh) = (self.read_word(c, k)?, true);
                    continue;
                }
                return bad(
                    "class counter exhausted: 16 EiB moved through this class over the ledger's life; recreate the ledger file (total, change, in 4 KiB units)",
                    w.total,
                    d,
                );
            };
            if k == RELEASED {
                // Never more released than was charged: a record claiming more (a corrupted
                // or hostile file) is refused before it can wrap the class's reservation.
                // `charged` only grows, so a legitimate release always passes.
                let ch = Word::decode(self.read_word(c, CHARGED)?).total;
                if total > ch {
                    if !fresh {
                        (cur, fresh) = (self.read_word(c, k)?, true);
                        continue;
                    }
                    return bad(
                        "release of more than the class holds (released after, charged, in 4 KiB units)",
                        total,
                        ch,
                    );
                }
            }
            if let (CHARGED, Some(limit)) = (k, limit) {
                let rel = Word::decode(self.read_word(c, RELEASED)?).total;
                let now = w.total.checked_sub(rel).and_then(|u| u.checked_mul(UNIT));
                let after = now.and_then(|b| b.checked_add(to - from));
                if !matches!(after, Some(a) if a <= limit) {
                    // Judge only on a `charged` word that stayed put across the reading of
                    // `released` (a word never recurs: unchanged means nothing was charged in
                    // between, so `now` was the reservation when `released` was read). A
                    // confirmed guess qualifies too: we wrote it before reading `released`.
                    let again = self.read_word(c, CHARGED)?;
                    if again != cur {
                        (cur, fresh) = (again, true);
                        continue;
                    }
                    return match now {
                        Some(b) if b <= MAX_BYTES => Ok(Err(b)),
                        _ => bad(
                            "class counters out of range: released more than charged, or over 4 PiB reserved (charged, released)",
                            w.total,
                            rel,
                        ),
                    };
                }
            }
            if w.tag != 0 && w.tag != tag {
                self.mark((w.tag - 1) as usize, c, k, cur)?;
            }
            let new = Word { total, tag }.encode();
            // (1) Intent, by parity of seq so that writing the next intent never clobbers
            // the one a reaper may be reading for the published seq. A retry of the same
            // operation changes only the new word (one store), so a reaper never sees a mix.
            if published {
                new_w.store(new, Ordering::Release);
            } else {
                what_w.store(what, Ordering::Relaxed);
                new_w.store(new, Ordering::Relaxed);
                // Release: the buffer before the seq that names it. The CAS below is AcqRel,
                // so both are visible before the counter changes.
                seq_w.store(seq, Ordering::Release);
                published = true;
            }
            if crash == Crash::AfterIntent {
                return Ok(Ok(0));
            }
            // (2) AcqRel: release our intent and our marks to whoever reads this word; acquire
            // the marks and intents of the writer we replace. Weak: we loop anyway.
            match ctr.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    cur = new;
                    break;
                }
                Err(seen) => (cur, fresh) = (seen, true),
            }
        }
        if crash == Crash::AfterCounter {
            return Ok(Ok(cur));
        }
        // (3) Commit in the slot.
        charged.store(to, Ordering::Release);
        Ok(Ok(cur))
    }

    /// What a new holder of slot `s` (lock held, owner word claimed) continues from: settles the
    /// previous holder's last operation ([`Table::resolve`], a no-op if it committed) and reads
    /// the slot's charge in every class. Returns the next sequence number and the lanes.
    pub(crate) fn take_up(&self, s: usize) -> R<(u64, Vec<Lane>)> {
        let seq = self.resolve(s)?;
        let mut lanes = Vec::with_capacity(self.geo.classes);
        for c in 0..self.geo.classes {
            lanes.push(self.lane(s, c, self.charged(s, c)?)?);
        }
        Ok((seq, lanes))
    }

    /// The words one holder uses for one class, validated once (see [`Lane`]).
    pub(crate) fn lane(&self, s: usize, c: usize, charged: u64) -> R<Lane> {
        let base = self.slot_base(s)?;
        if c >= self.geo.classes {
            return bad(
                "class index out of range (index, classes)",
                c as u64,
                self.geo.classes as u64,
            );
        }
        let p = |off: usize| -> R<Word64> { Ok(Word64(NonNull::from(self.w(off)?))) };
        let (i0, i1) = (base + S_INTENT, base + S_INTENT + 16);
        Ok(Lane {
            ctr: [
                p(self.geo.ctr_off(c, CHARGED))?,
                p(self.geo.ctr_off(c, RELEASED))?,
            ],
            limit: p(self.geo.desc_off(c) + D_LIMIT)?,
            charge: p(base + S_CHARGED + 8 * c)?,
            intent: [[p(i0)?, p(i0 + 8)?], [p(i1)?, p(i1 + 8)?]],
            seq: p(base + S_INTENT_SEQ)?,
            tag: s as u64 + 1,
            what: [((2 * c) as u64) << 52, ((2 * c + 1) as u64) << 52],
            charged,
            last: [0; 2],
            released_seen: 0,
        })
    }

    /// Settles the last operation of slot `s`, whose holder is dead (so nothing changes the
    /// slot's own words any more except the marks, raised by others): if it reached its
    /// counter, its charge becomes the slot's charge; if not, the slot's charge stays as it
    /// was. Returns the sequence number after which the new holder continues.
    pub(crate) fn resolve(&self, s: usize) -> R<u64> {
        let p = self.slot_word(s, S_INTENT_SEQ)?.load(Ordering::Acquire);
        let next = self.next_seq(s)?;
        if p == 0 {
            return Ok(next);
        }
        let buf = S_INTENT + 16 * (p as usize & 1);
        let what = self.slot_word(s, buf)?.load(Ordering::Acquire);
        let new = self.slot_word(s, buf + 8)?.load(Ordering::Acquire);
        if new == 0 {
            // No operation writes a zero word (tags start at 1): an empty buffer, nothing to
            // settle.
            return Ok(next);
        }
        let ck = (what >> 52) as usize;
        let (c, k) = (ck / 2, ck % 2);
        let to = what & MAX_BYTES;
        if c >= self.geo.classes || to % UNIT != 0 {
            return bad(
                "intent names a class out of range or a charge not in 4 KiB units (slot, intent)",
                s as u64,
                what,
            );
        }
        if Word::decode(new).tag != s as u64 + 1 {
            return bad(
                "intent names a counter word of another slot (slot, word)",
                s as u64,
                new,
            );
        }
        // Applied iff `new` was ever the counter's word: it is now, or whoever replaced it
        // marked it first. The counter first, then the mark again: our Acquire load of the
        // replacing CAS (or a later one: every write to a counter is a read-modify-write, so
        // they continue its release sequence) makes that mark visible to the second load.
        let mark = self.applied_word(s, c, k)?;
        let applied = mark.load(Ordering::Acquire) >= new
            || self.read_word(c, k)? == new
            || mark.load(Ordering::Acquire) >= new;
        if applied {
            self.charged_word(s, c)?.store(to, Ordering::Release);
        }
        Ok(next)
    }
}

/// Where an operation stops, to simulate its process dying there (tests and loom models);
/// `Never` in real use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(test, loom, feature = "test-hooks")), allow(dead_code))]
pub enum Crash {
    /// Run the whole operation.
    Never,
    /// Stop after publishing the intent, before the counter.
    AfterIntent,
    /// Stop after the counter moved, before the slot's charge is stored.
    AfterCounter,
    /// Stop after the slot's charge is stored (the last step: the operation is complete).
    AfterCharge,
}

/// A word of the ledger's region, checked once (bounds, alignment) by [`Table::lane`].
#[derive(Debug, Clone, Copy)]
struct Word64(NonNull<AtomicU64>);

#[allow(unsafe_code)] // the ledger's one unsafe block: see docs/ledger.md, "Performance"
impl Word64 {
    #[inline(always)]
    fn get(&self) -> &AtomicU64 {
        // SAFETY: a `Word64` is made only by `Table::lane`, from a reference the region handed
        // out after checking bounds and alignment, so it points at an initialised, aligned
        // `AtomicU64` accessed only atomically (the region's invariant). The region lives as
        // long as its `Table`; a `Lane` is kept only inside the `VmRecord` that claimed it, and a
        // `VmRecord` holds an `Arc` of the ledger that owns that table, so the word outlives
        // every use.
        unsafe { self.0.as_ref() }
    }
}

// SAFETY: a `Word64` is a `&AtomicU64` without the lifetime (see `get`), and `&AtomicU64` is
// `Send` and `Sync`.
#[allow(unsafe_code)]
unsafe impl Send for Word64 {}
// SAFETY: as for `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for Word64 {}

/// What one slot holder uses for one class: the words, validated once when the holder claims
/// the slot (so the fast path does no bounds checks), and the holder's own view of them.
#[derive(Debug)]
pub(crate) struct Lane {
    /// The class's `charged` and `released` counters.
    ctr: [Word64; 2],
    limit: Word64,
    /// The slot's charge on the class.
    charge: Word64,
    /// The two intent buffers (`what`, `new`).
    intent: [[Word64; 2]; 2],
    seq: Word64,
    /// `slot + 1`, as a counter word's tag holds it.
    tag: u64,
    /// The intent's counter bits for a charge and for a release.
    what: [u64; 2],
    /// Our charge on the class (the slot holds the same; we are its only writer).
    pub(crate) charged: u64,
    /// The `charged` and `released` words we wrote last (0: none yet): the guess for the next
    /// compare-exchange on that counter.
    pub(crate) last: [u64; 2],
    /// A `released` total this holder saw (read or wrote): a lower bound of the current one,
    /// since it only grows.
    released_seen: u64,
}

impl Lane {
    /// The common case of [`Table::apply`], in as few instructions as it takes: move our
    /// charge to `to` with operation `seq` when the counter still holds the word we wrote last
    /// and the result fits. The same steps as `apply` (intent, one compare-exchange, commit)
    /// minus the cases it declines: then it returns false, having at most published an intent
    /// that `apply`, called next with the same `seq`, publishes again (same operation, so only
    /// the new word may differ).
    #[inline(always)]
    pub(crate) fn fast(&mut self, seq: u64, to: u64) -> bool {
        let from = self.charged;
        if to == from || to > MAX_BYTES {
            return false;
        }
        let k = usize::from(to < from);
        let guess = self.last[k];
        let g = Word::decode(guess);
        if g.tag != self.tag {
            return false;
        }
        let total = g.total + to.abs_diff(from) / UNIT;
        if total > MAX_TOTAL {
            return false;
        }
        if k == CHARGED {
            let limit = self.limit.get().load(Ordering::Acquire);
            let fits = |rel: u64| {
                let after = g
                    .total
                    .checked_sub(rel)
                    .and_then(|u| u.checked_mul(UNIT))
                    .and_then(|b| b.checked_add(to - from));
                matches!(after, Some(a) if a <= limit)
            };
            // `released` only grows, so judging on a total seen earlier over-estimates the
            // reservation: if the charge fits that way it fits now, and `released` (another
            // line, written by every release on the class) need not be read at all.
            if !fits(self.released_seen) {
                let rel = Word::decode(self.ctr[RELEASED].get().load(Ordering::Acquire)).total;
                self.released_seen = self.released_seen.max(rel);
                if !fits(rel) {
                    return false;
                }
            }
        }
        let new = Word {
            total,
            tag: self.tag,
        }
        .encode();
        // (1) Intent, as in `apply`.
        let buf = &self.intent[seq as usize & 1];
        buf[0].get().store(self.what[k] | to, Ordering::Relaxed);
        buf[1].get().store(new, Ordering::Relaxed);
        self.seq.get().store(seq, Ordering::Release);
        // (2) One compare-exchange from the guess; any failure goes to `apply`, with the
        // word seen as its guess (a foreign tag keeps this fast path out until we write again).
        if let Err(seen) =
            self.ctr[k]
                .get()
                .compare_exchange(guess, new, Ordering::AcqRel, Ordering::Acquire)
        {
            self.last[k] = seen;
            return false;
        }
        // (3) Commit, as in `apply`.
        self.charge.get().store(to, Ordering::Release);
        self.charged = to;
        self.last[k] = new;
        if k == RELEASED {
            self.released_seen = total;
        }
        true
    }
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
    fn word_round_trips_and_orders_by_total() {
        let w = Word {
            total: MAX_TOTAL,
            tag: MAX_SLOTS,
        };
        assert_eq!(Word::decode(w.encode()), w);
        let a = Word {
            total: 5,
            tag: 4095,
        }
        .encode();
        let b = Word { total: 6, tag: 1 }.encode();
        assert!(a < b, "a larger total is a larger word, whatever the tags");
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
        assert!(g.len() < 128 << 20);
        assert_eq!(g.slot_stride() % LINE, 0);
    }
}
