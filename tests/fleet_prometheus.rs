//! Prometheus as the fleet's store, end to end with a real Prometheus server: three
//! `numapin exporter`s stand for three hosts (separate ledgers, host names and host ids), a
//! Prometheus started here on 127.0.0.1 scrapes them every second, and `numapin plan
//! --prometheus` must give the same plan as `numapin plan` on the three hosts' `status --json`
//! files. Needs the `prometheus` binary (Debian package `prometheus`; CI installs it in
//! .ci/prereq/70-prometheus.sh): skips with a reason without it, fails under
//! `NUMAPIN_REQUIRE_PRIVILEGED=1` (CI).
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use numapin::ledger::Ledger;

const BIN: &str = env!("CARGO_BIN_EXE_numapin");

/// Children killed (and reaped) on drop, also when the test fails.
struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("prometheus"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn host_env(cmd: &mut Command, i: usize) -> &mut Command {
    cmd.env(
        "NUMAPIN_HOSTNAME",
        format!("fleet-host-{}", ["a", "b", "c"][i]),
    )
    .env(
        "NUMAPIN_HOST_ID",
        format!("{:032x}", 0x000f_1ee7_0000_u64 + i as u64),
    )
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 3 | 4)),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// Queries the Prometheus API; `None` while it is not answering yet.
fn query(port: u16, q: &str) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["plan", "--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--selector", q, "--json", "--max-scenarios", "0"])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn plan_from_prometheus_equals_plan_from_status_files() {
    let Some(prom) = prometheus_binary() else {
        assert!(!common::need(
            false,
            "no `prometheus` binary on PATH (apt-get install prometheus)"
        ));
        return;
    };
    let dir = TempDir(std::env::temp_dir().join(format!("numapin-prom-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    // Three hosts: three ledgers, each with VMs this test process owns (alive, so no reaper
    // removes them while Prometheus scrapes).
    let ledgers: Vec<common::TempPath> = (0..3)
        .map(|i| common::TempPath::new(&format!("fleet-{i}")))
        .collect();
    let mut records = Vec::new();
    for (i, p) in ledgers.iter().enumerate() {
        let l = Arc::new(Ledger::open(&p.0).unwrap());
        let classes = l.classes().unwrap();
        for (v, c) in classes.iter().enumerate() {
            // A quarter and an eighth of each class's limit, in whole pages, differing by host.
            let page = c.page_size_bytes;
            for (j, share) in [4u64, 8].iter().enumerate() {
                let bytes = c.limit_bytes / (share + i as u64) / page * page;
                if bytes == 0 {
                    continue;
                }
                let name = format!("vm-{i}-{v}-{j}");
                records.push(l.try_charge(&name, c.node, page, bytes).unwrap());
            }
        }
        assert!(l
            .set_guest_used(&format!("vm-{i}-0-0"), None, 64 << 20)
            .is_ok());
    }

    // Three exporters on free ports.
    let mut kids = Kill(Vec::new());
    let mut targets = Vec::new();
    for (i, p) in ledgers.iter().enumerate() {
        let mut c = Command::new(BIN);
        host_env(&mut c, i)
            .args(["exporter", "--listen", "127.0.0.1:0", "--ledger"])
            .arg(&p.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        kids.0.push(child);
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.strip_suffix("/metrics\n"))
            .unwrap_or_else(|| panic!("exporter printed {line:?}"))
            .to_string();
        targets.push(addr);
    }

    // Prometheus on a free port, private storage, 1 s scrapes.
    let port = free_port();
    let config = dir.0.join("prometheus.yml");
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: numapin\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    kids.0.push(
        Command::new(prom)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The three hosts' own snapshots.
    let mut files = Vec::new();
    for (i, p) in ledgers.iter().enumerate() {
        let mut c = Command::new(BIN);
        host_env(&mut c, i)
            .args(["status", "--json", "--ledger"])
            .arg(&p.0);
        let f = dir.0.join(format!("host-{i}.json"));
        std::fs::write(&f, run(&mut c).stdout).unwrap();
        files.push(f);
    }

    // Wait (bounded) until Prometheus has scraped all three.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts = query(port, "{job=\"numapin\"}")
            .and_then(|v| v["summary"]["hosts"].as_u64())
            .unwrap_or(0);
        if hosts == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus on port {port} did not scrape the 3 exporters within 60 s (saw {hosts})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let args = ["--json", "--holdback", "--headroom", "4K", "--rightsize"];
    let from_files = run(Command::new(BIN).arg("plan").args(&files).args(args));
    let from_prom = run(Command::new(BIN)
        .args(["plan", "--prometheus", &format!("http://127.0.0.1:{port}/")])
        .args(["--selector", "{job=\"numapin\"}"])
        .args(args));
    let a: serde_json::Value = serde_json::from_slice(&from_files.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&from_prom.stdout).unwrap();
    assert_eq!(a["summary"]["hosts"], 3, "{a}");
    assert!(a["summary"]["vms"].as_u64().unwrap() >= 6, "{a}");
    assert_eq!(
        a, b,
        "the plan from Prometheus differs from the plan from the files"
    );
    assert_eq!(from_files.status.code(), from_prom.status.code());

    // A selector that matches nothing is an error that says so, not an empty fleet.
    let o = Command::new(BIN)
        .args(["plan", "--prometheus", &format!("http://127.0.0.1:{port}")])
        .args(["--selector", "{job=\"nothing-here\"}"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no numapin_* series match"), "{e}");
    drop(records);
}

/// Textfile-collector mode: `status --prometheus --output FILE` writes what stdout would get,
/// by rename (no temporary file left beside it), and a directory that does not exist is an
/// error naming the file, leaving nothing behind.
#[test]
fn textfile_output_is_written_by_rename() {
    let ledger = common::TempPath::new("textfile");
    let dir =
        TempDir(std::env::temp_dir().join(format!("numapin-textfile-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let out = dir.0.join("numapin.prom");
    let status = |extra: &[&std::ffi::OsStr]| {
        let mut c = Command::new(BIN);
        host_env(&mut c, 0)
            .arg("status")
            .arg("--ledger")
            .arg(&ledger.0)
            .arg("--prometheus")
            .args(extra);
        c.output().unwrap()
    };
    let o = status(&["--output".as_ref(), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text, String::from_utf8(status(&[]).stdout).unwrap());
    assert!(
        text.contains("numapin_host_info{host=\"fleet-host-a\""),
        "{text}"
    );
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("numapin.prom")]);
    let missing = dir.0.join("no-such-dir/numapin.prom");
    let o = status(&["--output".as_ref(), missing.as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no-such-dir/numapin.prom"), "{e}");
    assert!(!dir.0.join("no-such-dir").exists());
}
