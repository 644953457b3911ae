//! numapin on real multi-node kernels: boots Debian's kernel in QEMU (TCG) with several NUMA
//! nodes — two symmetric ones, and four asymmetric ones including a memory-only and a CPU-only
//! node — and runs the scenarios of `tests/numa-vm/guest.rs` inside. How it works, how to add a
//! scenario and how to run it by hand: `docs/numa-vm.md`.
//!
//! Needs `qemu-system-x86_64`, `/boot/vmlinuz-*` and a static busybox
//! (`.ci/prereq/50-numa-vm.sh` installs them); skips with a printed reason elsewhere, fails
//! under `NUMAPIN_REQUIRE_PRIVILEGED=1`.

mod common;
#[path = "numa-vm/guest.rs"]
mod guest;
#[path = "numa-vm/harness.rs"]
mod harness;
#[path = "numa-vm/vmm_guest.rs"]
mod vmm_guest;

use std::sync::Mutex;
use std::time::Duration;

use harness::{Spec, Tools};

/// One guest at a time: each keeps the machine's CPUs busy (TCG), and timings stay readable.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn boot_and_check(mut spec: Spec) {
    if let Ok(only) = std::env::var("NUMAVM_ONLY") {
        spec.only = only
            .split(',')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
    }
    let tools = Tools::find();
    if !common::need(
        tools.is_ok(),
        &format!(
            "cannot boot a NUMA guest: {}",
            tools.as_ref().err().map_or("", |s| s)
        ),
    ) {
        return;
    }
    let tools = tools.unwrap();
    spec.numbering_is_the_guests().unwrap();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let work = std::env::temp_dir().join(format!(
        "numapin-numavm-{}-{}",
        std::process::id(),
        spec.name
    ));
    std::fs::create_dir_all(&work).unwrap();
    let initramfs =
        harness::build_initramfs(&tools, &spec, env!("CARGO_BIN_EXE_numapin").as_ref(), &work)
            .unwrap_or_else(|e| panic!("initramfs: {e}"));
    let timeout = Duration::from_secs(
        std::env::var("NUMAVM_TIMEOUT_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(420),
    );
    let keep = std::env::var_os("NUMAVM_KEEP").is_some();
    if keep {
        // To boot it by hand (append ` numavm.shell` to -append for a shell after the run).
        eprintln!("{:?}", harness::qemu_command(&tools, &spec, &initramfs));
    }
    let b = harness::boot(&tools, &spec, &initramfs, timeout);
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    for r in &b.results {
        eprintln!(
            "{} {:<22} {}",
            if r.ok { "ok  " } else { "FAIL" },
            r.name,
            r.detail
        );
    }
    eprintln!(
        "{}: {} results, first after {:.1}s (boot), qemu ran {:.1}s",
        spec.name,
        b.results.len(),
        b.boot_seconds.unwrap_or(f64::NAN),
        b.total_seconds
    );
    let f = harness::failures(&spec, &b);
    if !f.is_empty() {
        eprintln!("---- console of {} ----", spec.name);
        for l in &b.console {
            eprintln!("{l}");
        }
        panic!(
            "{}: {} of {} checks failed:\n  {}",
            spec.name,
            f.len(),
            spec.scenarios().len(),
            f.join("\n  ")
        );
    }
}

#[test]
fn two_symmetric_nodes() {
    boot_and_check(Spec::sym2());
}

#[test]
fn four_asymmetric_nodes_with_memoryless_and_cpuless() {
    boot_and_check(Spec::asym4());
}

/// The guest's entry point: `init.sh` runs `numa_vm --ignored --exact guest` inside the VM.
#[test]
#[ignore = "runs inside the NUMA guest (init.sh starts it); the host tests boot it"]
fn guest() {
    assert_eq!(
        std::env::var("NUMAVM_GUEST").as_deref(),
        Ok("1"),
        "only meaningful inside the guest booted by the other tests of this file"
    );
    guest::main();
}

/// The second process of the guest's `shared.nN` scenario (started by it, inside the guest).
#[test]
#[ignore = "runs inside the NUMA guest, started by the shared.nN scenario"]
fn shared_adopter() {
    if std::env::var_os("NUMAVM_ADOPT_FD").is_none() {
        panic!("only meaningful inside the guest, started by the shared.nN scenario");
    }
    guest::shared_adopter();
}

#[test]
fn spec_round_trips_and_names_every_scenario_once() {
    for s in [Spec::sym2(), Spec::asym4()] {
        s.numbering_is_the_guests().unwrap();
        assert_eq!(Spec::from_text(&s.to_text()), s);
        let names = s.scenarios();
        let mut d = names.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), names.len());
    }
    let mut only = Spec::asym4();
    only.only = vec!["bind.n1.".into(), "short.".into()];
    assert_eq!(Spec::from_text(&only.to_text()), only);
    let names = only.scenarios();
    assert_eq!(names[0], "pools");
    assert!(names[1..]
        .iter()
        .all(|n| n.starts_with("bind.n1.") || n.starts_with("short.")));
    assert!(names.contains(&"bind.n1.1g".to_string()) && names.contains(&"short.cli".to_string()));
    assert!(Spec::asym4()
        .scenarios()
        .contains(&"default.nearest".to_string()));
    assert!(Spec::asym4()
        .scenarios()
        .contains(&"bind.n1.1g".to_string()));
    let r =
        harness::parse_result("[  1.0] NUMAVM-RESULT name=bind.n0.4k ok=1 detail=a b=c").unwrap();
    assert_eq!(
        (r.name.as_str(), r.ok, r.detail.as_str()),
        ("bind.n0.4k", true, "a b=c")
    );
    assert!(
        !harness::parse_result("NUMAVM-RESULT name=x ok=0 detail=")
            .unwrap()
            .ok
    );
}
