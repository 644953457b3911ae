//! Ledger files: creation (race-free), opening and validation of untrusted images.

use std::path::Path;
#[cfg(not(loom))]
use std::path::PathBuf;

use super::owner::{pid_namespace, Beacons};
use super::region::Region;
use super::table::{
    self, Geometry, Table, D_CAPACITY, D_HEADROOM_PPM, D_LIMIT, D_NODE, D_PAGE, D_RESERVE,
    H_CLASSES, H_LEN, H_MAGIC, H_PIDNS, H_SLOTS, H_VERSION, MAGIC, VERSION,
};
#[cfg(not(loom))]
use super::trust;
#[cfg(not(loom))]
use super::LedgerConfig;
use super::{invalid, ClassSpec, Ledger};
use crate::error::{Error, Result};
#[cfg(not(loom))]
use crate::topology::Topology;

impl Ledger {
    /// Opens the host ledger at `path`, creating it from this host's topology
    /// ([`ClassSpec::from_topology`], [`LedgerConfig::from_env`]) if it does not exist.
    ///
    /// # Errors
    /// As [`Ledger::open_existing`] and [`Ledger::create`].
    #[cfg(not(loom))]
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        Self::open_or_create(path, &LedgerConfig::from_env()?)
    }

    /// Under loom there are no files: the models use [`Ledger::in_memory`].
    ///
    /// # Errors
    /// Always [`Error::LedgerIo`] (`Unsupported`).
    #[cfg(loom)]
    pub fn open(path: impl AsRef<Path>) -> Result<Ledger> {
        Err(Error::LedgerIo {
            path: path.as_ref().to_path_buf(),
            op: "open (no ledger files under cfg(loom))",
            source: std::io::ErrorKind::Unsupported.into(),
        })
    }

    /// Opens the ledger at `path`, creating it with `config` (classes from this host's
    /// topology) if it does not exist — and its directory (one level, mode 0755) if that is
    /// missing, as `/run/numapin` is after boot. The ledger then follows this host's pools and
    /// memory ([`Ledger::follow_host`]): they are re-read now, on every snapshot and on every
    /// reservation's admission.
    ///
    /// # Errors
    /// As [`Ledger::open_existing`] and [`Ledger::create`].
    #[cfg(not(loom))]
    pub fn open_or_create(path: impl AsRef<Path>, config: &LedgerConfig) -> Result<Ledger> {
        let path = path.as_ref();
        trust::ensure_dir(path)?;
        let l = match Self::open_existing_with(path, config.group) {
            Err(Error::LedgerIo { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let topo = Topology::from_sysfs()?;
                let classes =
                    ClassSpec::from_topology(&topo, config.base_reserve_bytes, config.headroom_ppm);
                Self::create(path, &classes, config)
            }
            r => r,
        }?;
        // Its classes are this host's: keep their capacities following the host.
        l.follow_host();
        l.refresh_capacity()?;
        Ok(l)
    }

    /// Opens an existing ledger file and validates it: who may write it and its directory
    /// (the trust model, with the group from `NUMAPIN_LEDGER_GID`), magic, version, geometry
    /// against the file's size, pid namespace, every class descriptor. Never creates. This is
    /// the entry point for untrusted files: any content gives a ledger or an error, never a
    /// panic.
    ///
    /// # Errors
    /// [`Error::LedgerIo`] if it cannot be opened (not found, permissions, a symlink: the file
    /// is opened with `O_NOFOLLOW`), [`Error::LedgerNotAFile`], [`Error::LedgerUntrusted`],
    /// [`Error::InvalidEnv`], [`Error::LedgerInvalid`] if it is not a valid ledger.
    #[cfg(not(loom))]
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Ledger> {
        Self::open_existing_with(path.as_ref(), LedgerConfig::from_env()?.group)
    }

    #[cfg(not(loom))]
    fn open_existing_with(path: &Path, group: Option<u32>) -> Result<Ledger> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |op, source| Error::LedgerIo {
            path: path.to_path_buf(),
            op,
            source,
        };
        // Look before opening: a FIFO would block the open, a device would be opened.
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if !md.file_type().is_file() {
                return Err(Error::LedgerNotAFile {
                    path: path.to_path_buf(),
                    kind: trust::kind(md.file_type()),
                });
            }
        }
        trust::check_dir(path)?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| io("open", e))?;
        // Then the descriptor itself: what is checked is what is mapped.
        let md = f.metadata().map_err(|e| io("fstat", e))?;
        trust::check_file(path, &md, group)?;
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
            .map_err(|e| io("mmap", std::io::Error::from_raw_os_error(e.into())))?;
        // The size once more, now that it is mapped: a file truncated between the `fstat` and
        // the `mmap` would fault on access (only its owner or root can still do that).
        let now = f.metadata().map_err(|e| io("fstat", e))?.len();
        if now != len {
            return Err(invalid(
                Some(path),
                &format!("its size changed from {len} to {now} bytes while it was opened"),
            ));
        }
        let t = validate(Region(region), Some(path))?;
        let b = beacons(&t.geo, f, Some(path));
        Ledger::from_table(t, Some(path.to_path_buf()), b)
    }

    /// Creates a ledger file at `path` race-free: the file is made under a temporary name
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600, or 0660 with `config.group`), sized and
    /// initialised (header, classes), then linked into place. If another process created
    /// `path` first, opens that one instead.
    ///
    /// # Errors
    /// [`Error::LedgerShape`], [`Error::LedgerClassPageSize`] or [`Error::LedgerClassTwice`]
    /// for bad classes, [`Error::LedgerIo`] for file errors, and
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
        trust::check_dir(path)?;
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
                .map_err(|e| io("mmap", std::io::Error::from_raw_os_error(e.into())))?;
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
            Self::open_existing_with(path, config.group)
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
        let (region, backing) = anonymous(image.len())?;
        for (i, ch) in image.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(ch.try_into().unwrap_or([0; 8]));
            if let Some(w) = region.w64(i * 8) {
                w.store(v, crate::sync::Ordering::Relaxed);
            }
        }
        let t = validate(region, None)?;
        let b = beacons(&t.geo, backing, None);
        Ledger::from_table(t, None, b)
    }
}

fn check_classes(classes: &[ClassSpec], slots: u32) -> Result<Geometry> {
    let geo = Geometry::new(classes.len() as u64, u64::from(slots)).ok_or(Error::LedgerShape {
        classes: classes.len(),
        slots,
        max_classes: table::MAX_CLASSES,
        max_slots: table::MAX_SLOTS,
    })?;
    for (i, c) in classes.iter().enumerate() {
        if ![4096, 2 << 20, 1 << 30].contains(&c.page_size_bytes) {
            return Err(Error::LedgerClassPageSize {
                page_size_bytes: c.page_size_bytes,
            });
        }
        if classes[..i]
            .iter()
            .any(|d| d.node == c.node && d.page_size_bytes == c.page_size_bytes)
        {
            return Err(Error::LedgerClassTwice {
                node: c.node,
                page_size_bytes: c.page_size_bytes,
            });
        }
    }
    Ok(geo)
}

pub(super) fn new_table(classes: &[ClassSpec], slots: u32) -> Result<(Table, Beacons)> {
    let geo = check_classes(classes, slots)?;
    let (region, backing) = anonymous(geo.len())?;
    let t = Table { region, geo };
    init_table(&t, classes).map_err(|b| invalid(None, &b.text()))?;
    let b = beacons(&geo, backing, None);
    Ok((t, b))
}

/// What an in-memory ledger lives in: an anonymous memory file (`memfd_create`), so that its
/// slots can be locked like a file's (and children forked later share it); under loom nothing.
#[cfg(not(loom))]
type Backing = std::fs::File;
#[cfg(loom)]
type Backing = ();

#[cfg(not(loom))]
fn anonymous(len: usize) -> Result<(Region, Backing)> {
    let fd = rustix::fs::memfd_create("numapin-ledger", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::sys("memfd_create", e.raw_os_error()))?;
    rustix::fs::ftruncate(&fd, len as u64)
        .map_err(|e| Error::sys("ftruncate", e.raw_os_error()))?;
    let f = std::fs::File::from(fd);
    let region = crate::sys::SharedRegion::map_file(&f, len).map_err(|e| Error::sys("mmap", e))?;
    Ok((Region(region), f))
}

#[cfg(loom)]
fn anonymous(len: usize) -> Result<(Region, Backing)> {
    Ok((
        Region::anonymous(len).map_err(|e| Error::sys("mmap", e))?,
        (),
    ))
}

#[cfg(not(loom))]
fn beacons(_geo: &Geometry, backing: Backing, path: Option<&Path>) -> Beacons {
    let path = path.map_or_else(|| PathBuf::from("<in-memory>"), Path::to_path_buf);
    Beacons::new(backing, path)
}

#[cfg(loom)]
fn beacons(geo: &Geometry, _backing: Backing, _path: Option<&Path>) -> Beacons {
    Beacons::new((0..geo.slots).map(|s| geo.slot_off(s) as u64).collect())
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
pub(super) fn validate(region: Region, path: Option<&Path>) -> Result<Table> {
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
