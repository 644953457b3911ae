//! `numapin bench`'s refusals: they come before anything is measured, with the library's error
//! and a hint. (The whole bench runs in CI as `.ci/steps/40-bench-smoke.sh`; it takes ~40 s.)
#![cfg(feature = "cli")]

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run numapin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_size_beyond_the_pool_is_refused_with_the_fix() {
    let (ok, err) = bench(&["--quick", "--size", "64TiB"]);
    assert!(!ok);
    assert!(err.contains("pass a smaller --size"), "{err}");
    assert!(
        err.contains("nr_hugepages"),
        "says how to grow the pool: {err}"
    );
    assert!(!err.contains("interleaved"), "nothing was measured: {err}");
}

#[test]
fn a_size_that_is_not_whole_2m_pages_is_refused() {
    let (ok, err) = bench(&["--quick", "--size", "11MiB"]);
    assert!(!ok);
    assert!(err.contains("10 MiB") && err.contains("12 MiB"), "{err}");
}

#[test]
fn a_size_too_small_for_the_balloon_is_refused() {
    let (ok, err) = bench(&["--quick", "--size", "4MiB"]);
    assert!(!ok);
    assert!(err.contains("at least 8 MiB"), "{err}");
}
