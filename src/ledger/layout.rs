//! The ledger file's layout: header, class and slot word offsets, the counter and owner word
//! encodings, and the geometry validated once at open. The algorithm over it is in `table`.
//! See docs/ledger.md ("Layout").

/// `"NUMAPLDG"` read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"NUMAPLDG");
/// Layout version (3: slots are held through open-file-description locks; a version-2
/// process would be reaped by a version-3 reaper, so the two must never share a file).
pub(crate) const VERSION: u64 = 3;
/// Header bytes.
pub(crate) const HEADER_LEN: usize = 128;
/// One class descriptor (read-mostly) and one class counter (hot) each take a cache line.
pub(crate) const LINE: usize = 64;
/// Fixed part of a VM slot, before the per-class charges.
pub(super) const SLOT_FIXED: usize = 144;
/// Most classes a ledger may have.
pub(crate) const MAX_CLASSES: u64 = 1024;
/// Most VM slots (a counter word's tag holds `slot + 1` in 12 bits).
pub(crate) const MAX_SLOTS: u64 = 4095;
/// Largest byte count a charge or limit may hold (52 bits: 4 PiB).
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
pub(super) const S_OWNER: usize = 0;
pub(super) const S_INTENT_SEQ: usize = 8;
// Two intent buffers (for even and odd sequence numbers) of two words: `what` =
// `(class * 2 + counter) << 52 | to` and `new` = the counter word the operation writes.
pub(super) const S_INTENT: usize = 16;
pub(super) const S_POPULATED: usize = 48;
pub(super) const S_GUEST_USED: usize = 56;
pub(super) const S_GUEST_PEAK: usize = 64;
pub(super) const S_NAME_LEN: usize = 72;
pub(super) const S_NAME: usize = 80; // NAME_MAX bytes
pub(super) const S_CHARGED: usize = SLOT_FIXED;

/// Owner word: bit 63 = held by a reaper; bits 41..63 = pid; bits 0..41 = start time (ticks).
pub(crate) const OWNER_REAPING: u64 = 1 << 63;
pub(super) const OWNER_PID_SHIFT: u32 = 41;
pub(super) const OWNER_START_MASK: u64 = (1 << OWNER_PID_SHIFT) - 1;
pub(super) const OWNER_PID_MASK: u64 = (1 << 22) - 1;

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
pub(super) fn bad<T>(what: &'static str, a: u64, b: u64) -> R<T> {
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

/// Bytes per ledger unit: counters and charges count 4 KiB pages (every page size is a multiple).
pub(crate) const UNIT: u64 = 4096;
/// Bits of a counter word that hold the writer's tag (`slot + 1`; 0 = nobody yet).
pub(super) const TAG_BITS: u32 = 12;
/// Largest monotone total a counter word holds, in units (52 bits: 16 EiB of churn per class).
pub(crate) const MAX_TOTAL: u64 = (1 << (64 - TAG_BITS)) - 1;

/// A counter word: a monotone total of units (charged ever, or released ever, on one class)
/// in the high 52 bits and the tag of the operation that wrote it (`slot + 1`) in the low 12.
/// Totals only grow, so a word never recurs in a counter's history: a word identifies the one
/// operation that wrote it, and `a < b` as integers whenever `a` came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) total: u64,
    /// `slot + 1`, or 0.
    pub(crate) tag: u64,
}

impl Word {
    pub(crate) fn decode(w: u64) -> Word {
        Word {
            total: w >> TAG_BITS,
            tag: w & ((1 << TAG_BITS) - 1),
        }
    }
    pub(crate) fn encode(self) -> u64 {
        (self.total << TAG_BITS) | self.tag
    }
}

/// A class's two counters read at one moment, as what they mean together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    /// Bytes reserved: `(charged - released) * UNIT`.
    pub(crate) bytes: u64,
}

/// Which counter of a class an operation moves.
pub(super) const CHARGED: usize = 0;
pub(super) const RELEASED: usize = 1;

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
    /// Counter `k` of class `c`: `charged` and `released` on lines of their own, so that a
    /// charge and a release on the same class touch different lines.
    pub(crate) fn ctr_off(&self, c: usize, k: usize) -> usize {
        HEADER_LEN + (self.classes + 2 * c + (k & 1)) * LINE
    }
    pub(crate) fn slot_stride(&self) -> usize {
        self.marks_off() + (16 * self.classes).div_ceil(LINE) * LINE
    }
    /// Where a slot's marks start: after its fixed part and per-class charges, on a line of
    /// their own (others write the marks; the holder writes the rest).
    pub(crate) fn marks_off(&self) -> usize {
        (SLOT_FIXED + 8 * self.classes).div_ceil(LINE) * LINE
    }
    pub(crate) fn slot_off(&self, s: usize) -> usize {
        HEADER_LEN + 3 * self.classes * LINE + s * self.slot_stride()
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
