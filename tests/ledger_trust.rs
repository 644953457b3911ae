//! The trust model (docs/ledger.md, "Trust"): a ledger another user could rewrite or truncate
//! is refused with an error that says why and how to fix it, never used. The reproductions of
//! a local user taking over the ledger (and SIGBUS-ing root's VMMs by truncating it), each as a
//! test, and the bad paths (`/dev/null`, a FIFO, a directory others may write).
#![cfg(feature = "cli")]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::sync::Arc;

use common::{is_root, need, TempPath};
use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::{Error, NodeId, TrustProblem};

fn bin() -> String {
    std::env::var("NUMAPIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_numapin").into())
}

/// Runs a shell command as `nobody` (`su nobody -s /bin/bash -c`, as the issue does).
fn as_nobody(cmd: &str) -> Output {
    Command::new("su")
        .args(["nobody", "-s", "/bin/bash", "-c", cmd])
        .output()
        .expect("su nobody")
}

fn can_su_nobody() -> bool {
    is_root() && as_nobody("true").status.success()
}

fn classes() -> Vec<ClassSpec> {
    vec![ClassSpec::new(NodeId(0), 4096, 1 << 30)]
}

fn chmod(p: &TempPath, mode: u32) {
    std::fs::set_permissions(&p.0, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn untrusted(e: &Error) -> Option<TrustProblem> {
    match e {
        Error::LedgerUntrusted { problem, .. } => Some(*problem),
        _ => None,
    }
}

/// The reproduction: `nobody` creates the ledger (its `status` does) and makes it
/// world-writable; root's reservation must refuse it instead of mapping it, so nobody's
/// `truncate` that follows cannot kill root's VMM with SIGBUS.
#[test]
fn a_ledger_another_user_made_is_refused() {
    if !need(can_su_nobody(), "needs root and `su nobody`") {
        return;
    }
    let p = TempPath::new("foreign");
    let p_s = p.0.display().to_string();
    let b = bin();
    let out = as_nobody(&format!(
        "NUMAPIN_LEDGER={p_s} {b} status >/dev/null && chmod 666 {p_s}"
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root_vmm = Command::new(&b)
        .args(["reserve", "--size", "64MiB", "--page-size", "4k"])
        .args(["--vm", "rootvm", "--hold-secs", "3", "--no-lock"])
        .env("NUMAPIN_LEDGER", &p.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = as_nobody(&format!("truncate -s 0 {p_s}"));
    assert!(t.status.success(), "nobody owns the file: truncate works");
    let out = root_vmm.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        None,
        "root's VMM was killed: {:?}",
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "root's VMM must refuse the ledger"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to uid 65534") && err.contains("Refused"),
        "{err}"
    );
    // The library says the same, as a value.
    let e = Ledger::open_existing(&p.0).unwrap_err();
    assert_eq!(untrusted(&e), Some(TrustProblem::ForeignOwner), "{e:?}");
}

/// A ledger root made (mode 0600) can be neither read, rewritten nor truncated by another
/// user: root's VMM keeps running.
#[test]
fn another_user_cannot_touch_roots_ledger() {
    if !need(can_su_nobody(), "needs root and `su nobody`") {
        return;
    }
    let p = TempPath::new("roots");
    let l = Arc::new(Ledger::create(&p.0, &classes(), &LedgerConfig::default()).unwrap());
    let mut vm = l.vm("rootvm").unwrap();
    vm.try_charge(NodeId(0), 4096, 64 << 20).unwrap();
    let p_s = p.0.display().to_string();
    let b = bin();
    assert!(!as_nobody(&format!("truncate -s 0 {p_s}")).status.success());
    assert!(!as_nobody(&format!("chmod 666 {p_s}")).status.success());
    let st = as_nobody(&format!("NUMAPIN_LEDGER={p_s} {b} status"));
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("Permission denied"));
    assert_eq!(
        std::fs::metadata(&p.0).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(l.classes().unwrap()[0].reserved_bytes, 64 << 20);
    drop(vm);
}

/// Writable beyond its owner and the configured group: refused, whoever owns it.
#[test]
fn a_ledger_others_may_write_is_refused() {
    let p = TempPath::new("modes");
    drop(Ledger::create(&p.0, &classes(), &LedgerConfig::default()).unwrap());
    chmod(&p, 0o666);
    let e = Ledger::open_existing(&p.0).unwrap_err();
    assert_eq!(untrusted(&e), Some(TrustProblem::WritableByOthers), "{e:?}");
    assert!(e.to_string().contains("mode 0666"), "{e}");
    // Group-writable: only for the configured group.
    chmod(&p, 0o660);
    let e = Ledger::open_or_create(&p.0, &LedgerConfig::default()).unwrap_err();
    assert_eq!(
        untrusted(&e),
        Some(TrustProblem::WritableByUnconfiguredGroup),
        "{e:?}"
    );
    let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&p.0).unwrap());
    let cfg = LedgerConfig {
        group: Some(gid),
        ..LedgerConfig::default()
    };
    Ledger::open_or_create(&p.0, &cfg).unwrap();
    chmod(&p, 0o600);
    Ledger::open_existing(&p.0).unwrap();
}

/// A directory others may write (without the sticky bit) lets them replace the ledger.
#[test]
fn a_directory_others_may_write_is_refused() {
    let d = TempPath::new("dir");
    std::fs::create_dir(&d.0).unwrap();
    let f = d.0.join("ledger");
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = Ledger::create(&f, &classes(), &LedgerConfig::default()).unwrap_err();
    assert_eq!(
        untrusted(&e),
        Some(TrustProblem::ReplaceableDirectory),
        "{e:?}"
    );
    // Sticky (as /dev/shm and /tmp): others cannot replace our file.
    std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    drop(Ledger::create(&f, &classes(), &LedgerConfig::default()).unwrap());
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir(&d.0).unwrap();
}

/// A missing directory (as /run/numapin after a reboot) is created, mode 0755.
#[test]
fn the_ledger_directory_is_created_safely() {
    let d = TempPath::new("newdir");
    let f = d.0.join("ledger");
    let cfg = LedgerConfig {
        slots: 4,
        ..LedgerConfig::default()
    };
    drop(Ledger::open_or_create(&f, &cfg).unwrap());
    let md = std::fs::symlink_metadata(&d.0).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        md.permissions().mode() & 0o022,
        0,
        "{:o}",
        md.permissions().mode()
    );
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir(&d.0).unwrap();
}

/// `NUMAPIN_LEDGER=/dev/null` (or a FIFO, a directory): a clear error, no advice to remove it,
/// non-zero exit, nothing written.
#[test]
fn a_path_that_is_not_a_regular_file_is_refused() {
    let fifo = TempPath::new("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo.0)
        .status()
        .unwrap()
        .success());
    for (path, kind) in [
        ("/dev/null", "character device"),
        (fifo.0.to_str().unwrap(), "FIFO"),
        ("/dev/shm", "directory"),
    ] {
        let e = Ledger::open_existing(path).unwrap_err();
        assert!(
            matches!(e, Error::LedgerNotAFile { kind: k, .. } if k == kind),
            "{path}: {e:?}"
        );
        let out = Command::new(bin())
            .args(["status"])
            .env("NUMAPIN_LEDGER", path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {err}");
        assert!(
            err.contains("not a regular file") && !err.contains("rm "),
            "{err}"
        );
    }
}
