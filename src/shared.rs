//! Shared reservations: guest memory as a sealed memory file (memfd) that other processes —
//! an unmodified VMM, a vhost-user back-end, a host service handing memory out — can map.
//!
//! A shared reservation is a `memfd_create(2)` file: hugetlbfs (`MFD_HUGETLB`, 2 MiB or 1 GiB
//! pages) or shmem (base pages, and THP where `shmem_enabled` allows). Its size is fixed and
//! sealed right after `ftruncate`, before a page exists:
//! `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`. So nobody holding the descriptor can truncate
//! the file under another process's mapping (the classic SIGBUS of shared guest RAM), grow it
//! past what the ledger charged, or remove the seals.
//!
//! What the seals do **not** stop: a holder may still punch holes
//! (`fallocate(FALLOC_FL_PUNCH_HOLE)`, `madvise(MADV_REMOVE)`), which frees pages and lets a
//! later fault allocate new ones — on a dry hugetlb pool that fault raises SIGBUS. Only
//! `F_SEAL_WRITE` would stop it, and it also stops the guest from writing its RAM. A descriptor
//! is therefore given only to processes trusted with the memory anyway (they can overwrite it).
//!
//! This module holds what does not need a mapping: creating and sealing the file
//! ([`create_sealed`]), inspecting a descriptor received from elsewhere ([`inspect`], the first
//! step of [`crate::Reservation::adopt`]), and passing descriptors over a UNIX socket
//! ([`send_fd`], [`recv_fd`]) with `SCM_RIGHTS`. See `docs/vmm-guide.md`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{FileType, MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

pub use crate::error::{AdoptProblem, Seals};

use crate::error::{Error, Result};
use crate::units::PageSize;

/// `HUGETLBFS_MAGIC` from `<linux/magic.h>`: `f_type` of a hugetlbfs file.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// `TMPFS_MAGIC` from `<linux/magic.h>`: `f_type` of a shmem (tmpfs) file.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The seals `fcntl(F_GET_SEALS)` reported.
fn seals_from_flags(f: SealFlags) -> Seals {
    Seals {
        shrink: f.contains(SealFlags::SHRINK),
        grow: f.contains(SealFlags::GROW),
        write: f.contains(SealFlags::WRITE),
        future_write: f.contains(SealFlags::FUTURE_WRITE),
        seal: f.contains(SealFlags::SEAL),
    }
}

/// What backs a memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FileBacking {
    /// hugetlbfs, pages of this size (`Huge2M` or `Huge1G`).
    Hugetlbfs(PageSize),
    /// shmem (tmpfs): base pages, or THP where `shmem_enabled` allows.
    Shmem,
}

impl FileBacking {
    /// The page granule of the file in bytes (the hugetlb page size, or the base page).
    pub fn granule(self) -> u64 {
        match self {
            FileBacking::Hugetlbfs(p) => p.bytes().unwrap_or(2 << 20) as u64,
            FileBacking::Shmem => crate::sys::page_size() as u64,
        }
    }
}

/// What [`inspect`] found out about a descriptor that is a sealed memory file.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemoryFile {
    /// The file's size in bytes (`st_size`).
    pub size: u64,
    /// Bytes the file has pages for (`st_blocks * 512`): equal to `size` when every page
    /// exists, so mapping it faults nothing new.
    pub allocated: u64,
    /// hugetlbfs or shmem, and the page size.
    pub backing: FileBacking,
    /// The seals.
    pub seals: Seals,
    /// The name `/proc/self/fd/N` links to (`/memfd:NAME (deleted)`), if `/proc` is mounted.
    pub name: Option<String>,
}

/// Why shmem files get no transparent huge pages on this host, or `None` if they can: the
/// selected mode of `/sys/kernel/mm/transparent_hugepage/shmem_enabled` (or of the 2 MiB size's
/// own `hugepages-2048kB/shmem_enabled`, Linux 6.11+, unless it says `inherit`). `never` and
/// `deny` refuse; `advise` (numapin advises), `within_size`, `always` and `force` allow.
pub fn shmem_thp_unavailable() -> Option<String> {
    fn selected(path: &str) -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let sel = text
            .split_whitespace()
            .find(|w| w.starts_with('[') && w.ends_with(']'))?;
        Some(sel.trim_matches(['[', ']']).to_string())
    }
    const TOP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    const SIZE: &str = "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled";
    let mode = match selected(SIZE) {
        Some(m) if m != "inherit" => m,
        _ => match selected(TOP) {
            Some(m) => m,
            None => return Some("unsupported".into()),
        },
    };
    match mode.as_str() {
        "never" | "deny" => Some(mode),
        _ => None,
    }
}

fn errno(e: rustix::io::Errno) -> i32 {
    e.raw_os_error()
}

/// Creates a memory file of `size` bytes for a shared reservation and seals it
/// (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before any page exists. The descriptor is
/// close-on-exec; `numapin run` clears the flag on the one it hands to the VMM.
///
/// `page_size`: `Huge2M`/`Huge1G` give a hugetlbfs file (`MFD_HUGETLB`), `Base4K` and
/// `Transparent` a shmem file.
///
/// # Errors
/// [`Error::Sys`] naming `memfd_create`, `ftruncate` or `fcntl(F_ADD_SEALS)`;
/// [`Error::PageSizeAuto`] for `PageSize::Auto` (resolve it first). Nothing stays open on
/// error.
#[doc(alias = "memfd_create")]
pub fn create_sealed(name: &str, page_size: PageSize, size: u64) -> Result<OwnedFd> {
    let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match page_size {
        PageSize::Huge2M => flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
        PageSize::Huge1G => flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_1GB,
        PageSize::Base4K | PageSize::Transparent => {}
        PageSize::Auto => {
            return Err(Error::PageSizeAuto {
                what: "a shared reservation's file",
            })
        }
    }
    // The kernel limits memfd names to 249 bytes and refuses NUL; keep what fits.
    let name: String = name
        .chars()
        .filter(|c| *c != '\0')
        .scan(0usize, |n, c| {
            *n += c.len_utf8();
            (*n <= 200).then_some(c)
        })
        .collect();
    let fd = rustix::fs::memfd_create(name.as_str(), flags)
        .map_err(|e| Error::sys("memfd_create", errno(e)))?;
    rustix::fs::ftruncate(&fd, size).map_err(|e| Error::sys("ftruncate", errno(e)))?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(|e| Error::sys("fcntl(F_ADD_SEALS)", errno(e)))?;
    Ok(fd)
}

fn file_kind(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

/// What `/proc/self/fd/N` links to, if `/proc` is mounted.
fn fd_name(fd: BorrowedFd<'_>) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Checks that `fd` is a sealed memfd on hugetlbfs or shmem that can back guest RAM, and says
/// what it holds. Reads only metadata (`fstat`, `fstatfs`, `F_GET_SEALS`); maps nothing.
///
/// # Errors
/// [`Error::NotAdoptable`] with the [`AdoptProblem`]: not a file (a pipe, a socket), not a
/// memfd, unsealed, sealed against writing, empty or not page-aligned;
/// [`Error::Sys`] when `fstat`/`fstatfs` fail (e.g. a closed descriptor: `EBADF`).
pub fn inspect(fd: BorrowedFd<'_>) -> Result<MemoryFile> {
    let raw = fd.as_raw_fd();
    let refuse = |problem| Error::NotAdoptable { fd: raw, problem };
    let st = rustix::fs::fstat(fd).map_err(|e| Error::sys("fstat", errno(e)))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(refuse(AdoptProblem::NotAFile {
            kind: file_kind(kind),
        }));
    }
    let name = fd_name(fd);
    let sfs = rustix::fs::fstatfs(fd).map_err(|e| Error::sys("fstatfs", errno(e)))?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let magic = sfs.f_type as i64;
    let size = st.st_size as u64;
    let backing = match magic {
        HUGETLBFS_MAGIC => match st.st_blksize as u64 {
            b if b == 1 << 30 => FileBacking::Hugetlbfs(PageSize::Huge1G),
            _ => FileBacking::Hugetlbfs(PageSize::Huge2M),
        },
        TMPFS_MAGIC => FileBacking::Shmem,
        other => {
            return Err(refuse(AdoptProblem::NotMemfd {
                filesystem: format!("a filesystem of type {other:#x}"),
                path: name.unwrap_or_default(),
            }))
        }
    };
    // A memfd's /proc link reads `/memfd:NAME (deleted)`; a named file of a tmpfs or
    // hugetlbfs mount has its path there (and can never be sealed: the kernel sets
    // F_SEAL_SEAL on such files at creation).
    if let Some(n) = name.as_deref() {
        if !n.starts_with("/memfd:") {
            return Err(refuse(AdoptProblem::NotMemfd {
                filesystem: match backing {
                    FileBacking::Hugetlbfs(_) => "hugetlbfs".into(),
                    FileBacking::Shmem => "tmpfs".into(),
                },
                path: n.to_string(),
            }));
        }
    }
    let seals = rustix::fs::fcntl_get_seals(fd)
        .map(seals_from_flags)
        .map_err(|e| Error::sys("fcntl(F_GET_SEALS)", errno(e)))?;
    if seals.write || seals.future_write {
        return Err(refuse(AdoptProblem::WriteSealed { present: seals }));
    }
    let missing = seals.missing();
    if !missing.is_empty() {
        return Err(refuse(AdoptProblem::Unsealed {
            present: seals,
            missing,
        }));
    }
    if size == 0 || size % backing.granule() != 0 {
        return Err(refuse(AdoptProblem::WrongSize {
            expected: 0,
            actual: size,
        }));
    }
    Ok(MemoryFile {
        size,
        allocated: (st.st_blocks as u64).saturating_mul(512),
        backing,
        seals,
        name,
    })
}

/// Most descriptors one message carries ([`send_fds`], [`recv_fds`]).
pub const MAX_FDS: usize = 4;

/// Moves `fd` to a descriptor number above `floor` (`F_DUPFD_CLOEXEC`), unless it is above
/// already. For the memory file of a record whose lock is descriptor `floor`: when a process
/// dies, Linux releases its files from the highest descriptor down (the final `fput`s run as
/// task work, last queued first; measured on this 6.x kernel: with the lock's descriptor
/// below the memory file's, 0 of 100 SIGKILLed holders had their lock dropped while their
/// hugepages were still in use, and 61 of 100 the other way round). So memory above its
/// record's lock is freed before the lock goes, and no reaper can release the charge of
/// memory that still exists. An ordering the kernel does not promise: a mitigation, not a
/// proof (see "Weak points" in docs/pool.md).
///
/// # Errors
/// `fcntl(F_DUPFD_CLOEXEC)`'s (e.g. `EMFILE`); `fd` is closed then.
#[cfg(not(loom))]
pub(crate) fn keep_above(fd: OwnedFd, floor: std::os::fd::RawFd) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    if fd.as_raw_fd() > floor {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, floor + 1)?)
}

/// Sends `payload` and the descriptor `fd` over a connected UNIX socket (`SCM_RIGHTS`).
///
/// # Errors
/// The `sendmsg` error.
#[doc(alias = "sendmsg")]
#[doc(alias = "SCM_RIGHTS")]
pub fn send_fd(socket: impl AsFd, fd: BorrowedFd<'_>, payload: &[u8]) -> std::io::Result<()> {
    send_fds(socket, payload, &[fd])
}

/// Sends `payload` and up to [`MAX_FDS`] descriptors in one message over a connected UNIX
/// socket (`SCM_RIGHTS`). An empty payload is sent as one zero byte: a stream socket would not
/// carry descriptors alone.
///
/// # Errors
/// The `sendmsg` error; `Other` for more than [`MAX_FDS`] descriptors or a short send.
#[doc(alias = "sendmsg")]
#[doc(alias = "SCM_RIGHTS")]
pub fn send_fds(socket: impl AsFd, payload: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS
        || (!fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)))
    {
        return Err(std::io::Error::other(format!(
            "{} descriptors: at most {MAX_FDS} go in one message",
            fds.len()
        )));
    }
    let payload = if payload.is_empty() {
        &[0u8][..]
    } else {
        payload
    };
    let n = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(payload)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != payload.len() {
        return Err(std::io::Error::other(format!(
            "sendmsg sent {n} of {} bytes",
            payload.len()
        )));
    }
    Ok(())
}

/// Receives a message of at most `buf.len()` bytes and the descriptor that came with it
/// (`SCM_RIGHTS`), close-on-exec. Returns the bytes received and the descriptor, `None` if the
/// message carried none; extra descriptors are closed.
///
/// # Errors
/// As [`recv_fds`].
#[doc(alias = "recvmsg")]
pub fn recv_fd(socket: impl AsFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let (n, mut fds) = recv_fds(socket, buf)?;
    // The first is ours; dropping the rest closes them.
    let fd = (!fds.is_empty()).then(|| fds.swap_remove(0));
    Ok((n, fd))
}

/// Receives a message of at most `buf.len()` bytes and the descriptors (at most [`MAX_FDS`])
/// that came with it, close-on-exec. Returns the bytes received and the descriptors.
///
/// # Errors
/// The `recvmsg` error; `InvalidData` if the payload or the control data were truncated (a
/// longer payload, or more than [`MAX_FDS`] descriptors: those are closed).
#[doc(alias = "recvmsg")]
pub fn recv_fds(socket: impl AsFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || msg.flags.contains(ReturnFlags::TRUNC) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "message or descriptors truncated: more than {} bytes or {MAX_FDS} descriptors",
                buf.len()
            ),
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_descriptors_travel_in_one_message_and_too_many_are_refused() {
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let files: Vec<std::fs::File> = (0..MAX_FDS + 1)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let fds: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        send_fds(&a, b"two", &fds[..2]).unwrap();
        let mut buf = [0u8; 16];
        let (n, got) = recv_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], got.len()), (&b"two"[..], 2));
        let e = send_fds(&a, b"many", &fds).unwrap_err();
        assert!(e.to_string().contains("at most 4"), "{e}");
        // One descriptor, and an empty payload still carries it.
        send_fd(&a, fds[0], b"").unwrap();
        let (n, one) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!(n, 1);
        assert!(one.is_some());
    }

    #[test]
    fn a_shmem_memfd_is_created_sealed() {
        let fd = create_sealed("numapin-test", PageSize::Base4K, 1 << 20).unwrap();
        let f = inspect(fd.as_fd()).unwrap();
        assert_eq!(f.size, 1 << 20);
        assert_eq!(f.backing, FileBacking::Shmem);
        assert_eq!(f.seals, Seals::REQUIRED);
        assert_eq!(f.allocated, 0, "nothing populated yet");
        assert!(f.name.unwrap().starts_with("/memfd:numapin-test"));
        // The seals hold: neither shrink nor grow.
        assert_eq!(
            rustix::fs::ftruncate(&fd, 4096),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(
            rustix::fs::ftruncate(&fd, 2 << 20),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(
            rustix::fs::fcntl_add_seals(&fd, SealFlags::WRITE),
            Err(rustix::io::Errno::PERM)
        );
    }

    #[test]
    fn a_pipe_is_not_a_file() {
        let (r, _w) = rustix::pipe::pipe().unwrap();
        match inspect(r.as_fd()) {
            Err(Error::NotAdoptable {
                problem: AdoptProblem::NotAFile { kind: "pipe" },
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unsealed_memfd_is_refused_with_what_it_lacks() {
        let fd =
            rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
                .unwrap();
        rustix::fs::ftruncate(&fd, 1 << 20).unwrap();
        rustix::fs::fcntl_add_seals(&fd, SealFlags::GROW).unwrap();
        let e = inspect(fd.as_fd()).unwrap_err();
        match &e {
            Error::NotAdoptable {
                problem: AdoptProblem::Unsealed { missing, present },
                ..
            } => {
                assert_eq!(missing, &vec!["F_SEAL_SHRINK", "F_SEAL_SEAL"]);
                assert!(present.grow);
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("F_SEAL_SHRINK|F_SEAL_SEAL"), "{e}");
    }

    #[test]
    fn a_file_on_disk_or_in_dev_shm_is_not_a_memfd() {
        let dir = std::env::temp_dir().join(format!("numapin-shared-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("ram");
        std::fs::write(&p, vec![0u8; 8192]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let e = inspect(f.as_fd()).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            matches!(
                e,
                Error::NotAdoptable {
                    problem: AdoptProblem::NotMemfd { .. },
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_descriptor_travels_over_a_unix_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = create_sealed("numapin-pass", PageSize::Base4K, 8192).unwrap();
        send_fd(&a, fd.as_fd(), b"hello").unwrap();
        let mut buf = [0u8; 16];
        let (n, got) = recv_fd(&b, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let got = got.expect("a descriptor");
        assert_ne!(got.as_raw_fd(), fd.as_raw_fd());
        assert_eq!(inspect(got.as_fd()).unwrap().size, 8192);
        // Close-on-exec on the receiving side.
        let fl = rustix::io::fcntl_getfd(&got).unwrap();
        assert!(fl.contains(rustix::io::FdFlags::CLOEXEC));
    }
}
