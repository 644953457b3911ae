//! Host side of the multi-node NUMA harness: describes a guest topology ([`Spec`]), builds an
//! initramfs holding busybox, the `numapin` CLI, this test binary (which is also the guest's
//! scenario runner) and every shared library they need, boots Debian's kernel in
//! `qemu-system-x86_64 -accel tcg` with that topology, and collects the result lines the guest
//! prints on its serial console. See `docs/numa-vm.md`.
//!
//! The [`Spec`] is shared by both sides: the host turns it into QEMU's `-numa` options and
//! writes it into the initramfs (`/numavm.spec`); the guest reads it back and checks what its
//! kernel reports against it, and both derive the list of expected scenario names from it
//! ([`Spec::scenarios`]), so a guest that dies half-way is a failure, never a silent pass.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One guest NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node id (QEMU `nodeid=`, the guest kernel's node number).
    pub id: u32,
    /// CPUs of the node (empty: a memory-only node).
    pub cpus: Vec<u32>,
    /// Memory in MiB (0: a CPU-only node, no `memdev`).
    pub mem_mib: u64,
    /// 2 MiB pages init puts in this node's pool.
    pub pool_2m: u64,
    /// 1 GiB pages init puts in this node's pool.
    pub pool_1g: u64,
}

/// A guest: its nodes, distances and THP mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Short name (test name, result prefix).
    pub name: String,
    /// Nodes, ascending by id.
    pub nodes: Vec<NodeSpec>,
    /// `dist[i][j]`: distance from `nodes[i]` to `nodes[j]`.
    pub dist: Vec<Vec<u32>>,
    /// THP mode init writes (`always` makes a missing `MADV_NOHUGEPAGE` visible).
    pub thp: String,
    /// Name prefixes of the scenarios to run (empty: all). The host sets it from
    /// `NUMAVM_ONLY=prefix,prefix` so that a CI step can run a few scenarios without the rest.
    pub only: Vec<String>,
}

/// A 1 GiB page may only be asked of a node this large (the page must be 1 GiB-aligned and
/// free, and the kernel's own per-node allocations sit at the node's top).
pub const MIN_MIB_FOR_1G: u64 = 1792;

impl Spec {
    /// Two symmetric nodes, one CPU and 1 GiB each.
    pub fn sym2() -> Spec {
        let n = |id| NodeSpec {
            id,
            cpus: vec![id],
            mem_mib: 1024,
            pool_2m: 64,
            pool_1g: 0,
        };
        Spec {
            name: "sym2".into(),
            nodes: vec![n(0), n(1)],
            dist: vec![vec![10, 20], vec![20, 10]],
            thp: "always".into(),
            only: vec![],
        }
    }

    /// Four nodes of different sizes and distances: node 0 (CPUs 0-1, 768 MiB), node 1 (CPU 2,
    /// 1792 MiB, room for a 1 GiB page), node 2 (CPU 3, no memory), node 3 (memory only,
    /// 512 MiB). Node 2's nearest node with memory is node 1, not node 0.
    pub fn asym4() -> Spec {
        let node = |id, cpus: Vec<u32>, mem_mib, pool_2m, pool_1g| NodeSpec {
            id,
            cpus,
            mem_mib,
            pool_2m,
            pool_1g,
        };
        Spec {
            name: "asym4".into(),
            nodes: vec![
                node(0, vec![0, 1], 768, 64, 0),
                node(1, vec![2], 1792, 128, 1),
                node(2, vec![3], 0, 0, 0),
                node(3, vec![], 512, 64, 0),
            ],
            dist: vec![
                vec![10, 21, 30, 31],
                vec![21, 10, 16, 25],
                vec![30, 16, 10, 27],
                vec![31, 25, 27, 10],
            ],
            thp: "always".into(),
            only: vec![],
        }
    }

    /// Whether the guest kernel will number the nodes as the spec does. Linux numbers nodes in
    /// the order it meets their proximity domains in QEMU's ACPI SRAT: every CPU first (in CPU
    /// order), then the memory ranges (in node order). So ids must be 0..n, nodes with CPUs
    /// first, ordered by their first CPU, memory-only nodes after them; a spec that breaks this
    /// would be checked against a kernel that calls its nodes by other numbers.
    pub fn numbering_is_the_guests(&self) -> Result<(), String> {
        let mut order: Vec<u32> = vec![];
        for c in self.cpus() {
            let n = self.nodes.iter().find(|n| n.cpus.contains(&c)).unwrap().id;
            if !order.contains(&n) {
                order.push(n);
            }
        }
        order.extend(
            self.nodes
                .iter()
                .filter(|n| n.cpus.is_empty() && n.mem_mib > 0)
                .map(|n| n.id),
        );
        let ids: Vec<u32> = self.nodes.iter().map(|n| n.id).collect();
        let want: Vec<u32> = (0..self.nodes.len() as u32).collect();
        if ids == want && order == want {
            Ok(())
        } else {
            Err(format!(
                "spec {}: the guest would number nodes {order:?} as 0..; order the spec's nodes that way",
                self.name
            ))
        }
    }

    /// The boot-time 1 GiB pages, per node (`hugepages=NODE:COUNT,...` after
    /// `hugepagesz=1G`): a 1 GiB page needs 1 GiB of free, aligned memory, which only boot
    /// reliably has.
    pub fn kernel_args(&self) -> String {
        let g: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.pool_1g > 0)
            .map(|n| format!("{}:{}", n.id, n.pool_1g))
            .collect();
        if g.is_empty() {
            String::new()
        } else {
            format!("hugepagesz=1G hugepages={}", g.join(","))
        }
    }

    /// Nodes that have memory.
    pub fn mem_nodes(&self) -> Vec<&NodeSpec> {
        self.nodes.iter().filter(|n| n.mem_mib > 0).collect()
    }

    /// All CPUs.
    pub fn cpus(&self) -> Vec<u32> {
        let mut c: Vec<u32> = self.nodes.iter().flat_map(|n| n.cpus.clone()).collect();
        c.sort_unstable();
        c
    }

    /// Distance between two node ids.
    pub fn distance(&self, a: u32, b: u32) -> u32 {
        let i = self.nodes.iter().position(|n| n.id == a).expect("node");
        let j = self.nodes.iter().position(|n| n.id == b).expect("node");
        self.dist[i][j]
    }

    /// The names of the scenarios the guest must report for this topology, in order.
    pub fn scenarios(&self) -> Vec<String> {
        let mut s = vec!["pools".to_string(), "topology".to_string()];
        let mem = self.mem_nodes();
        for n in &mem {
            for p in ["4k", "thp", "2m"] {
                s.push(format!("bind.n{}.{p}", n.id));
            }
            if n.pool_1g > 0 {
                s.push(format!("bind.n{}.1g", n.id));
            }
        }
        s.push("bind.cli".into());
        if mem.len() >= 2 {
            s.extend(["interleave2.4k".into(), "interleave2.2m".into()]);
        }
        if mem.len() >= 3 {
            s.extend(["interleave3.4k".into(), "interleave3.2m".into()]);
        }
        s.extend([
            "preferred.room".into(),
            "preferred.fallback".into(),
            "short.preflight".into(),
            "short.cli".into(),
            "short.kernel".into(),
        ]);
        if mem.len() >= 2 {
            s.push("short.kernel.multi".into());
            s.push("short.rsvd".into());
            s.push("interleave.fallback".into());
        }
        for n in &mem {
            s.push(format!("auto.n{}", n.id));
        }
        s.push("auto.fallback".into());
        if mem.iter().any(|n| n.pool_1g > 0) {
            s.push("auto.1g".into());
        }
        if mem.len() >= 2 {
            s.push("many".into());
            s.push("ledger".into());
            // A shared reservation on the second node with memory, adopted by another process.
            s.push(format!("shared.n{}", mem[1].id));
        }
        s.push("default.local".into());
        if self
            .nodes
            .iter()
            .any(|n| n.mem_mib == 0 && !n.cpus.is_empty())
        {
            s.push("default.nearest".into());
        }
        s.extend(crate::vmm_guest::names(self));
        if !self.only.is_empty() {
            // `pools` stays: it checks the pools every other scenario relies on.
            s.retain(|n| n == "pools" || self.only.iter().any(|p| n.starts_with(p.as_str())));
        }
        s
    }

    /// The text form written to `/numavm.spec` (and read by `init.sh` for the pools).
    pub fn to_text(&self) -> String {
        let mut t = format!("name {}\nthp {}\n", self.name, self.thp);
        if !self.only.is_empty() {
            writeln!(t, "only {}", self.only.join(",")).unwrap();
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let cpus: Vec<String> = n.cpus.iter().map(|c| c.to_string()).collect();
            let cpus = if cpus.is_empty() {
                "-".to_string()
            } else {
                cpus.join(",")
            };
            let dist: Vec<String> = self.dist[i].iter().map(|d| d.to_string()).collect();
            writeln!(
                t,
                "node {} {} {} {} {} {}",
                n.id,
                cpus,
                n.mem_mib,
                n.pool_2m,
                n.pool_1g,
                dist.join(",")
            )
            .unwrap();
        }
        // Lines init.sh acts on: `pool NODE KIB COUNT` (1 GiB pages come from the kernel's
        // command line, see `kernel_args`).
        for n in &self.nodes {
            if n.pool_2m > 0 {
                writeln!(t, "pool {} 2048 {}", n.id, n.pool_2m).unwrap();
            }
        }
        t
    }

    /// Parses [`Spec::to_text`].
    pub fn from_text(text: &str) -> Spec {
        let mut s = Spec {
            name: String::new(),
            nodes: vec![],
            dist: vec![],
            thp: String::new(),
            only: vec![],
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.first().copied() {
                Some("name") => s.name = f[1].into(),
                Some("thp") => s.thp = f[1].into(),
                Some("only") => s.only = f[1].split(',').map(String::from).collect(),
                Some("node") => {
                    let num = |i: usize| f[i].parse::<u64>().expect("number");
                    s.nodes.push(NodeSpec {
                        id: num(1) as u32,
                        cpus: if f[2] == "-" {
                            vec![]
                        } else {
                            f[2].split(',').map(|c| c.parse().unwrap()).collect()
                        },
                        mem_mib: num(3),
                        pool_2m: num(4),
                        pool_1g: num(5),
                    });
                    s.dist
                        .push(f[6].split(',').map(|d| d.parse().unwrap()).collect());
                }
                _ => {}
            }
        }
        s
    }

    /// QEMU's options for this topology (machine, CPUs, memory, NUMA nodes, distances).
    pub fn qemu_args(&self) -> Vec<String> {
        let total: u64 = self.nodes.iter().map(|n| n.mem_mib).sum();
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-machine",
            "pc",
            "-cpu",
            "max",
            "-smp",
            &self.cpus().len().to_string(),
            "-m",
            &format!("{total}M"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in &self.nodes {
            let mut node = format!("node,nodeid={}", n.id);
            for c in &n.cpus {
                write!(node, ",cpus={c}").unwrap();
            }
            if n.mem_mib > 0 {
                a.push("-object".into());
                a.push(format!(
                    "memory-backend-ram,id=m{},size={}M",
                    n.id, n.mem_mib
                ));
                write!(node, ",memdev=m{}", n.id).unwrap();
            }
            a.push("-numa".into());
            a.push(node);
        }
        for (i, a_) in self.nodes.iter().enumerate() {
            for (j, b_) in self.nodes.iter().enumerate() {
                if i != j {
                    a.push("-numa".into());
                    a.push(format!(
                        "dist,src={},dst={},val={}",
                        a_.id, b_.id, self.dist[i][j]
                    ));
                }
            }
        }
        a
    }
}

/// What the host needs to boot a guest.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `/boot/vmlinuz-*` (the newest).
    pub kernel: PathBuf,
    /// A statically linked busybox.
    pub busybox: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// Finds QEMU, a kernel and a static busybox; `Err` says what is missing and how to get it.
    pub fn find() -> Result<Tools, String> {
        let qemu = which("qemu-system-x86_64")
            .ok_or("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")?;
        let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
            .map_err(|e| format!("/boot: {e} (apt-get install linux-image-amd64)"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect();
        kernels.sort();
        let kernel = kernels
            .pop()
            .ok_or("no /boot/vmlinuz-* (apt-get install linux-image-amd64)")?;
        if std::fs::File::open(&kernel).is_err() {
            return Err(format!("{} is not readable", kernel.display()));
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_static(p))
            .ok_or("no statically linked busybox (apt-get install busybox-static)")?;
        Ok(Tools {
            qemu,
            kernel,
            busybox,
        })
    }
}

/// Whether an ELF file has no program interpreter (is statically linked).
fn is_static(p: &Path) -> bool {
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        o + 4 > b.len() || u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) != 3
        // PT_INTERP
    })
}

/// A `newc` cpio archive written in memory (the initramfs format the kernel unpacks).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, data);
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Closes the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while self.buf.len() % 512 != 0 {
            self.buf.push(0);
        }
        self.buf
    }
}

/// The shared libraries `ldd` lists for `bin` (including the dynamic loader), as absolute paths.
pub fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(vec![]);
    }
    let mut libs = vec![];
    for line in text.lines() {
        if line.contains("not found") {
            return Err(format!("ldd {}: {line}", bin.display()));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies `bin` without debug info into `dir` (smaller initramfs, faster boot); the original
/// when `strip` is unavailable.
fn stripped(bin: &Path, dir: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "{}.stripped",
        bin.file_name().unwrap().to_string_lossy()
    ));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    std::fs::read(if ok { &out } else { bin }).expect("read binary")
}

/// Builds the initramfs for `spec`: busybox (`/bin/busybox`, `/bin/sh`), `init.sh` as `/init`,
/// `/numapin`, this test binary as `/numa_vm`, their shared libraries, and `/numavm.spec`.
pub fn build_initramfs(
    tools: &Tools,
    spec: &Spec,
    numapin: &Path,
    work: &Path,
) -> Result<PathBuf, String> {
    // This test binary, copied through /proc/self/exe: still readable if a rebuild replaced
    // the file meanwhile.
    let me = work.join("numa_vm");
    std::fs::copy("/proc/self/exe", &me).map_err(|e| format!("copy /proc/self/exe: {e}"))?;
    let mut c = Cpio::default();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "lib", "lib64", "usr", "usr/bin", "usr/sbin",
    ] {
        c.dir(d);
    }
    c.file(
        "bin/busybox",
        0o755,
        &std::fs::read(&tools.busybox).map_err(|e| e.to_string())?,
    );
    c.symlink("bin/sh", "busybox");
    let init = include_str!("init.sh");
    c.file("init", 0o755, init.as_bytes());
    c.file("numavm.spec", 0o644, spec.to_text().as_bytes());
    c.file("numapin", 0o755, &stripped(numapin, work));
    c.file("numa_vm", 0o755, &stripped(&me, work));
    let mut libs = shared_libs(numapin)?;
    libs.extend(shared_libs(&me)?);
    libs.sort();
    libs.dedup();
    let mut dirs = std::collections::BTreeSet::new();
    for l in &libs {
        let mut p = l.parent();
        let mut chain = vec![];
        while let Some(d) = p.filter(|d| d != &Path::new("/")) {
            chain.push(d.to_path_buf());
            p = d.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) && !["/lib", "/lib64", "/usr"].contains(&d.to_str().unwrap())
            {
                c.dir(d.to_str().unwrap());
            }
        }
        // fs::read follows symlinks: the library's contents under the name ldd printed.
        let data = std::fs::read(l).map_err(|e| format!("{}: {e}", l.display()))?;
        c.file(l.to_str().unwrap(), 0o755, &data);
    }
    let path = work.join("initramfs.cpio");
    std::fs::write(&path, c.finish()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// One `NUMAVM-RESULT` line.
#[derive(Debug, Clone)]
pub struct ResultLine {
    /// Scenario name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was checked or what went wrong.
    pub detail: String,
}

/// What a boot produced.
#[derive(Debug)]
pub struct Boot {
    /// Every console line.
    pub console: Vec<String>,
    /// Result lines, in order.
    pub results: Vec<ResultLine>,
    /// Whether the guest printed `NUMAVM-DONE`.
    pub done: bool,
    /// Seconds from QEMU's start to the first result line (boot + init).
    pub boot_seconds: Option<f64>,
    /// Seconds QEMU ran.
    pub total_seconds: f64,
    /// Whether the timeout killed QEMU.
    pub timed_out: bool,
}

/// Parses `NUMAVM-RESULT name=N ok=0|1 detail=...` anywhere in a console line.
pub fn parse_result(line: &str) -> Option<ResultLine> {
    let rest = &line[line.find("NUMAVM-RESULT ")? + "NUMAVM-RESULT ".len()..];
    let rest = rest.trim_end_matches(['\r', '\n']);
    let name = rest.strip_prefix("name=")?.split(' ').next()?.to_string();
    let after = &rest["name=".len() + name.len()..];
    let ok = after.trim_start().strip_prefix("ok=")?.starts_with('1');
    let detail = after
        .split_once("detail=")
        .map_or(String::new(), |(_, d)| d.to_string());
    Some(ResultLine { name, ok, detail })
}

/// The QEMU command that boots `spec` with `initramfs` (console on stdio).
pub fn qemu_command(tools: &Tools, spec: &Spec, initramfs: &Path) -> Command {
    let mut cmd = Command::new(&tools.qemu);
    cmd.args(spec.qemu_args())
        .arg("-kernel")
        .arg(&tools.kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 loglevel=4 {}",
            spec.kernel_args()
        ))
        .args([
            "-display",
            "none",
            "-vga",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-net",
            "none",
        ]);
    cmd
}

/// Boots the guest and reads its console until it powers off or `timeout` passes.
pub fn boot(tools: &Tools, spec: &Spec, initramfs: &Path, timeout: Duration) -> Boot {
    let mut cmd = qemu_command(tools, spec, initramfs);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("start qemu");
    let (tx, rx) = mpsc::channel::<(f64, String)>();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).split(b'\n') {
            let Ok(line) = line else { break };
            let s = String::from_utf8_lossy(&line).into_owned();
            if tx.send((t0.elapsed().as_secs_f64(), s)).is_err() {
                break;
            }
        }
    });
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut b = Boot {
        console: vec![],
        results: vec![],
        done: false,
        boot_seconds: None,
        total_seconds: 0.0,
        timed_out: false,
    };
    let deadline = t0 + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, line)) => {
                if let Some(r) = parse_result(&line) {
                    b.boot_seconds.get_or_insert(t);
                    b.results.push(r);
                }
                if line.contains("NUMAVM-DONE") {
                    b.done = true;
                }
                b.console.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                b.timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let _ = child.wait();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    if !stderr.trim().is_empty() {
        b.console.push(format!("[qemu stderr] {stderr}"));
    }
    b.total_seconds = t0.elapsed().as_secs_f64();
    b
}

/// Checks a boot against the scenarios `spec` expects; returns the failures (empty = pass).
pub fn failures(spec: &Spec, b: &Boot) -> Vec<String> {
    let mut f = vec![];
    for name in spec.scenarios() {
        match b
            .results
            .iter()
            .filter(|r| r.name == name)
            .collect::<Vec<_>>()[..]
        {
            [] => f.push(format!("{name}: no result line")),
            [r] if r.ok => {}
            [r] => f.push(format!("{name}: FAILED: {}", r.detail)),
            _ => f.push(format!("{name}: reported more than once")),
        }
    }
    for r in &b.results {
        if !spec.scenarios().contains(&r.name) {
            f.push(format!("{}: unexpected result line", r.name));
        }
    }
    if !b.done {
        f.push("guest never printed NUMAVM-DONE".into());
    }
    if b.timed_out {
        f.push(format!("timed out after {:.0}s", b.total_seconds));
    }
    f
}
