//! A VMM jailer's seccomp filter that forbids the memory-policy calls: the reservation fails
//! with `PolicyDenied { denial: Seccomp }` naming the call, not with a raw errno, and leaves
//! nothing mapped. The filter is installed in a child (this test binary re-executed), so the
//! test process keeps its freedom.

mod common;

use std::process::Command;

use numapin::{Error, PageSize, PolicyDenial, Reservation};

const CHILD_ENV: &str = "NUMAPIN_SECCOMP_CHILD";

/// Installs a filter: `nr` → EPERM, everything else allowed. x86-64 only (the arch is checked,
/// and anything else is allowed through unchanged, so the test can only fail, not lie).
fn deny_syscall(nr: libc::c_long) {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let prog = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4), // arch
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0), // syscall number
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr as u32, 0, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with a valid, live filter program; NO_NEW_PRIVS first, as the kernel
    // requires for unprivileged filters. The filter only makes one syscall fail.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const _
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn maps_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn child(which: &str) {
    match which {
        "mbind" => {
            deny_syscall(libc::SYS_mbind);
            let before = maps_count();
            let e = Reservation::builder(8 << 20)
                .page_size(PageSize::Base4K)
                .lock(false)
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::PolicyDenied {
                        call: "mbind",
                        denial: PolicyDenial::Seccomp,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("seccomp"), "{e}");
            assert!(maps_count() <= before, "mapping leaked");
        }
        "set_mempolicy" => {
            deny_syscall(libc::SYS_set_mempolicy);
            let e = Reservation::builder(2 << 20)
                .page_size(PageSize::Huge2M)
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::PolicyDenied {
                        call: "set_mempolicy",
                        denial: PolicyDenial::Seccomp,
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        other => panic!("unknown child {other}"),
    }
    println!("child-ok");
}

fn run_child(which: &str, test: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, which)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("child-ok"),
        "child failed:\n{text}"
    );
}

#[test]
fn seccomp_denying_mbind_is_a_typed_error() {
    match std::env::var(CHILD_ENV) {
        Ok(w) => child(&w),
        Err(_) => run_child("mbind", "seccomp_denying_mbind_is_a_typed_error"),
    }
}

#[test]
fn seccomp_denying_set_mempolicy_is_a_typed_error() {
    match std::env::var(CHILD_ENV) {
        Ok(w) => child(&w),
        Err(_) => {
            let _lock = common::pools_shared();
            if !common::need(
                common::free_pages(0, 2048) >= 1,
                "node 0 needs a free 2M hugepage",
            ) {
                return;
            }
            run_child(
                "set_mempolicy",
                "seccomp_denying_set_mempolicy_is_a_typed_error",
            )
        }
    }
}
