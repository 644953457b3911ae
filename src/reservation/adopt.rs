//! Adopting a shared reservation made by another process: check the descriptor, map the
//! existing pages shared, lock, verify placement. Nothing is allocated or zeroed.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use super::map::Mapping;
use super::{LockKind, MemPolicy, Report, Reservation, DEFAULT_VERIFY_LIMIT};
use crate::error::{Error, Result};
use crate::populate::{self, Histogram};
use crate::shared::{self, AdoptProblem, FileBacking};
use crate::sys;
use crate::units::{format_bytes, NodeId, PageSize};

/// Adopts a shared reservation from its descriptor. Get one from [`Reservation::adopt`].
///
/// Every expectation is optional: what is not asked for is only reported. What is always
/// checked: the descriptor is a memfd on hugetlbfs or shmem, sealed with
/// `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL` (so nobody can truncate it under this
/// process), writable, and fully populated (so mapping it allocates and zeroes nothing).
#[derive(Debug)]
#[must_use = "an adopt builder does nothing until build() is called"]
pub struct AdoptBuilder {
    fd: OwnedFd,
    size: Option<u64>,
    page_size: PageSize,
    nodes: Vec<NodeId>,
    policy: MemPolicy,
    lock: bool,
    verify_limit: u64,
    charge: Option<crate::ledger::VmRecord>,
}

impl Reservation {
    /// Starts adopting the shared reservation behind `fd` (received over a UNIX socket,
    /// inherited from `numapin run`, or from [`Reservation::into_fd`]): see [`AdoptBuilder`].
    pub fn adopt(fd: OwnedFd) -> AdoptBuilder {
        AdoptBuilder {
            fd,
            size: None,
            page_size: PageSize::Auto,
            nodes: Vec::new(),
            policy: MemPolicy::Bind,
            lock: true,
            verify_limit: DEFAULT_VERIFY_LIMIT,
            charge: None,
        }
    }
}

impl AdoptBuilder {
    /// Requires the file to be exactly `size` bytes.
    pub fn size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Requires this page size (`Huge2M`, `Huge1G`; `Base4K` or `Transparent` for shmem).
    /// `Auto` (the default) takes whatever the file has.
    pub fn page_size(mut self, page_size: PageSize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Requires every page on this node.
    pub fn node(mut self, node: NodeId) -> Self {
        self.nodes = vec![node];
        self
    }

    /// Requires every page on these nodes (with [`MemPolicy::Preferred`]: only reports).
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    /// How strictly to hold the placement to the nodes: `Bind` and `Interleave` refuse pages
    /// elsewhere, `Preferred` notes them (default `Bind`).
    pub fn policy(mut self, policy: MemPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whether to `mlock` a shmem file's pages in this process (default `true`; hugetlb pages
    /// are never swapped and need no lock).
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }

    /// Verify every page up to `pages` pages, an even sample above (default
    /// [`DEFAULT_VERIFY_LIMIT`]).
    pub fn verify_limit(mut self, pages: u64) -> Self {
        self.verify_limit = pages.max(1);
        self
    }

    /// A ledger charge for the memory that the adopted reservation holds (and releases after
    /// unmapping), e.g. one moved to this process by whoever handed the memory over.
    pub fn charge(mut self, charge: crate::ledger::VmRecord) -> Self {
        self.charge = Some(charge);
        self
    }

    /// Checks the descriptor, maps the file shared, locks (shmem), maps the existing pages
    /// into this process (`MADV_POPULATE_READ`, which allocates nothing because every page
    /// exists), and verifies placement with `move_pages(2)`.
    ///
    /// # Errors
    /// [`Error::NotAdoptable`] naming the [`AdoptProblem`] (not a file, not a memfd,
    /// unsealed, write-sealed, wrong size, wrong page size, not populated);
    /// [`Error::MemlockLimit`] when a shmem file cannot be locked; [`Error::Misplaced`] when
    /// pages are off the nodes asked for; [`Error::Sys`] for other failed calls. The
    /// descriptor is closed and nothing stays mapped after an error.
    pub fn build(self) -> Result<Reservation> {
        let t0 = Instant::now();
        let raw = self.fd.as_raw_fd();
        let refuse = |problem| Error::NotAdoptable { fd: raw, problem };
        let info = shared::inspect(self.fd.as_fd())?;
        let file_page = match info.backing {
            FileBacking::Hugetlbfs(p) => p,
            FileBacking::Shmem => PageSize::Base4K,
        };
        if let Some(expected) = self.size {
            if expected != info.size {
                return Err(refuse(AdoptProblem::WrongSize {
                    expected,
                    actual: info.size,
                }));
            }
        }
        let page_ok = match self.page_size {
            PageSize::Auto => true,
            PageSize::Base4K | PageSize::Transparent => info.backing == FileBacking::Shmem,
            p => info.backing == FileBacking::Hugetlbfs(p),
        };
        if !page_ok {
            return Err(refuse(AdoptProblem::WrongPageSize {
                expected: self.page_size,
                actual: file_page,
            }));
        }
        if info.allocated < info.size {
            return Err(refuse(AdoptProblem::NotPopulated {
                size: info.size,
                allocated: info.allocated,
            }));
        }
        let len = usize::try_from(info.size).map_err(|_| Error::InvalidSize {
            size: info.size,
            reason: "larger than this platform's address space".into(),
        })?;
        let inspect_seconds = t0.elapsed().as_secs_f64();

        // Map: no MAP_NORESERVE, but every page already exists, so the hugetlb reservation
        // the kernel takes for a shared mapping covers pages the file holds (no pool change).
        let t_map = Instant::now();
        let ptr = sys::mmap_shared(self.fd.as_fd(), len, false).map_err(|e| match e.code {
            libc::ENOMEM if info.backing != FileBacking::Shmem => Error::Sys {
                call: "mmap (hugetlb reservation for a file whose pages should all exist)",
                source: std::io::Error::from_raw_os_error(e.into()),
            },
            e => Error::sys("mmap", e),
        })?;
        let map = Mapping {
            ptr,
            len,
            file: Some(self.fd),
        };
        let mut notes = vec![format!(
            "adopted descriptor {raw} ({}, sealed {}): mapped the pages it holds, allocated none",
            info.name.as_deref().unwrap_or("name unknown"),
            info.seals
        )];
        sys::madvise(map.ptr, len, libc::MADV_DONTDUMP)
            .map_err(|e| Error::sys("madvise(MADV_DONTDUMP)", e))?;
        sys::madvise(map.ptr, len, libc::MADV_DONTFORK)
            .map_err(|e| Error::sys("madvise(MADV_DONTFORK)", e))?;
        let lock = match info.backing {
            FileBacking::Hugetlbfs(_) => LockKind::Hugetlb,
            FileBacking::Shmem if self.lock => {
                sys::mlock2(map.ptr, len, true).map_err(|e| match e.code {
                    libc::ENOMEM | libc::EAGAIN | libc::EPERM => Error::MemlockLimit {
                        requested: info.size,
                        limit: sys::memlock_limit(),
                        locked_already: sys::locked_bytes(),
                    },
                    e => Error::sys("mlock2", e),
                })?;
                LockKind::Mlock
            }
            FileBacking::Shmem => LockKind::None,
        };
        let map_seconds = t_map.elapsed().as_secs_f64();

        // Page tables for the pages that exist: a read fault on a present page maps it.
        let t_pop = Instant::now();
        sys::madvise_retry(map.ptr, len, libc::MADV_POPULATE_READ)
            .map_err(|e| Error::sys("madvise(MADV_POPULATE_READ)", e))?;
        let populate_seconds = t_pop.elapsed().as_secs_f64();
        // Someone may have punched a hole between inspect and here; then a page was allocated.
        if let Ok(after) = shared::inspect(map.file.as_ref().expect("set above").as_fd()) {
            if after.allocated > info.allocated {
                notes.push(format!(
                    "{} of the file was allocated while adopting it (a hole was punched meanwhile)",
                    format_bytes(after.allocated - info.allocated)
                ));
            }
        }

        // Verify.
        let t_ver = Instant::now();
        let gran = info.backing.granule() as usize;
        let total_pages = (len / gran) as u64;
        let stride_pages = total_pages.div_ceil(self.verify_limit).max(1) as usize;
        let mut hist = Histogram::default();
        populate::query_nodes(map.ptr, len, stride_pages * gran, &mut hist)
            .map_err(|e| Error::sys("move_pages", e))?;
        let verify_seconds = t_ver.elapsed().as_secs_f64();
        let share = |c: u64| -> u64 {
            if stride_pages == 1 {
                c * gran as u64
            } else {
                (u128::from(info.size) * u128::from(c) / u128::from(hist.queried.max(1))) as u64
            }
        };
        let placement: BTreeMap<NodeId, u64> = hist
            .per_node
            .iter()
            .map(|(n, c)| (NodeId(*n), share(*c)))
            .collect();
        let nodes: Vec<NodeId> = if self.nodes.is_empty() {
            placement.keys().copied().collect()
        } else {
            self.nodes.clone()
        };
        let elsewhere: u64 = hist
            .per_node
            .iter()
            .filter(|(n, _)| !nodes.contains(&NodeId(**n)))
            .map(|(_, c)| c)
            .sum();
        let misplaced = hist.missing
            + if self.policy == MemPolicy::Preferred {
                0
            } else {
                elsewhere
            };
        if misplaced > 0 {
            return Err(Error::Misplaced {
                expected: nodes,
                misplaced,
                placement: placement.into_iter().collect(),
            });
        }
        if elsewhere > 0 {
            notes.push(format!(
                "{} is on other nodes than the preferred {nodes:?}",
                format_bytes(share(elsewhere))
            ));
        }
        let thp_bytes = (info.backing == FileBacking::Shmem)
            .then(|| crate::smaps::huge_backed_bytes(map.ptr.as_ptr() as usize).unwrap_or(0));
        let page_size = match (info.backing, thp_bytes) {
            (FileBacking::Shmem, Some(t)) if t > 0 => PageSize::Transparent,
            _ => file_page,
        };
        let report = Report {
            size_bytes: info.size,
            page_size_bytes: gran as u64,
            page_size,
            requested_page_size: self.page_size,
            policy: self.policy,
            nodes,
            placement,
            verified_pages: hist.queried,
            total_pages,
            verified_all: stride_pages == 1,
            locked: lock != LockKind::None,
            lock,
            shared: true,
            thp_bytes,
            threads: 1,
            pinned_cpus: Vec::new(),
            worker_cpus: Vec::new(),
            preflight_seconds: inspect_seconds,
            map_seconds,
            populate_seconds,
            verify_seconds,
            notes,
        };
        Ok(Reservation {
            map,
            report,
            charge: self.charge,
        })
    }
}
