//! Bad input gets a clear error and a non-zero exit, never a panic, a silent default or raw
//! control characters on a terminal: `--hold-secs inf|1e300|NaN|-1`, VM names with control
//! characters (refused when recorded, escaped when a hostile file holds one), and
//! `NUMAPIN_LEDGER_SLOTS` / `NUMAPIN_LEDGER_HEADROOM_PPM` / `NUMAPIN_LEDGER_GID` out of range.
//! (`NUMAPIN_LEDGER=/dev/null` is in `tests/ledger_trust.rs`.)
#![cfg(feature = "cli")]

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Command, Output};
use std::sync::Arc;

use common::TempPath;
use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::{Error, NodeId};

fn numapin(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_numapin"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run numapin")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hold_secs_must_be_a_finite_number() {
    let p = TempPath::new("hold");
    let ledger = p.0.to_str().unwrap();
    for bad in ["inf", "1e300", "NaN", "-1", "soon"] {
        let arg = format!("--hold-secs={bad}");
        let o = numapin(
            &[
                "reserve",
                "--size",
                "4MiB",
                "--page-size",
                "4k",
                "--no-lock",
                "--vm",
                "v",
                "--ledger",
                ledger,
                &arg,
            ],
            &[],
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "--hold-secs {bad}: {e}");
        assert!(e.contains("--hold-secs") && e.contains("seconds"), "{e}");
        assert!(!e.contains("panicked"), "{e}");
        assert!(
            !p.0.exists(),
            "--hold-secs {bad}: something was reserved first"
        );
    }
    let o = numapin(
        &[
            "reserve",
            "--size",
            "4MiB",
            "--page-size",
            "4k",
            "--no-lock",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = numapin(
        &[
            "reserve",
            "--size",
            "4MiB",
            "--page-size",
            "4k",
            "--no-lock",
            "--hold-secs",
            "0.05",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn vm_names_with_control_characters_are_refused() {
    let p = TempPath::new("names");
    let ledger = p.0.to_str().unwrap();
    let o = numapin(
        &[
            "reserve",
            "--size",
            "4MiB",
            "--page-size",
            "4k",
            "--no-lock",
            "--vm",
            "evil\u{1b}[2J\u{7}",
            "--ledger",
            ledger,
        ],
        &[],
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("control characters"), "{e}");
    assert!(
        !e.contains('\u{1b}') && !e.contains('\u{7}'),
        "raw control bytes: {e:?}"
    );
    let l = Arc::new(Ledger::open_existing(&p.0).unwrap());
    assert!(matches!(l.vm(""), Err(Error::InvalidVmName { .. })));
    assert!(matches!(
        l.vm(&"x".repeat(65)),
        Err(Error::InvalidVmName { .. })
    ));
    assert_eq!(l.snapshot().unwrap().vms.len(), 0, "nothing was recorded");
}

/// A name a hostile writer put in the file reaches `numapin status` escaped.
#[test]
fn status_escapes_control_characters_a_file_holds() {
    let p = TempPath::new("hostile-name");
    let cfg = LedgerConfig {
        slots: 2,
        ..LedgerConfig::default()
    };
    let classes = [ClassSpec::new(NodeId(0), 4096, 1 << 30)];
    let l = Arc::new(Ledger::create(&p.0, &classes, &cfg).unwrap());
    let mut vm = l.vm("plain").unwrap();
    vm.try_charge(NodeId(0), 4096, 1 << 20).unwrap();
    // Slot 0 of a one-class ledger: header 128, descriptor 64, counters 128; name at +80,
    // its length at +72.
    let slot0 = 128 + 64 + 128;
    let name = b"x\x1b[31mred\x07";
    let f = std::fs::OpenOptions::new().write(true).open(&p.0).unwrap();
    f.write_all_at(name, slot0 as u64 + 80).unwrap();
    f.write_all_at(&(name.len() as u64).to_le_bytes(), slot0 as u64 + 72)
        .unwrap();
    let o = numapin(&["status", "--ledger", p.0.to_str().unwrap()], &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("x\\u{1b}[31mred\\u{7}"), "{out}");
    drop(vm);
}

#[test]
fn ledger_settings_out_of_range_are_errors() {
    for (var, val) in [
        ("NUMAPIN_LEDGER_SLOTS", "-1"),
        ("NUMAPIN_LEDGER_SLOTS", "abc"),
        ("NUMAPIN_LEDGER_SLOTS", "0"),
        ("NUMAPIN_LEDGER_SLOTS", "5000"),
        ("NUMAPIN_LEDGER_HEADROOM_PPM", "2000000"),
        ("NUMAPIN_LEDGER_HEADROOM_PPM", "ten percent"),
        ("NUMAPIN_LEDGER_GID", "wheel"),
    ] {
        let p = TempPath::new("env");
        let o = numapin(
            &["status", "--ledger", p.0.to_str().unwrap()],
            &[(var, val)],
        );
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{var}={val}: {e}");
        assert!(e.contains(var) && e.contains(val), "{e}");
        assert!(!p.0.exists(), "{var}={val}: a ledger was created anyway");
    }
}
