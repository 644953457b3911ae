//! Mapping: the owned region, and map → bind → advise → lock, everything before the first
//! fault.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use super::facts::HostFacts;
use super::preflight::check_capacity;
use super::{LockKind, MemPolicy, Reservation, ReservationPlan};
use crate::error::{Error, PolicyDenial, Result};
use crate::sys::{self, Backing, NodeMask};
use crate::units::{NodeId, PageSize};

/// An owned mapping, unmapped on drop: private anonymous memory, or (a shared reservation) the
/// whole of a sealed memory file mapped `MAP_SHARED`, whose descriptor it also owns (closed
/// after the unmap; the pages live on for as long as another descriptor or mapping does).
///
/// Invariant: `ptr..ptr+len` is a mapping created by this crate, owned by this value alone,
/// and readable and writable for as long as the value lives.
#[derive(Debug)]
pub(crate) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    pub(super) file: Option<OwnedFd>,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner to another thread
// moves nothing the kernel ties to a thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only hands out `&[u8]` or the raw address; Rust's borrow rules on
// `Reservation` keep writes exclusive.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// The mapping as bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: per the type invariant the range is mapped readable for the life of `self`,
        // and the only mutable access goes through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapping as mutable bytes.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: per the type invariant the range is mapped read-write for the life of
        // `self`, and `&mut self` guarantees this is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// The kernel's node mask of these nodes.
fn node_mask(nodes: &[NodeId]) -> NodeMask {
    NodeMask::new(&nodes.iter().map(|n| n.0).collect::<Vec<u32>>())
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: per the type invariant of `Reservation`/`Mapping` we own the range and no
        // borrow of it can outlive `self`.
        if let Err(errno) = unsafe { sys::munmap(self.ptr, self.len) } {
            // munmap of a whole mapping we created can only fail on a kernel or numapin bug.
            // We do not panic (a panic in drop during unwinding aborts the VMM) and we do not
            // pretend: the memory stays mapped, so any raw pointer a VMM still holds stays
            // valid, and a ledger charge (held by the caller) keeps counting it.
            eprintln!(
                "numapin: munmap({:p}, {}) failed: {}; the region stays mapped (leaked)",
                self.ptr,
                self.len,
                std::io::Error::from_raw_os_error(errno.into())
            );
        }
    }
}

/// Whether the process's cpuset (read now) leaves out some of the nodes.
fn cpuset_denies(nodes: &[NodeId]) -> bool {
    sys::proc_status_field("Mems_allowed_list")
        .and_then(|s| crate::topology::parse_cpulist(&s).ok())
        .is_some_and(|allowed| nodes.iter().any(|n| allowed.binary_search(&n.0).is_err()))
}

/// Why a policy call was refused: seccomp, cpuset, or something else.
fn classify_denial(nodes: &[NodeId]) -> PolicyDenial {
    if sys::proc_status_field("Seccomp").is_some_and(|v| v != "0") {
        return PolicyDenial::Seccomp;
    }
    if cpuset_denies(nodes) {
        return PolicyDenial::Cpuset;
    }
    PolicyDenial::Other
}

fn policy_error(call: &'static str, errno: i32, nodes: &[NodeId]) -> Error {
    match errno {
        libc::EPERM => Error::PolicyDenied {
            call,
            nodes: nodes.to_vec(),
            denial: classify_denial(nodes),
        },
        libc::EINVAL if cpuset_denies(nodes) => Error::PolicyDenied {
            call,
            nodes: nodes.to_vec(),
            denial: PolicyDenial::Cpuset,
        },
        libc::ENOSYS => Error::Unsupported {
            what: "NUMA memory policies (CONFIG_NUMA)",
            kernel: sys::kernel_release(),
            fix: "use a kernel built with CONFIG_NUMA",
        },
        e => Error::sys(call, e),
    }
}

fn mpol_mode(policy: MemPolicy, nodes: &[NodeId]) -> i32 {
    match policy {
        MemPolicy::Bind => libc::MPOL_BIND,
        MemPolicy::Interleave => libc::MPOL_INTERLEAVE,
        MemPolicy::Preferred if nodes.len() == 1 => libc::MPOL_PREFERRED,
        MemPolicy::Preferred => sys::MPOL_PREFERRED_MANY,
    }
}

/// Describes a shortage the kernel found after the preflight passed (`mmap` said `ENOMEM`),
/// on numbers read again now: the same attribution as the preflight.
fn pool_short_now(plan: &ReservationPlan) -> Error {
    match HostFacts::gather(None) {
        Ok(facts) => pool_short_at(plan, &facts),
        Err(e) => e,
    }
}

/// The shortage of `plan` on `facts`. If those numbers would pass (the pools changed again
/// between the kernel's refusal and the reading), the first node with at least one page short:
/// the kernel refused, so at least one was missing when it did.
pub(super) fn pool_short_at(plan: &ReservationPlan, facts: &HostFacts) -> Error {
    let page = plan.page_size;
    let b = Reservation::builder(plan.size).policy(plan.policy);
    match check_capacity(&b, facts, &plan.nodes, page) {
        Err(e @ (Error::HugepagesShort { .. } | Error::HugepagesShortOnNodes { .. })) => e,
        _ => {
            let t = &facts.topology;
            let node = plan.nodes[0];
            let wanted = plan.size / page.bytes().unwrap_or(1) as u64;
            let free_on_node = t
                .node(node)
                .and_then(|n| n.pool(page))
                .map_or(0, |p| p.free);
            Error::HugepagesShort {
                node,
                page_size: page,
                wanted,
                free_on_node,
                free_elsewhere: t.free_hugepages_elsewhere(page, &[node]),
                reserved: facts.host_pool(page).map_or(0, |h| h.reserved),
                short: wanted.saturating_sub(free_on_node).max(1),
            }
        }
    }
}

/// Runs `f` on a short-lived thread that holds `MPOL_BIND` to the plan's nodes (when the policy
/// is `Bind`), so that the kernel's hugetlb reservation at `mmap` (hugetlb_acct_memory) counts
/// only the free pages of those nodes, and the caller's own thread policy is never touched.
fn on_bound_thread<T: Send>(
    plan: &ReservationPlan,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let bind_at_map = plan.policy == MemPolicy::Bind;
    let nodes = &plan.nodes;
    let mask = node_mask(nodes);
    std::thread::scope(|s| {
        s.spawn(|| {
            if bind_at_map {
                sys::set_mempolicy(libc::MPOL_BIND, Some(&mask))
                    .map_err(|e| policy_error("set_mempolicy", e.code, nodes))?;
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::sys("mmap", libc::EIO)))
    })
}

/// A shared reservation's mapping: a sealed memfd of the plan's size (hugetlbfs or shmem),
/// mapped `MAP_SHARED` from a thread bound to the nodes, as the private hugetlb mapping is.
fn map_shared(plan: &ReservationPlan) -> Result<Mapping> {
    let len = plan.size as usize;
    // Named after the VM, so that /proc/PID/maps, numa_maps and lsof say whose memory it is
    // (warm-pool memory changes hands: it is the pool's).
    let name = match plan.vm.as_deref() {
        Some(vm) if crate::snapshot::is_pool_memory(vm) => "numapin:pool".to_string(),
        Some(vm) => format!("numapin:{vm}"),
        None => "numapin".to_string(),
    };
    let file = crate::shared::create_sealed(&name, plan.page_size, plan.size)?;
    let fd = file.as_fd();
    let r = on_bound_thread(plan, || {
        sys::mmap_shared(fd, len, plan.noreserve)
            .map(|ptr| ptr.as_ptr() as usize)
            .map_err(|e| match e.code {
                libc::ENOMEM if plan.page_size.is_hugetlb() => pool_short_now(plan),
                e => Error::sys("mmap", e),
            })
    })?;
    // On error `file` drops here: closing the only reference frees the (still empty) file.
    let ptr = NonNull::new(r as *mut u8).expect("mmap never returns null on success");
    Ok(Mapping {
        ptr,
        len,
        file: Some(file),
    })
}

fn map(plan: &ReservationPlan) -> Result<Mapping> {
    if plan.shared {
        return map_shared(plan);
    }
    let len = plan.size as usize;
    match plan.page_size {
        PageSize::Huge2M | PageSize::Huge1G => {
            let backing = if plan.page_size == PageSize::Huge2M {
                Backing::Huge2M
            } else {
                Backing::Huge1G
            };
            let r = on_bound_thread(plan, || {
                sys::mmap_anonymous(len, backing, plan.noreserve)
                    .map(|ptr| ptr.as_ptr() as usize)
                    .map_err(|e| match e.code {
                        libc::ENOMEM => pool_short_now(plan),
                        e => Error::sys("mmap", e),
                    })
            })?;
            let ptr = NonNull::new(r as *mut u8).expect("mmap never returns null on success");
            Ok(Mapping {
                ptr,
                len,
                file: None,
            })
        }
        PageSize::Transparent => {
            // Aligned to 2 MiB so that every 2 MiB of the region can be one huge page.
            let ptr =
                sys::mmap_thp_aligned(len, plan.noreserve).map_err(|e| Error::sys("mmap", e))?;
            Ok(Mapping {
                ptr,
                len,
                file: None,
            })
        }
        PageSize::Base4K => {
            let ptr = sys::mmap_anonymous(len, Backing::Base, plan.noreserve)
                .map_err(|e| Error::sys("mmap", e))?;
            Ok(Mapping {
                ptr,
                len,
                file: None,
            })
        }
        PageSize::Auto => unreachable!("resolved in preflight"),
    }
}

/// Maps, binds, advises and locks: everything before the first fault.
pub(super) fn prepare(plan: &ReservationPlan, notes: &mut Vec<String>) -> Result<Mapping> {
    let map = map(plan)?;
    let len = map.len;

    // Bind before the first fault.
    let mask = node_mask(&plan.nodes);
    let flags = if plan.policy == MemPolicy::Bind {
        sys::MPOL_MF_STRICT | sys::MPOL_MF_MOVE
    } else {
        0
    };
    sys::mbind(
        map.ptr,
        len,
        mpol_mode(plan.policy, &plan.nodes),
        &mask,
        flags,
    )
    .map_err(|e| {
        if e.code == libc::EINVAL && plan.policy == MemPolicy::Preferred && plan.nodes.len() > 1 {
            Error::Unsupported {
                what: "MPOL_PREFERRED_MANY (Linux 5.15)",
                kernel: sys::kernel_release(),
                fix: "prefer a single node, or run a kernel >= 5.15",
            }
        } else {
            policy_error("mbind", e.code, &plan.nodes)
        }
    })?;

    // Advice: keep guest memory out of core dumps and children, away from KSM.
    sys::madvise(map.ptr, len, libc::MADV_DONTDUMP)
        .map_err(|e| Error::sys("madvise(MADV_DONTDUMP)", e))?;
    sys::madvise(map.ptr, len, libc::MADV_DONTFORK)
        .map_err(|e| Error::sys("madvise(MADV_DONTFORK)", e))?;
    match sys::madvise(map.ptr, len, libc::MADV_UNMERGEABLE) {
        Ok(()) => {}
        // A kernel without CONFIG_KSM refuses the advice; then nothing can merge anyway.
        Err(e) if e.code == libc::EINVAL => {
            notes.push("kernel has no KSM: MADV_UNMERGEABLE skipped".into())
        }
        Err(e) => return Err(Error::sys("madvise(MADV_UNMERGEABLE)", e)),
    }
    if plan.page_size == PageSize::Transparent {
        sys::madvise(map.ptr, len, libc::MADV_HUGEPAGE)
            .map_err(|e| Error::sys("madvise(MADV_HUGEPAGE)", e))?;
    }
    if plan.page_size == PageSize::Base4K {
        // 4k means 4 KiB pages: with THP `always` the kernel would otherwise back the region
        // with huge pages the caller did not ask for (and the report would be wrong).
        match sys::madvise(map.ptr, len, libc::MADV_NOHUGEPAGE) {
            // A kernel without THP refuses the advice; then no huge page can appear anyway.
            Ok(()) => {}
            Err(e) if e.code == libc::EINVAL => {}
            Err(e) => return Err(Error::sys("madvise(MADV_NOHUGEPAGE)", e)),
        }
    }

    if plan.lock == LockKind::Mlock {
        sys::mlock2(map.ptr, len, true).map_err(|e| match e.code {
            libc::ENOMEM | libc::EAGAIN | libc::EPERM => Error::MemlockLimit {
                requested: plan.size,
                limit: sys::memlock_limit(),
                locked_already: sys::locked_bytes(),
            },
            e => Error::sys("mlock2", e),
        })?;
    }
    Ok(map)
}
