//! What a ledger is made of: its classes (capacity, reserve, headroom, limit) and the
//! configuration of a new ledger file.

use super::table::{MAX_BYTES, MAX_SLOTS};
use crate::error::{Error, Result};
use crate::topology::Topology;
use crate::units::NodeId;

use super::DEFAULT_HEADROOM_PPM;
use super::DEFAULT_SLOTS;

/// One (node, page-size class) of a new ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSpec {
    /// The node.
    pub node: NodeId,
    /// 4096, 2097152 or 1073741824 (see [`class_of`](super::class_of)).
    pub page_size_bytes: u64,
    /// The node's pool (hugetlb classes) or memory outside the pools (base class), in bytes.
    pub capacity_bytes: u64,
    /// Bytes kept for the host itself (hypervisor, page tables, the VMMs).
    pub host_reserve_bytes: u64,
    /// Fraction of capacity kept free, in millionths (100 000 = 10%).
    pub headroom_ppm: u32,
}

impl ClassSpec {
    /// A class with no host reserve and the default 10% headroom.
    pub fn new(node: NodeId, page_size_bytes: u64, capacity_bytes: u64) -> ClassSpec {
        ClassSpec {
            node,
            page_size_bytes,
            capacity_bytes,
            host_reserve_bytes: 0,
            headroom_ppm: DEFAULT_HEADROOM_PPM,
        }
    }

    /// Bytes of headroom: `capacity × headroom_ppm / 10⁶`.
    pub fn headroom_bytes(&self) -> u64 {
        headroom(self.capacity_bytes, u64::from(self.headroom_ppm))
    }

    /// What admission allows: capacity − host reserve − headroom (never negative).
    pub fn limit_bytes(&self) -> u64 {
        self.capacity_bytes
            .saturating_sub(self.host_reserve_bytes)
            .saturating_sub(self.headroom_bytes())
            .min(MAX_BYTES)
    }

    /// The classes of this host: per node with memory, the base class (memory outside the
    /// hugetlb pools, less `base_reserve_bytes` for the host) and one class per hugetlb pool.
    pub fn from_topology(topo: &Topology, base_reserve_bytes: u64, headroom_ppm: u32) -> Vec<Self> {
        let mut v = Vec::new();
        for n in topo.nodes.iter().filter(|n| n.has_memory()) {
            let pools: u64 = n
                .hugepages
                .iter()
                .map(|p| p.total.saturating_mul(p.page_size_bytes))
                .sum();
            v.push(ClassSpec {
                node: n.id,
                page_size_bytes: 4096,
                capacity_bytes: n.mem_total_bytes.saturating_sub(pools),
                host_reserve_bytes: base_reserve_bytes,
                headroom_ppm,
            });
            for p in &n.hugepages {
                if p.page_size_bytes == 2 << 20 || p.page_size_bytes == 1 << 30 {
                    v.push(ClassSpec {
                        node: n.id,
                        page_size_bytes: p.page_size_bytes,
                        capacity_bytes: p.total.saturating_mul(p.page_size_bytes),
                        host_reserve_bytes: 0,
                        headroom_ppm,
                    });
                }
            }
        }
        v
    }
}

pub(crate) fn headroom(capacity: u64, ppm: u64) -> u64 {
    (u128::from(capacity) * u128::from(ppm.min(1_000_000)) / 1_000_000) as u64
}

/// How to create a ledger file when none exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// VM records (at most 4095).
    pub slots: u32,
    /// Headroom of every class, in millionths of capacity.
    pub headroom_ppm: u32,
    /// Host reserve of each node's base class, in bytes.
    pub base_reserve_bytes: u64,
    /// Group that may use the ledger (file mode 0660 then; 0600 without).
    pub group: Option<u32>,
}

impl LedgerConfig {
    /// The defaults, overridden by `NUMAPIN_LEDGER_SLOTS` (VM records, 1..=4095),
    /// `NUMAPIN_LEDGER_HEADROOM_PPM` (headroom in millionths of capacity, 0..=1000000) and
    /// `NUMAPIN_LEDGER_GID` (the group allowed to share the file) where set and not empty.
    ///
    /// # Errors
    /// [`Error::InvalidEnv`] for a value that is not a number in range: nothing falls back
    /// silently to a default.
    pub fn from_env() -> Result<LedgerConfig> {
        let d = LedgerConfig::default();
        Ok(LedgerConfig {
            slots: env_num(
                "NUMAPIN_LEDGER_SLOTS",
                1,
                MAX_SLOTS,
                "a number of VM records from 1 to 4095",
            )?
            .map_or(d.slots, |v| v as u32),
            headroom_ppm: env_num(
                "NUMAPIN_LEDGER_HEADROOM_PPM",
                0,
                1_000_000,
                "millionths of capacity from 0 to 1000000 (100000 = 10%)",
            )?
            .map_or(d.headroom_ppm, |v| v as u32),
            base_reserve_bytes: d.base_reserve_bytes,
            group: env_num(
                "NUMAPIN_LEDGER_GID",
                0,
                u64::from(u32::MAX - 1),
                "a numeric group id",
            )?
            .map(|g| g as u32)
            .or(d.group),
        })
    }
}

/// A numeric environment variable in `lo..=hi`; `None` when unset or empty.
fn env_num(var: &'static str, lo: u64, hi: u64, expected: &'static str) -> Result<Option<u64>> {
    let Some(raw) = std::env::var_os(var) else {
        return Ok(None);
    };
    let bad = || Error::InvalidEnv {
        var,
        value: raw.to_string_lossy().into_owned(),
        expected,
    };
    let s = raw.to_str().ok_or_else(bad)?.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
        _ => Err(bad()),
    }
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            slots: DEFAULT_SLOTS,
            headroom_ppm: DEFAULT_HEADROOM_PPM,
            base_reserve_bytes: 1 << 30,
            group: None,
        }
    }
}

/// One class as the ledger has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassStatus {
    /// The node.
    pub node: NodeId,
    /// The page-size class.
    pub page_size_bytes: u64,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Host reserve in bytes.
    pub host_reserve_bytes: u64,
    /// Headroom in millionths of capacity.
    pub headroom_ppm: u32,
    /// Admission limit in bytes.
    pub limit_bytes: u64,
    /// Bytes reserved (including dead owners' not yet reaped).
    pub reserved_bytes: u64,
}

impl ClassStatus {
    /// `limit − reserved`, never negative.
    pub fn available_bytes(&self) -> u64 {
        self.limit_bytes.saturating_sub(self.reserved_bytes)
    }

    /// `reserved − limit` when more is reserved than the limit now allows (the pool or the
    /// node's memory shrank under admitted charges, or the limit was lowered); 0 otherwise.
    pub fn overcommitted_bytes(&self) -> u64 {
        self.reserved_bytes.saturating_sub(self.limit_bytes)
    }
}
