//! Population and verification: the parallel `MADV_POPULATE_WRITE` workers (see
//! `crate::populate`), then `move_pages(2)` over every page or an even sample, and the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use super::map::{prepare, Mapping};
use super::{LockKind, MemPolicy, Report, Reservation, ReservationPlan};
use crate::error::{Error, Result};
use crate::populate::{self, Histogram};
use crate::topology::format_cpulist;
use crate::units::{format_bytes, NodeId, PageSize};

pub(super) fn build(plan: ReservationPlan, preflight_seconds: f64) -> Result<Reservation> {
    let mut notes = plan.notes.clone();
    let t_map = Instant::now();
    let map = prepare(&plan, &mut notes)?;
    let map_seconds = t_map.elapsed().as_secs_f64();
    let report = populate_and_verify(
        &map,
        &plan,
        &Progress::default(),
        notes,
        [preflight_seconds, map_seconds],
    )?;
    Ok(Reservation {
        map,
        report,
        charge: None,
    })
}

/// Progress of a population, shared between the workers and whoever watches.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Bytes populated so far.
    pub(super) done: AtomicU64,
    /// Set to stop the workers early (the pending reservation was dropped).
    pub(super) cancel: AtomicBool,
}

/// Populates, verifies and writes the report. `seconds` = [preflight, map].
pub(super) fn populate_and_verify(
    map: &Mapping,
    plan: &ReservationPlan,
    progress: &Progress,
    mut notes: Vec<String>,
    seconds: [f64; 2],
) -> Result<Report> {
    let len = map.len;
    let native = plan.page_size.native_bytes().expect("concrete");
    let gran = plan.page_size.bytes().expect("concrete");
    let work = populate::Pass {
        base: map.ptr,
        len,
        chunk: populate::chunk_size(len, plan.threads, native, native.max(2 << 20)),
        threads: plan.threads,
        cpus: plan.cpus.clone(),
    };
    let t_pop = Instant::now();
    let (outcome, r) = populate::run(&work, |addr, _, l| {
        // Relaxed: a cancel request only needs to be seen eventually; `done` is a statistic.
        if progress.cancel.load(Ordering::Relaxed) {
            return Err(crate::sys::Errno::new("populate", libc::ECANCELED));
        }
        populate::populate_write(addr, l)?;
        progress.done.fetch_add(l as u64, Ordering::Relaxed);
        Ok(())
    });
    let populate_seconds = t_pop.elapsed().as_secs_f64();
    if let Some(e) = outcome.pin_failed {
        notes.push(format!(
            "could not pin workers to cpus {}: {}",
            format_cpulist(&plan.cpus),
            std::io::Error::from_raw_os_error(e.into())
        ));
    }
    r.map_err(|c| match c.errno.code {
        libc::ECANCELED => Error::PopulationCancelled,
        libc::EINVAL if plan.page_size.is_hugetlb() => {
            Error::sys("madvise(MADV_POPULATE_WRITE)", c.errno)
        }
        errno => Error::Populate {
            offset: c.offset as u64,
            len: c.len as u64,
            errno,
            page_size: plan.page_size,
            nodes: plan.nodes.clone(),
        },
    })?;

    // Verify.
    let t_ver = Instant::now();
    let total_pages = (len / gran) as u64;
    let stride_pages = total_pages.div_ceil(plan.verify_limit).max(1) as usize;
    let stride = stride_pages * gran;
    let hist = std::sync::Mutex::new(Histogram::default());
    let vplan = populate::Pass {
        chunk: work.chunk.div_ceil(stride) * stride,
        ..work.clone()
    };
    let (_, r) = populate::run(&vplan, |addr, _, l| {
        let mut h = Histogram::default();
        populate::query_nodes(addr, l, stride, &mut h)?;
        hist.lock().unwrap_or_else(|p| p.into_inner()).merge(&h);
        Ok(())
    });
    r.map_err(|c| Error::sys("move_pages", c.errno))?;
    let hist = hist.into_inner().unwrap_or_else(|p| p.into_inner());
    let verify_seconds = t_ver.elapsed().as_secs_f64();
    // Bytes per node: exact when every page was checked, the sample's share of the size
    // otherwise.
    let share = |c: u64| -> u64 {
        if stride_pages == 1 {
            c * gran as u64
        } else {
            (u128::from(plan.size) * u128::from(c) / u128::from(hist.queried.max(1))) as u64
        }
    };
    let placement: BTreeMap<NodeId, u64> = hist
        .per_node
        .iter()
        .map(|(n, c)| (NodeId(*n), share(*c)))
        .collect();
    let elsewhere = hist
        .per_node
        .iter()
        .filter(|(n, _)| !plan.nodes.contains(&NodeId(**n)))
        .map(|(_, c)| c)
        .sum::<u64>();
    // Pages not resident are always an error; pages off the policy's nodes are one unless the
    // policy only prefers those nodes.
    let misplaced = hist.missing
        + if plan.policy == MemPolicy::Preferred {
            0
        } else {
            elsewhere
        };
    if misplaced > 0 {
        return Err(Error::Misplaced {
            expected: plan.nodes.clone(),
            misplaced,
            placement: placement.into_iter().collect(),
        });
    }
    if plan.policy == MemPolicy::Interleave && stride_pages == 1 {
        if let Some(e) = interleave_uneven(plan.page_size, &plan.nodes, &hist.per_node) {
            return Err(e);
        }
    }
    if elsewhere > 0 {
        notes.push(format!(
            "{} fell back to other nodes (preferred node(s) {:?} were full)",
            format_bytes(share(elsewhere)),
            plan.nodes
        ));
    }

    let thp_bytes = if plan.page_size == PageSize::Transparent {
        let t = crate::smaps::huge_backed_bytes(map.ptr.as_ptr() as usize).unwrap_or(0);
        if t < plan.size {
            notes.push(format!(
                "THP: only {} of {} is backed by huge pages (the kernel could not find enough free 2 MiB blocks on the node)",
                format_bytes(t),
                format_bytes(plan.size)
            ));
        }
        Some(t)
    } else {
        None
    };

    Ok(Report {
        size_bytes: plan.size,
        page_size_bytes: gran as u64,
        page_size: plan.page_size,
        requested_page_size: plan.requested_page_size,
        policy: plan.policy,
        nodes: plan.nodes.clone(),
        placement,
        verified_pages: hist.queried,
        total_pages,
        verified_all: stride_pages == 1,
        locked: plan.lock != LockKind::None,
        lock: plan.lock,
        shared: plan.shared,
        thp_bytes,
        threads: work.threads.min(len.div_ceil(work.chunk)),
        pinned_cpus: plan.cpus.clone(),
        worker_cpus: outcome.worker_cpus,
        preflight_seconds: seconds[0],
        map_seconds: seconds[1],
        populate_seconds,
        verify_seconds,
        notes,
    })
}

/// Whether interleaved hugetlb pages came out uneven: the kernel places page `i` on the
/// `i`-th node round-robin, so with every page verified each node holds the region's pages
/// divided by the nodes, rounded down or up. A node with fewer ran out while the region was
/// populated, and the kernel took its pages from another node (hugetlb interleave falls back).
/// Base pages and THP are not judged: THP mixes 2 MiB and 4 KiB pages, so the shares are not
/// exact there.
fn interleave_uneven(
    page_size: PageSize,
    nodes: &[NodeId],
    per_node: &BTreeMap<u32, u64>,
) -> Option<Error> {
    if !page_size.is_hugetlb() || nodes.len() < 2 {
        return None;
    }
    let total: u64 = per_node.values().sum();
    let share = total / nodes.len() as u64;
    let count = |n: NodeId| per_node.get(&n.0).copied().unwrap_or(0);
    let short_nodes: Vec<NodeId> = nodes
        .iter()
        .copied()
        .filter(|&n| count(n) < share)
        .collect();
    (!short_nodes.is_empty()).then(|| Error::InterleaveUneven {
        page_size,
        nodes: nodes.to_vec(),
        placement: per_node.iter().map(|(n, c)| (NodeId(*n), *c)).collect(),
        share,
        short_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::Reservation;

    #[test]
    fn interleave_fallback_is_detected() {
        let hist = |v: &[(u32, u64)]| v.iter().copied().collect::<BTreeMap<u32, u64>>();
        let two = [NodeId(0), NodeId(1)];
        // Even, or one page apart: what round-robin gives.
        assert!(interleave_uneven(PageSize::Huge2M, &two, &hist(&[(0, 50), (1, 50)])).is_none());
        assert!(interleave_uneven(PageSize::Huge2M, &two, &hist(&[(0, 51), (1, 50)])).is_none());
        // Node 1 ran dry mid-populate and node 0 took its pages.
        match interleave_uneven(PageSize::Huge2M, &two, &hist(&[(0, 60), (1, 41)])) {
            Some(Error::InterleaveUneven {
                share,
                short_nodes,
                placement,
                ..
            }) => {
                assert_eq!(share, 50);
                assert_eq!(short_nodes, vec![NodeId(1)]);
                assert_eq!(placement, vec![(NodeId(0), 60), (NodeId(1), 41)]);
            }
            other => panic!("{other:?}"),
        }
        // A node with no page at all; and base pages are not judged.
        assert!(interleave_uneven(PageSize::Huge1G, &two, &hist(&[(0, 4)])).is_some());
        assert!(interleave_uneven(PageSize::Base4K, &two, &hist(&[(0, 60), (1, 41)])).is_none());
    }

    #[test]
    fn small_base_page_reservation() {
        let mut r = Reservation::builder(8 << 20)
            .page_size(PageSize::Base4K)
            .lock(false)
            .threads(2)
            .build()
            .unwrap();
        assert_eq!(r.len(), 8 << 20);
        assert!(r.as_slice().iter().all(|&b| b == 0));
        r.as_mut_slice()[12345] = 7;
        assert_eq!(r.as_slice()[12345], 7);
        let rep = r.report();
        assert_eq!(rep.placement.values().sum::<u64>(), 8 << 20);
        assert!(rep.verified_all);
        assert_eq!(rep.verified_pages, rep.total_pages);
        // 4k means no THP, whatever the host's THP mode (`nh` = MADV_NOHUGEPAGE).
        let vma = crate::smaps::vma_info(r.as_ptr() as usize)
            .unwrap()
            .expect("the region is mapped");
        assert!(vma.flags.iter().any(|f| f == "nh"), "{:?}", vma.flags);
        assert_eq!(vma.anon_huge, 0);
    }
}
