//! The host-wide ledger: capacity per (node, page-size class), charges per VM, and lock-free
//! admission control that no crash can corrupt.
//!
//! One algorithm, two homes: [`Ledger::in_memory`] (one process) and [`Ledger::open`] (a
//! shared file mapping, default `/dev/shm/numapin-ledger`, or `$NUMAPIN_LEDGER`), shared by
//! every VMM process on the host.
//!
//! ```
//! use std::sync::Arc;
//! use numapin::ledger::{ClassSpec, Ledger};
//! use numapin::NodeId;
//!
//! let class = ClassSpec::new(NodeId(0), 2 << 20, 1 << 30); // a 1 GiB pool of 2 MiB pages
//! let ledger = Arc::new(Ledger::in_memory(&[class], 16)?);
//! let mut vm = ledger.vm("web-1")?;
//! vm.try_charge(NodeId(0), 2 << 20, 512 << 20)?;
//! // The limit is 90% of the pool (10% headroom): 512 MiB more does not fit.
//! assert!(ledger.try_charge("web-2", NodeId(0), 2 << 20, 512 << 20).is_err());
//! drop(vm); // releases its charges
//! assert_eq!(ledger.classes()?[0].reserved_bytes, 0);
//! # Ok::<(), numapin::Error>(())
//! ```
//!
//! # How it works
//! Each class has two 8-byte counters that only grow: 4 KiB pages ever charged and ever
//! released (reserved = their difference), each word tagged with the slot that wrote it last.
//! Each VM holds one slot, claimed once, in which only it writes (except the marks helpers
//! raise). A charge publishes its intent in the slot, moves `charged` with one compare-exchange
//! (refusing if the result would pass the limit), then commits in the slot. A word never
//! recurs, so it names the one operation that wrote it; whoever replaces another slot's word
//! first marks it as applied in that slot, so the effect of every operation stays known after
//! its process dies; the reaper settles a dead slot's last operation from that and releases
//! exactly what it held.
//! The argument is written out in `docs/ledger.md`.
//!
//! Everything read from the shared file is untrusted: bad values give
//! [`crate::Error::LedgerInvalid`], never a panic or an out-of-bounds
//! access.

mod region;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::snapshot::{ClassSnapshot, NodeSnapshot, Snapshot, VmReservation, VmSnapshot};
use crate::topology::Topology;
use crate::units::{NodeId, PageSize};

use region::Region;
pub use table::Crash;
use table::{
    owner_parts, owner_word, Bad, Geometry, Stat, Table, D_CAPACITY, D_HEADROOM_PPM, D_LIMIT,
    D_NODE, D_PAGE, D_RESERVE, H_CLASSES, H_LEN, H_MAGIC, H_PIDNS, H_SLOTS, H_VERSION, MAGIC,
    MAX_BYTES, OWNER_REAPING, VERSION,
};

/// Where the host ledger lives unless `$NUMAPIN_LEDGER` says otherwise.
pub const DEFAULT_PATH: &str = "/dev/shm/numapin-ledger";
/// The environment variable naming the ledger file.
pub const ENV_PATH: &str = "NUMAPIN_LEDGER";
/// Default headroom: 10% of capacity kept free ("maintain 10–15% free capacity").
pub const DEFAULT_HEADROOM_PPM: u32 = 100_000;
/// Default number of VM records of a new ledger file.
pub const DEFAULT_SLOTS: u32 = 256;

/// The ledger path: `$NUMAPIN_LEDGER` if set and not empty, else [`DEFAULT_PATH`].
pub fn default_path() -> PathBuf {
    match std::env::var_os(ENV_PATH) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// The page-size class a page size is accounted in: 4096 for base pages and THP (both come
/// from the node's buddy allocator), 2 MiB and 1 GiB for the hugetlb pools; `None` for `Auto`.
pub fn class_of(page: PageSize) -> Option<u64> {
    match page {
        PageSize::Base4K | PageSize::Transparent => Some(4096),
        PageSize::Huge2M => Some(2 << 20),
        PageSize::Huge1G => Some(1 << 30),
        PageSize::Auto => None,
    }
}

/// One (node, page-size class) of a new ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassSpec {
    /// The node.
    pub node: NodeId,
    /// 4096, 2097152 or 1073741824 (see [`class_of`]).
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

fn headroom(capacity: u64, ppm: u64) -> u64 {
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
    /// The defaults, overridden by `NUMAPIN_LEDGER_SLOTS` (VM records),
    /// `NUMAPIN_LEDGER_HEADROOM_PPM` (headroom in millionths of capacity) and
    /// `NUMAPIN_LEDGER_GID` (group allowed to use the file) where set to a number.
    pub fn from_env() -> LedgerConfig {
        fn num(k: &str) -> Option<u64> {
            std::env::var(k).ok()?.trim().parse().ok()
        }
        let d = LedgerConfig::default();
        LedgerConfig {
            slots: num("NUMAPIN_LEDGER_SLOTS")
                .map_or(d.slots, |v| v.min(u64::from(u32::MAX)) as u32),
            headroom_ppm: num("NUMAPIN_LEDGER_HEADROOM_PPM")
                .map_or(d.headroom_ppm, |v| v.min(1_000_000) as u32),
            base_reserve_bytes: d.base_reserve_bytes,
            group: num("NUMAPIN_LEDGER_GID").map(|g| g as u32).or(d.group),
        }
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
}

/// Decides whether the owner of a slot is alive. The default reads `/proc`.
pub type Liveness = fn(u64) -> bool;

/// The host ledger. Share it as `Arc<Ledger>`; see the [module docs](self).
#[derive(Debug)]
pub struct Ledger {
    table: Table,
    path: Option<PathBuf>,
    /// (node, page size) of each class: geometry, validated at open, immutable.
    classes: Vec<(NodeId, u64)>,
    alive: Liveness,
}

impl Ledger {
    // ---- construction --------------------------------------------------------------------

    /// A ledger in this process's memory (anonymous shared memory: also shared with children
    /// forked after this call).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for no or too many classes or slots (1..=1024 classes,
    /// 1..=4095 slots), an unknown page size or a duplicate class.
    pub fn in_memory(classes: &[ClassSpec], slots: u32) -> Result<Ledger> {
        let t = new_table(classes, slots)?;
        Ledger::from_table(t, None)
    }

    /// Opens the host ledger at `path`, creating it from this host's topology
    /// ([`ClassSpec::from_topology`], [`LedgerConfig::from_env`]) if it does not exist.
    ///
    /// # Errors
    /// As [`Ledger::open_existing`] and [`Ledger::create`].
    #[cfg(not(loom))]
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        Self::open_or_create(path, &LedgerConfig::from_env())
    }

    /// Under loom there are no files: the models use [`Ledger::in_memory`].
    ///
    /// # Errors
    /// Always [`Error::InvalidConfig`].
    #[cfg(loom)]
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        Err(Error::InvalidConfig(format!(
            "no ledger files under cfg(loom): {}",
            path.as_ref().display()
        )))
    }

    /// Opens the ledger at `path`, creating it with `config` (classes from this host's
    /// topology) if it does not exist.
    ///
    /// # Errors
    /// As [`Ledger::open_existing`] and [`Ledger::create`].
    #[cfg(not(loom))]
    pub fn open_or_create(path: impl AsRef<Path>, config: &LedgerConfig) -> Result<Ledger> {
        let path = path.as_ref();
        match Self::open_existing(path) {
            Err(Error::LedgerIo { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let topo = Topology::from_sysfs()?;
                let classes =
                    ClassSpec::from_topology(&topo, config.base_reserve_bytes, config.headroom_ppm);
                Self::create(path, &classes, config)
            }
            r => r,
        }
    }

    /// Opens an existing ledger file and validates it: magic, version, geometry against the
    /// file's size, pid namespace, every class descriptor. Never creates. This is the entry
    /// point for untrusted files: any content gives a ledger or an error, never a panic.
    ///
    /// # Errors
    /// [`Error::LedgerIo`] if it cannot be opened (not found, permissions, a symlink: the file
    /// is opened with `O_NOFOLLOW`), [`Error::LedgerInvalid`] if it is not a valid ledger.
    #[cfg(not(loom))]
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Ledger> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let path = path.as_ref();
        let io = |op, source| Error::LedgerIo {
            path: path.to_path_buf(),
            op,
            source,
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io("open", e))?;
        let md = f.metadata().map_err(|e| io("fstat", e))?;
        let ft = md.file_type();
        if !ft.is_file() || ft.is_fifo() {
            return Err(invalid(Some(path), "not a regular file"));
        }
        let len = md.len();
        let min = table::HEADER_LEN as u64;
        let max = Geometry::new(table::MAX_CLASSES, table::MAX_SLOTS).map_or(0, |g| g.len() as u64);
        if len < min || len > max {
            return Err(invalid(
                Some(path),
                &format!("size {len} bytes is outside {min}..={max}"),
            ));
        }
        let region = crate::sys::SharedRegion::map_file(&f, len as usize)
            .map_err(|e| io("mmap", std::io::Error::from_raw_os_error(e)))?;
        let t = validate(Region(region), Some(path))?;
        Ledger::from_table(t, Some(path.to_path_buf()))
    }

    /// Creates a ledger file at `path` race-free: the file is made under a temporary name
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, or 0660 with `config.group`), sized and
    /// initialised (header, classes), then linked into place. If another process created
    /// `path` first, opens that one instead.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad classes, [`Error::LedgerIo`] for file errors, and
    /// those of [`Ledger::open_existing`].
    #[cfg(not(loom))]
    pub fn create(
        path: impl AsRef<Path>,
        classes: &[ClassSpec],
        config: &LedgerConfig,
    ) -> Result<Ledger> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path.as_ref();
        let io = |op, source| Error::LedgerIo {
            path: path.to_path_buf(),
            op,
            source,
        };
        let geo = check_classes(classes, config.slots)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let tmp = PathBuf::from(tmp);
        let mode = if config.group.is_some() { 0o660 } else { 0o600 };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io("create", e))?;
        let r = (|| -> Result<Ledger> {
            if let Some(g) = config.group {
                std::os::unix::fs::fchown(&f, None, Some(g)).map_err(|e| io("fchown", e))?;
                // The umask may have cleared group bits: set them explicitly.
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io("fchmod", e))?;
            }
            f.set_len(geo.len() as u64)
                .map_err(|e| io("ftruncate", e))?;
            let region = crate::sys::SharedRegion::map_file(&f, geo.len())
                .map_err(|e| io("mmap", std::io::Error::from_raw_os_error(e)))?;
            let t = Table {
                region: Region(region),
                geo,
            };
            init_table(&t, classes).map_err(|b| invalid(Some(path), &b.text()))?;
            drop(t);
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("link", e)),
            }
            Self::open_existing(path)
        })();
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// Validates a ledger image (the bytes of a ledger file) and returns an in-memory ledger
    /// holding a copy. Any bytes give a ledger or [`Error::LedgerInvalid`], never a panic:
    /// this is the entry point for fuzzing the file format.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if `image` is not a valid ledger.
    pub fn from_image(image: &[u8]) -> Result<Ledger> {
        let max = Geometry::new(table::MAX_CLASSES, table::MAX_SLOTS).map_or(0, |g| g.len());
        if image.len() < table::HEADER_LEN || image.len() > max || image.len() % 16 != 0 {
            return Err(invalid(
                None,
                &format!("image of {} bytes is not a ledger's size", image.len()),
            ));
        }
        let region = Region::anonymous(image.len()).map_err(|e| Error::sys("mmap", e))?;
        for (i, ch) in image.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(ch.try_into().unwrap_or([0; 8]));
            if let Some(w) = region.w64(i * 8) {
                w.store(v, crate::sync::Ordering::Relaxed);
            }
        }
        let t = validate(region, None)?;
        Ledger::from_table(t, None)
    }

    /// Replaces how slot owners are judged alive (default: `/proc/PID/stat` start time).
    /// For tests and models that simulate processes; a wrong answer lets the reaper take a
    /// live owner's charges.
    #[doc(hidden)]
    pub fn with_liveness(mut self, alive: Liveness) -> Ledger {
        self.alive = alive;
        self
    }

    fn from_table(table: Table, path: Option<PathBuf>) -> Result<Ledger> {
        let mut classes = Vec::with_capacity(table.geo.classes);
        for c in 0..table.geo.classes {
            let d = table.geo.desc_off(c);
            let node = table
                .load(d + D_NODE)
                .map_err(|b| invalid(path.as_deref(), &b.text()))?;
            let page = table
                .load(d + D_PAGE)
                .map_err(|b| invalid(path.as_deref(), &b.text()))?;
            classes.push((NodeId(node as u32), page));
        }
        Ok(Ledger {
            table,
            path,
            classes,
            alive: process_alive,
        })
    }

    /// The file, or `None` for an in-memory ledger.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn bad(&self, b: Bad) -> Error {
        invalid(self.path.as_deref(), &b.text())
    }

    /// The index of a class.
    ///
    /// # Errors
    /// [`Error::LedgerNoClass`] if the ledger has no such class.
    pub fn class_index(&self, node: NodeId, page_size_bytes: u64) -> Result<usize> {
        self.classes
            .iter()
            .position(|&(n, p)| n == node && p == page_size_bytes)
            .ok_or_else(|| Error::LedgerNoClass {
                node,
                page_size_bytes,
                known: self.classes.clone(),
            })
    }

    // ---- reading -------------------------------------------------------------------------

    /// Every class with its capacity, limit and what is reserved now.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn classes(&self) -> Result<Vec<ClassStatus>> {
        let t = &self.table;
        (0..t.geo.classes)
            .map(|c| {
                let d = t.geo.desc_off(c);
                let (node, page) = self.classes[c];
                Ok(ClassStatus {
                    node,
                    page_size_bytes: page,
                    capacity_bytes: t.load(d + D_CAPACITY)?,
                    host_reserve_bytes: t.load(d + D_RESERVE)?,
                    headroom_ppm: t.load(d + D_HEADROOM_PPM)?.min(1_000_000) as u32,
                    limit_bytes: t.limit(c)?,
                    reserved_bytes: t.read_counter(c)?.bytes,
                })
            })
            .collect::<table::R<Vec<_>>>()
            .map_err(|b| self.bad(b))
    }

    /// Sets a class's capacity, host reserve and headroom (e.g. after the pool was grown) and
    /// recomputes its limit. Charges already admitted stay; a lower limit only refuses new ones.
    ///
    /// # Errors
    /// [`Error::LedgerNoClass`], [`Error::LedgerInvalid`].
    pub fn set_capacity(&self, spec: &ClassSpec) -> Result<()> {
        let c = self.class_index(spec.node, spec.page_size_bytes)?;
        let d = self.table.geo.desc_off(c);
        let t = &self.table;
        (|| {
            t.store(d + D_CAPACITY, spec.capacity_bytes)?;
            t.store(d + D_RESERVE, spec.host_reserve_bytes)?;
            t.store(d + D_HEADROOM_PPM, u64::from(spec.headroom_ppm))?;
            t.store(d + D_LIMIT, spec.limit_bytes())
        })()
        .map_err(|b| self.bad(b))
    }

    // ---- charging ------------------------------------------------------------------------

    /// Claims a VM record named `name` for this process (once per VM); charge through it.
    ///
    /// Reaps dead owners' records first if every record is taken.
    ///
    /// # Errors
    /// [`Error::LedgerFull`] if every record belongs to a live process; [`Error::LedgerInvalid`].
    pub fn vm(self: &Arc<Self>, name: &str) -> Result<Charge> {
        let me = current_owner()?;
        self.vm_as(name, me)
    }

    /// [`Ledger::vm`] with an explicit owner word (for models that simulate processes).
    #[doc(hidden)]
    pub fn vm_as(self: &Arc<Self>, name: &str, me: u64) -> Result<Charge> {
        for attempt in 0..2 {
            for s in 0..self.table.geo.slots {
                let o = self.table.owner(s).map_err(|b| self.bad(b))?;
                if o != 0 {
                    continue;
                }
                if self.table.claim(s, 0, me).map_err(|b| self.bad(b))? {
                    return self.adopt(s, me, name);
                }
            }
            if attempt == 0 && self.reap()? == 0 {
                break;
            }
        }
        Err(Error::LedgerFull {
            path: self.display_path(),
            slots: self.table.geo.slots as u32,
        })
    }

    fn adopt(self: &Arc<Self>, s: usize, me: u64, name: &str) -> Result<Charge> {
        let t = &self.table;
        let r = (|| {
            // A free slot's previous holder released everything and committed; `resolve` is a
            // no-op then, and gives the next sequence number.
            let seq = t.resolve(s)?;
            let mut lanes = Vec::with_capacity(t.geo.classes);
            for c in 0..t.geo.classes {
                lanes.push(t.lane(s, c, t.charged(s, c)?)?);
            }
            t.clear_info(s)?;
            t.set_name(s, name)?;
            Ok((seq, lanes))
        })();
        match r {
            Ok((seq, lanes)) => {
                let mut ch = Charge {
                    ledger: Arc::clone(self),
                    slot: s,
                    owner: me,
                    pid: std::process::id(),
                    seq,
                    lanes,
                };
                // A free slot should hold no charge; if a corrupted one does, give it back.
                if ch.lanes.iter().any(|l| l.charged != 0) {
                    ch.release_all()?;
                }
                Ok(ch)
            }
            Err(b) => {
                let _ = t.free(s, me);
                Err(self.bad(b))
            }
        }
    }

    /// Claims a record for `name` and charges `bytes` on one class, in one call.
    ///
    /// # Errors
    /// As [`Ledger::vm`] and [`Charge::try_charge`].
    pub fn try_charge(
        self: &Arc<Self>,
        name: &str,
        node: NodeId,
        page_size_bytes: u64,
        bytes: u64,
    ) -> Result<Charge> {
        let mut ch = self.vm(name)?;
        ch.try_charge(node, page_size_bytes, bytes)?;
        Ok(ch)
    }

    fn display_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<in-memory>"))
    }

    /// Records guest-used bytes for every record named `name` (optionally only those of
    /// process `pid`), for a VMM or an operator tool that is not the record's holder (e.g.
    /// `numapin status --guest-used NAME=SIZE`). Returns how many records were updated.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn set_guest_used(&self, name: &str, pid: Option<u32>, bytes: u64) -> Result<usize> {
        let t = &self.table;
        let r = (|| -> table::R<usize> {
            let mut n = 0;
            for s in 0..t.geo.slots {
                let o = t.owner(s)?;
                if o == 0 || o & OWNER_REAPING != 0 || t.name(s)? != name {
                    continue;
                }
                if pid.is_some_and(|p| p != owner_parts(o).0) {
                    continue;
                }
                t.set_stat(s, Stat::GuestUsed, bytes)?;
                t.raise_stat(s, Stat::GuestPeak, bytes)?;
                n += 1;
            }
            Ok(n)
        })();
        r.map_err(|b| self.bad(b))
    }

    // ---- reaping -------------------------------------------------------------------------

    /// Releases the charges of every record whose owner is dead, and frees those records.
    /// Returns how many records were reaped. Runs without locks: a reaper that dies midway
    /// leaves the record to the next one, which settles it the same way.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if a record holds out-of-range values.
    pub fn reap(&self) -> Result<usize> {
        let me = current_owner()?;
        self.reap_as(me)
    }

    /// [`Ledger::reap`] acting as the given owner word.
    #[doc(hidden)]
    pub fn reap_as(&self, me: u64) -> Result<usize> {
        let mut n = 0;
        for s in 0..self.table.geo.slots {
            if self.reap_slot(s, me).map_err(|b| self.bad(b))? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn reap_slot(&self, s: usize, me: u64) -> table::R<bool> {
        let t = &self.table;
        let o = t.owner(s)?;
        if o == 0 || (o & !OWNER_REAPING) == me || (self.alive)(o & !OWNER_REAPING) {
            return Ok(false);
        }
        let reaper = me | OWNER_REAPING;
        if !t.claim(s, o, reaper)? {
            return Ok(false);
        }
        let mut seq = t.resolve(s)?;
        for c in 0..t.geo.classes {
            let from = t.charged(s, c)?;
            if from != 0 {
                // Never refused: a release has no limit. Errors only for corrupted counters.
                let _ = t.apply(s, seq, c, from, 0, None, None, Crash::Never)?;
                seq += 1;
            }
        }
        t.clear_info(s)?;
        t.free(s, reaper)?;
        Ok(true)
    }

    // ---- status --------------------------------------------------------------------------

    /// Reaps dead owners, then returns the ledger as a [`Snapshot`] (what
    /// `numapin status --json` prints). Records of one VM name held by one process are merged.
    ///
    /// The class totals and the VMs' charges are read one after the other, so a charge or
    /// release in between would tear the picture (a total that no set of VM charges explains,
    /// which the planner rightly refuses). The snapshot is therefore read again, up to
    /// [`SNAPSHOT_TRIES`] times, until every class total equals the sum of the VMs' charges in
    /// it: a consistent cut. Only under unceasing churn can a torn snapshot come back.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let _ = self.reap()?;
        let mut snap = self.snapshot_no_reap()?;
        for _ in 1..SNAPSHOT_TRIES {
            if snapshot_is_consistent(&snap) {
                break;
            }
            std::thread::yield_now();
            snap = self.snapshot_no_reap()?;
        }
        Ok(snap)
    }

    /// The snapshot without reaping first (dead owners' records still appear).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn snapshot_no_reap(&self) -> Result<Snapshot> {
        let t = &self.table;
        let mut nodes: Vec<NodeSnapshot> = Vec::new();
        for c in self.classes()? {
            let cs = ClassSnapshot {
                page_size_bytes: c.page_size_bytes,
                capacity_bytes: c.capacity_bytes,
                limit_bytes: c.limit_bytes,
                reserved_bytes: c.reserved_bytes,
                available_bytes: c.available_bytes(),
            };
            match nodes.iter_mut().find(|n| n.id == c.node) {
                Some(n) => n.classes.push(cs),
                None => nodes.push(NodeSnapshot {
                    id: c.node,
                    classes: vec![cs],
                }),
            }
        }
        let mut vms: Vec<VmSnapshot> = Vec::new();
        let r = (|| -> table::R<()> {
            for s in 0..t.geo.slots {
                let o = t.owner(s)?;
                if o == 0 || o & OWNER_REAPING != 0 {
                    continue;
                }
                let pid = owner_parts(o).0;
                let name = t.name(s)?;
                let idx = match vms.iter().position(|v| v.name == name && v.pid == pid) {
                    Some(i) => i,
                    None => {
                        vms.push(VmSnapshot {
                            name,
                            pid,
                            ..VmSnapshot::default()
                        });
                        vms.len() - 1
                    }
                };
                let v = &mut vms[idx];
                for c in 0..t.geo.classes {
                    let b = t.charged(s, c)?;
                    if b == 0 {
                        continue;
                    }
                    let (node, page) = self.classes[c];
                    match v
                        .reservations
                        .iter_mut()
                        .find(|r| r.node == node && r.page_size_bytes == page)
                    {
                        Some(r) => r.bytes = r.bytes.saturating_add(b),
                        None => v.reservations.push(VmReservation {
                            node,
                            page_size_bytes: page,
                            bytes: b,
                        }),
                    }
                }
                v.guest_used_bytes = v
                    .guest_used_bytes
                    .saturating_add(t.stat(s, Stat::GuestUsed)?);
                v.guest_used_peak_bytes = v
                    .guest_used_peak_bytes
                    .saturating_add(t.stat(s, Stat::GuestPeak)?);
                v.populated_bytes = Some(
                    v.populated_bytes
                        .unwrap_or(0)
                        .saturating_add(t.stat(s, Stat::Populated)?),
                );
            }
            Ok(())
        })();
        r.map_err(|b| self.bad(b))?;
        let who = crate::snapshot::HostIdentity::this_host();
        for v in &mut vms {
            let mut ns: Vec<_> = v.reservations.iter().map(|r| r.node).collect();
            ns.dedup();
            if !v.reservations.is_empty() {
                v.single_node = Some(ns.len() == 1);
            }
        }
        let mut snap = Snapshot {
            host: who.host,
            host_id: who.host_id,
            nodes,
            vms,
        };
        snap.canonicalize();
        Ok(snap)
    }

    /// Checks that every class counter equals the sum of the charges of the records holding
    /// it. Meaningful only when no operation is in flight (tests, after all VMMs stopped).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] naming the first class that differs.
    pub fn audit(&self) -> Result<()> {
        let t = &self.table;
        let r = (|| -> table::R<Option<String>> {
            for c in 0..t.geo.classes {
                let mut sum: u64 = 0;
                for s in 0..t.geo.slots {
                    if t.owner(s)? != 0 {
                        sum = sum.saturating_add(t.charged(s, c)?);
                    }
                }
                let k = t.read_counter(c)?.bytes;
                if k != sum {
                    return Ok(Some(format!(
                        "class {c} counter {k} != sum of records {sum}"
                    )));
                }
            }
            Ok(None)
        })();
        match r.map_err(|b| self.bad(b))? {
            None => Ok(()),
            Some(w) => Err(invalid(self.path.as_deref(), &w)),
        }
    }
}

/// How many times [`Ledger::snapshot`] reads the ledger at most to get a consistent cut.
pub const SNAPSHOT_TRIES: usize = 1000;

/// Whether every class total of `s` equals the sum of its VMs' charges in that class.
pub fn snapshot_is_consistent(s: &Snapshot) -> bool {
    s.nodes.iter().all(|n| {
        n.classes.iter().all(|c| {
            let sum = s
                .vms
                .iter()
                .flat_map(|v| &v.reservations)
                .filter(|r| r.node == n.id && r.page_size_bytes == c.page_size_bytes)
                .fold(0u64, |a, r| a.saturating_add(r.bytes));
            sum == c.reserved_bytes
        })
    })
}

/// A VM's record in the ledger and everything charged through it. Dropping it releases all
/// its charges and frees the record; if the process dies instead, the next admission, status
/// or [`Ledger::reap`] does.
///
/// Operations take `&mut self`: one record has one writer, which is what makes the fast path
/// one compare-exchange. Threads that charge concurrently use one `Charge` each.
#[derive(Debug)]
pub struct Charge {
    ledger: Arc<Ledger>,
    slot: usize,
    owner: u64,
    pid: u32,
    seq: u64,
    /// Per class: our words (validated at claim), our charge and the last counter words we
    /// wrote.
    lanes: Vec<table::Lane>,
}

impl Charge {
    /// Charges `bytes` more on (node, class) if the class's limit allows it.
    ///
    /// Atomic against every thread and process: the sum of charges never passes the limit, and
    /// a refusal means the limit was passed at the moment of the decision (a concurrent
    /// request that failed never causes it). When refused, reaps dead owners once and retries.
    ///
    /// # Errors
    /// [`Error::AdmissionRefused`] with the numbers; [`Error::LedgerNoClass`];
    /// [`Error::InvalidSize`] for zero bytes or a size that is not a multiple of 4096;
    /// [`Error::LedgerInvalid`].
    pub fn try_charge(&mut self, node: NodeId, page_size_bytes: u64, bytes: u64) -> Result<()> {
        let c = self.ledger.class_index(node, page_size_bytes)?;
        self.try_charge_class(c, bytes)
    }

    /// [`Charge::try_charge`] by class index ([`Ledger::class_index`]).
    ///
    /// # Errors
    /// As [`Charge::try_charge`].
    #[inline] // the fast path is a few instructions; the slow paths are cold functions
    pub fn try_charge_class(&mut self, c: usize, bytes: u64) -> Result<()> {
        if let Some(lane) = self.lanes.get_mut(c) {
            if bytes != 0
                && bytes % table::UNIT == 0
                && lane.fast(self.seq, lane.charged.saturating_add(bytes))
            {
                self.seq += 1;
                return Ok(());
            }
        }
        self.charge_slow(c, bytes)
    }

    /// [`Charge::try_charge_class`] when the fast path declined: a bad size, a stale guess, a
    /// refusal to judge, a class out of range.
    #[cold]
    #[inline(never)]
    fn charge_slow(&mut self, c: usize, bytes: u64) -> Result<()> {
        if bytes == 0 || bytes % table::UNIT != 0 {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: "the ledger counts memory in 4 KiB pages: charge a positive multiple of 4096 bytes (every page size is one)".into(),
            });
        }
        let Some(lane) = self.lanes.get(c) else {
            return Err(invalid(self.ledger.path(), "class index out of range"));
        };
        let from = lane.charged;
        let to = from.saturating_add(bytes);
        if to > table::MAX_BYTES {
            // More than any limit can be (limits are at most 4 PiB): a refusal, not corruption.
            let t = &self.ledger.table;
            let limit = t.limit(c).map_err(|b| self.ledger.bad(b))?;
            let reserved = t.read_counter(c).map_err(|b| self.ledger.bad(b))?.bytes;
            return Err(self.refusal(c, bytes, reserved, limit));
        }
        for attempt in 0..2 {
            let t = &self.ledger.table;
            let limit = t.limit(c).map_err(|b| self.ledger.bad(b))?;
            let seq = self.seq;
            self.seq += 1;
            match t
                .apply(
                    self.slot,
                    seq,
                    c,
                    from,
                    to,
                    Some(limit),
                    guess(self.lanes[c].last[0]),
                    Crash::Never,
                )
                .map_err(|b| self.ledger.bad(b))?
            {
                Ok(w) => {
                    self.lanes[c].charged = to;
                    self.lanes[c].last[0] = w;
                    return Ok(());
                }
                Err(reserved) => {
                    if attempt == 0 && self.ledger.reap()? > 0 {
                        continue;
                    }
                    return Err(self.refusal(c, bytes, reserved, limit));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn refusal(&self, c: usize, requested: u64, reserved: u64, limit: u64) -> Error {
        let (node, page_size_bytes) = self.ledger.classes[c];
        let st = self.ledger.classes().ok().and_then(|v| v.get(c).cloned());
        let (capacity, host_reserve, ppm) = st
            .map(|s| (s.capacity_bytes, s.host_reserve_bytes, s.headroom_ppm))
            .unwrap_or((0, 0, 0));
        Error::AdmissionRefused {
            node,
            page_size_bytes,
            requested,
            available: limit.saturating_sub(reserved),
            limit,
            reserved,
            capacity,
            host_reserve,
            headroom: headroom(capacity, u64::from(ppm)),
        }
    }

    /// Simulates this process dying in the middle of an operation: runs a charge
    /// (`bytes > 0`) or release (`bytes < 0`) on class `c` up to `at`, then abandons the record
    /// without releasing anything, as a SIGKILL there would. For tests and models; the owner
    /// must then be made "dead" for the reaper ([`Ledger::with_liveness`]).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    #[doc(hidden)]
    pub fn crash_during(mut self, c: usize, bytes: i64, at: Crash) -> Result<()> {
        let from = self.lanes.get(c).map_or(0, |l| l.charged);
        let to = from.saturating_add_signed(bytes);
        let limit = self.ledger.table.limit(c).map_err(|b| self.ledger.bad(b))?;
        let seq = self.seq;
        let _ = self
            .ledger
            .table
            .apply(self.slot, seq, c, from, to, Some(limit), None, at)
            .map_err(|b| self.ledger.bad(b))?;
        // Dead: no Drop, no release.
        self.pid = 0;
        Ok(())
    }

    /// Gives back `bytes` of this record's charge on (node, class).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] if more than charged; [`Error::LedgerNoClass`];
    /// [`Error::LedgerInvalid`].
    pub fn release(&mut self, node: NodeId, page_size_bytes: u64, bytes: u64) -> Result<()> {
        let c = self.ledger.class_index(node, page_size_bytes)?;
        self.release_class(c, bytes)
    }

    /// [`Charge::release`] by class index.
    ///
    /// # Errors
    /// As [`Charge::release`].
    #[inline] // as for `try_charge_class`
    pub fn release_class(&mut self, c: usize, bytes: u64) -> Result<()> {
        if let Some(lane) = self.lanes.get_mut(c) {
            if bytes != 0
                && bytes <= lane.charged
                && bytes % table::UNIT == 0
                && lane.fast(self.seq, lane.charged - bytes)
            {
                self.seq += 1;
                return Ok(());
            }
        }
        self.release_slow(c, bytes)
    }

    /// [`Charge::release_class`] when the fast path declined: a bad size, a stale guess, a
    /// class out of range.
    #[cold]
    #[inline(never)]
    fn release_slow(&mut self, c: usize, bytes: u64) -> Result<()> {
        let Some(lane) = self.lanes.get(c) else {
            return Err(invalid(self.ledger.path(), "class index out of range"));
        };
        let from = lane.charged;
        if bytes > from {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: format!("only {from} bytes are charged on this class"),
            });
        }
        if bytes % table::UNIT != 0 {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: "the ledger counts memory in 4 KiB pages: release a multiple of 4096 bytes"
                    .into(),
            });
        }
        if bytes == 0 {
            return Ok(());
        }
        let seq = self.seq;
        self.seq += 1;
        let w = self
            .ledger
            .table
            .apply(
                self.slot,
                seq,
                c,
                from,
                from - bytes,
                None,
                guess(self.lanes[c].last[1]),
                Crash::Never,
            )
            .map_err(|b| self.ledger.bad(b))?;
        self.lanes[c].charged = from - bytes;
        self.lanes[c].last[1] = w.unwrap_or(0);
        Ok(())
    }

    /// Releases every charge of this record (the record stays claimed).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn release_all(&mut self) -> Result<()> {
        for c in 0..self.lanes.len() {
            let b = self.lanes[c].charged;
            if b != 0 {
                self.release_class(c, b)?;
            }
        }
        Ok(())
    }

    /// Bytes charged on (node, class); 0 for an unknown class.
    pub fn charged(&self, node: NodeId, page_size_bytes: u64) -> u64 {
        self.ledger
            .class_index(node, page_size_bytes)
            .map_or(0, |c| self.lanes[c].charged)
    }

    /// Bytes charged over all classes.
    pub fn total(&self) -> u64 {
        self.lanes.iter().map(|l| l.charged).sum()
    }

    /// The ledger this record is in.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Records how many bytes of the VM's memory are populated (faulted in).
    pub fn set_populated(&self, bytes: u64) {
        let _ = self
            .ledger
            .table
            .set_stat(self.slot, Stat::Populated, bytes);
    }

    /// Records what the guest reports it uses (balloon statistics, a guest agent), and raises
    /// the recorded peak if this is higher.
    pub fn set_guest_used(&self, bytes: u64) {
        let t = &self.ledger.table;
        let _ = t.set_stat(self.slot, Stat::GuestUsed, bytes);
        let _ = t.raise_stat(self.slot, Stat::GuestPeak, bytes);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        // A child forked with a copy of this value does not own the record: leave it to the
        // parent (or to the reaper once the parent is gone).
        if std::process::id() != self.pid {
            return;
        }
        // Errors mean a corrupted ledger; nothing better to do in drop than leave the record to
        // the reaper (it is settled when this process exits).
        if self.release_all().is_ok() {
            let t = &self.ledger.table;
            let _ = t.clear_info(self.slot);
            let _ = t.free(self.slot, self.owner);
        }
    }
}

/// Charges what a reservation plan will take: per node of the plan, its share of the size in
/// the plan's page-size class (one node: all of it; several: an even split in whole pages, as
/// interleave places them). All or nothing: a refusal on one node refunds the others.
pub(crate) fn charge_plan(
    ledger: &Arc<Ledger>,
    name: &str,
    plan: &crate::reservation::Plan,
) -> Result<Charge> {
    let class = class_of(plan.page_size).ok_or_else(|| {
        Error::InvalidConfig("the plan's page size must be concrete to charge the ledger".into())
    })?;
    let page = plan.page_size.bytes().map_or(4096, |b| b as u64).max(1);
    let nodes = if plan.nodes.is_empty() {
        vec![NodeId(0)]
    } else {
        plan.nodes.clone()
    };
    let pages = plan.size.div_ceil(page);
    let k = nodes.len() as u64;
    let mut ch = ledger.vm(name)?;
    for (i, node) in nodes.iter().enumerate() {
        let share = pages / k + u64::from((i as u64) < pages % k);
        if share > 0 {
            // On error `ch` drops: everything charged so far is refunded.
            ch.try_charge(*node, class, share * page)?;
        }
    }
    Ok(ch)
}

// ---- helpers ---------------------------------------------------------------------------------

/// The guess to pass to [`table::Table::apply`]: none for 0 (nothing written yet).
fn guess(w: u64) -> Option<u64> {
    (w != 0).then_some(w)
}

fn invalid(path: Option<&Path>, what: &str) -> Error {
    Error::LedgerInvalid {
        path: path.map_or_else(|| PathBuf::from("<in-memory>"), Path::to_path_buf),
        what: what.to_string(),
    }
}

fn check_classes(classes: &[ClassSpec], slots: u32) -> Result<Geometry> {
    let geo = Geometry::new(classes.len() as u64, u64::from(slots)).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "a ledger needs 1..={} classes and 1..={} VM records; got {} and {slots}",
            table::MAX_CLASSES,
            table::MAX_SLOTS,
            classes.len()
        ))
    })?;
    for (i, c) in classes.iter().enumerate() {
        if ![4096, 2 << 20, 1 << 30].contains(&c.page_size_bytes) {
            return Err(Error::InvalidConfig(format!(
                "class page size {} is not 4096, 2097152 or 1073741824",
                c.page_size_bytes
            )));
        }
        if classes[..i]
            .iter()
            .any(|d| d.node == c.node && d.page_size_bytes == c.page_size_bytes)
        {
            return Err(Error::InvalidConfig(format!(
                "class (node {}, {} bytes) given twice",
                c.node, c.page_size_bytes
            )));
        }
    }
    Ok(geo)
}

fn new_table(classes: &[ClassSpec], slots: u32) -> Result<Table> {
    let geo = check_classes(classes, slots)?;
    let region = Region::anonymous(geo.len()).map_err(|e| Error::sys("mmap", e))?;
    let t = Table { region, geo };
    init_table(&t, classes).map_err(|b| invalid(None, &b.text()))?;
    Ok(t)
}

fn init_table(t: &Table, classes: &[ClassSpec]) -> table::R<()> {
    t.store(H_VERSION, VERSION)?;
    t.store(H_CLASSES, t.geo.classes as u64)?;
    t.store(H_SLOTS, t.geo.slots as u64)?;
    t.store(H_LEN, t.geo.len() as u64)?;
    t.store(H_PIDNS, pid_namespace())?;
    for (c, spec) in classes.iter().enumerate() {
        let d = t.geo.desc_off(c);
        t.store(d + D_NODE, u64::from(spec.node.0))?;
        t.store(d + D_PAGE, spec.page_size_bytes)?;
        t.store(d + D_CAPACITY, spec.capacity_bytes)?;
        t.store(d + D_RESERVE, spec.host_reserve_bytes)?;
        t.store(d + D_HEADROOM_PPM, u64::from(spec.headroom_ppm))?;
        t.store(d + D_LIMIT, spec.limit_bytes())?;
    }
    t.store(H_MAGIC, MAGIC)
}

/// Validates a mapped ledger: header, geometry against the mapping's size, class descriptors.
fn validate(region: Region, path: Option<&Path>) -> Result<Table> {
    let len = region.len();
    let rd = |off: usize| -> Result<u64> {
        region
            .w64(off)
            .map(|w| w.load(crate::sync::Ordering::Acquire))
            .ok_or_else(|| invalid(path, "header outside the file"))
    };
    let magic = rd(H_MAGIC)?;
    if magic != MAGIC {
        return Err(invalid(
            path,
            &format!("magic {magic:#018x} is not a numapin ledger's"),
        ));
    }
    let version = rd(H_VERSION)?;
    if version != VERSION {
        return Err(invalid(
            path,
            &format!("layout version {version}, this numapin reads version {VERSION}"),
        ));
    }
    let (nc, ns) = (rd(H_CLASSES)?, rd(H_SLOTS)?);
    let geo = Geometry::new(nc, ns).ok_or_else(|| {
        invalid(
            path,
            &format!("geometry of {nc} classes and {ns} slots is out of range"),
        )
    })?;
    let hl = rd(H_LEN)?;
    if geo.len() as u64 != hl || geo.len() != len {
        return Err(invalid(
            path,
            &format!(
                "{nc} classes and {ns} slots need {} bytes; header says {hl}, file has {len}",
                geo.len()
            ),
        ));
    }
    let ns_file = rd(H_PIDNS)?;
    let ns_here = pid_namespace();
    if ns_file != 0 && ns_here != 0 && ns_file != ns_here {
        return Err(invalid(
            path,
            &format!("it was created in pid namespace {ns_file}, this process is in {ns_here}: owners' pids would be misread. Give each pid namespace its own ledger (NUMAPIN_LEDGER)"),
        ));
    }
    let t = Table { region, geo };
    let mut seen: Vec<(u64, u64)> = Vec::new();
    for c in 0..geo.classes {
        let d = geo.desc_off(c);
        let node = t.load(d + D_NODE).map_err(|b| invalid(path, &b.text()))?;
        let page = t.load(d + D_PAGE).map_err(|b| invalid(path, &b.text()))?;
        if node > u64::from(u32::MAX) || ![4096, 2 << 20, 1 << 30].contains(&page) {
            return Err(invalid(
                path,
                &format!("class {c} has node {node} and page size {page}"),
            ));
        }
        if seen.contains(&(node, page)) {
            return Err(invalid(
                path,
                &format!("class {c} duplicates (node {node}, {page})"),
            ));
        }
        seen.push((node, page));
        t.limit(c).map_err(|b| invalid(path, &b.text()))?;
        t.read_counter(c).map_err(|b| invalid(path, &b.text()))?;
    }
    Ok(t)
}

#[cfg(not(loom))]
fn pid_namespace() -> u64 {
    crate::sys::pid_namespace()
}

#[cfg(loom)]
fn pid_namespace() -> u64 {
    0
}

/// This process's owner word: pid and start time.
fn current_owner() -> Result<u64> {
    use std::sync::atomic::{AtomicU64 as StdU64, Ordering as O};
    // Cached per pid (a forked child recomputes): reading /proc costs microseconds.
    static CACHE: StdU64 = StdU64::new(0);
    let pid = std::process::id();
    let c = CACHE.load(O::Relaxed);
    if c != 0 && owner_parts(c).0 == pid {
        return Ok(c);
    }
    let w = own_owner_word(pid)?;
    CACHE.store(w, O::Relaxed);
    Ok(w)
}

#[cfg(not(loom))]
fn own_owner_word(pid: u32) -> Result<u64> {
    let st = crate::sys::proc_stat(pid)
        .map_err(|e| Error::Sysfs {
            path: format!("/proc/{pid}/stat").into(),
            source: e,
        })?
        .ok_or_else(|| Error::parse(format!("/proc/{pid}/stat").into(), "missing".into()))?;
    owner_word(pid, st.start_time).ok_or_else(|| {
        Error::parse(
            format!("/proc/{pid}/stat").into(),
            format!(
                "pid {pid} or start time {} out of the ledger's range",
                st.start_time
            ),
        )
    })
}

#[cfg(loom)]
fn own_owner_word(pid: u32) -> Result<u64> {
    owner_word(pid.max(1) & 0x3f_ffff, 1).ok_or_else(|| Error::InvalidConfig("pid".into()))
}

/// The default liveness: the pid exists with the same start time and is not a zombie.
#[cfg(not(loom))]
fn process_alive(owner: u64) -> bool {
    let (pid, start) = owner_parts(owner);
    match crate::sys::proc_stat(pid) {
        Ok(Some(st)) => st.start_time == start && st.state != 'Z' && st.state != 'X',
        // Not in our /proc (e.g. hidepid): trust kill(0) so that a live owner is never reaped.
        Ok(None) => crate::sys::process_exists(pid),
        // Unreadable: assume alive (never reap what we cannot prove dead).
        Err(_) => true,
    }
}

#[cfg(loom)]
fn process_alive(_owner: u64) -> bool {
    true
}
