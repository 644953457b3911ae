//! The default job of `numapin` with no arguments: show the topology, reserve a demonstration
//! guest with the best page size available, print the verified report, release.

use numapin::{format_bytes, PageSize, Reservation, Topology};

use crate::CliError;

/// The demonstration guest's size: 1 GiB, or less on a small host.
fn demo_size(t: &Topology) -> u64 {
    let free: u64 = t
        .nodes
        .iter()
        .map(|n| n.mem_available_bytes())
        .max()
        .unwrap_or(0);
    let mut size = 1u64 << 30;
    // Use at most a quarter of the free memory of the best node, in 2 MiB steps.
    while size > (2 << 20) && size > free / 4 {
        size /= 2;
    }
    size
}

pub fn run() -> Result<(), CliError> {
    let t = Topology::from_sysfs()?;
    println!("== topology ==");
    print!("{}", crate::topology::render(&t));
    let size = demo_size(&t);
    println!(
        "\n== reserving a {} demonstration guest (page size auto) ==",
        format_bytes(size)
    );
    let mut b = Reservation::builder(size).page_size(PageSize::Auto);
    // Base pages need RLIMIT_MEMLOCK; if this user cannot lock that much, show the reason and
    // reserve unlocked so the demonstration still runs.
    if let Err(e @ numapin::Error::MemlockLimit { .. }) = b.preflight() {
        println!("note: {e}\nnote: continuing without locking");
        b = b.lock(false);
    }
    let plan = b.preflight()?;
    for n in &plan.notes {
        println!("plan: {n}");
    }
    let r = b.build()?;
    print!("{}", r.report());
    drop(r);
    println!("released.");
    Ok(())
}
