//! Cgroup-aware preflight against the real kernel: a reservation larger than the memory (or
//! hugetlb) cgroup allows is refused with [`numapin::Error::CgroupLimit`] naming the file, not
//! killed by the OOM killer (exit 137) or a SIGBUS halfway through population.
//!
//! Each test makes a child cgroup of its own (cgroup v2 where the controller is there, else
//! the v1 hierarchy of the controller), runs `numapin` in it, and removes it again whatever
//! happens. Needs root and the controller; skips with the reason otherwise.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{is_root, need};

/// A child cgroup made by a test; removed (and a controller it enabled disabled again) on drop.
struct TestCgroup {
    dir: PathBuf,
    /// `cgroup.subtree_control` and the controller this test enabled there.
    enabled: Option<(PathBuf, String)>,
}

impl TestCgroup {
    /// A child of the hierarchy that carries `controller`: cgroup v2 if it offers the
    /// controller (enabled in the root's `cgroup.subtree_control` if needed), else the v1
    /// mount of that controller. `None` with the reason when neither exists.
    fn new(controller: &str) -> Result<TestCgroup, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mut v2 = None;
        let mut v1 = None;
        for l in mountinfo.lines() {
            let Some((pre, post)) = l.split_once(" - ") else {
                continue;
            };
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            match p.first() {
                Some(&"cgroup2") if f[3] == "/" => v2 = Some(PathBuf::from(f[4])),
                Some(&"cgroup") if f[3] == "/" && p[2].split(',').any(|o| o == controller) => {
                    v1 = Some(PathBuf::from(f[4]))
                }
                _ => {}
            }
        }
        let name = format!("numapin-test-{}-{controller}", std::process::id());
        if let Some(root) = v2.filter(|r| {
            fs::read_to_string(r.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|k| k == controller))
        }) {
            let ctl = root.join("cgroup.subtree_control");
            let on = fs::read_to_string(&ctl)
                .map_err(|e| e.to_string())?
                .split_whitespace()
                .any(|k| k == controller);
            let enabled = if on {
                None
            } else {
                fs::write(&ctl, format!("+{controller}"))
                    .map_err(|e| format!("enable {controller} in {}: {e}", ctl.display()))?;
                Some((ctl, controller.to_string()))
            };
            let dir = root.join(name);
            let cg = TestCgroup { dir, enabled };
            fs::create_dir(&cg.dir).map_err(|e| format!("mkdir {}: {e}", cg.dir.display()))?;
            return Ok(cg);
        }
        if let Some(root) = v1 {
            let dir = root.join(name);
            fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            return Ok(TestCgroup { dir, enabled: None });
        }
        Err(format!(
            "no cgroup hierarchy offers the {controller} controller"
        ))
    }

    fn v2(&self) -> bool {
        self.dir
            .parent()
            .is_some_and(|p| p.join("cgroup.controllers").exists())
    }

    fn set(&self, file: &str, value: &str) -> PathBuf {
        let p = self.dir.join(file);
        fs::write(&p, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", p.display()));
        p
    }

    /// Runs `numapin args` inside this cgroup (the shell moves itself in, then execs).
    fn numapin(&self, ledger: &Path, args: &[&str]) -> Output {
        let procs = self.dir.join("cgroup.procs");
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} && exec \"$0\" \"$@\"",
                procs.display()
            ))
            .arg(env!("CARGO_BIN_EXE_numapin"))
            .args(args)
            .env("NUMAPIN_LEDGER", ledger)
            .output()
            .expect("run numapin in the cgroup")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The process has exited; the kernel may take a moment to let the group go.
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        if let Some((ctl, c)) = &self.enabled {
            let _ = fs::write(ctl, format!("-{c}"));
        }
    }
}

fn ledger_path(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/numapin-cgtest-{}-{tag}",
        std::process::id()
    ))
}

#[test]
fn memory_limit_is_a_typed_error_not_an_oom_kill() {
    if !need(is_root(), "needs root to make a cgroup") {
        return;
    }
    let cg = match TestCgroup::new("memory") {
        Ok(c) => c,
        Err(why) => {
            assert!(need(false, &why));
            return;
        }
    };
    let file = if cg.v2() {
        cg.set("memory.max", "268435456")
    } else {
        cg.set("memory.limit_in_bytes", "268435456")
    };
    let ledger = ledger_path("mem");
    let out = cg.numapin(&ledger, &["reserve", "--size", "1GiB", "--page-size", "4k"]);
    let _ = fs::remove_file(&ledger);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected the typed error's exit 1 (137 would be the OOM killer): {:?}, stderr {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("256 MiB"),
        "the error must name {} and its limit: {stderr}",
        file.display()
    );
    // Within the limit the same command succeeds in the same cgroup.
    let ledger = ledger_path("mem-ok");
    let out = cg.numapin(
        &ledger,
        &["reserve", "--size", "64MiB", "--page-size", "4k"],
    );
    let _ = fs::remove_file(&ledger);
    assert!(
        out.status.success(),
        "64 MiB within a 256 MiB limit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hugetlb_limit_is_a_typed_error() {
    if !need(is_root(), "needs root to make a cgroup") {
        return;
    }
    if !need(
        common::free_pages(0, 2048) >= 32,
        "needs 32 free 2M pages on node 0",
    ) {
        return;
    }
    let cg = match TestCgroup::new("hugetlb") {
        Ok(c) => c,
        Err(why) => {
            // The hugetlb controller is optional in kernels: only a kernel without it may skip
            // (CI's has it, so there this is a failure).
            let in_kernel = std::fs::read_to_string("/proc/cgroups")
                .is_ok_and(|t| t.lines().any(|l| l.starts_with("hugetlb")));
            if in_kernel {
                assert!(need(false, &why));
            } else {
                eprintln!("SKIP: {why}");
            }
            return;
        }
    };
    let file = if cg.v2() {
        cg.set("hugetlb.2MB.max", "16777216")
    } else {
        cg.set("hugetlb.2MB.limit_in_bytes", "16777216")
    };
    let ledger = ledger_path("huge");
    let out = cg.numapin(
        &ledger,
        &[
            "reserve",
            "--size",
            "64MiB",
            "--page-size",
            "2m",
            "--node",
            "0",
        ],
    );
    let _ = fs::remove_file(&ledger);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("16 MiB"),
        "the error must name {}: {stderr}",
        file.display()
    );
}
