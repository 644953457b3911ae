//! Whom a ledger file must belong to before this process maps it (the trust model; see
//! "Trust" in docs/ledger.md).
//!
//! Anyone who can write the file can make admission lie, and anyone who can truncate it kills
//! every VMM that maps it (SIGBUS on the next access). So a ledger is used only if
//! - it is a regular file, owned by the caller's effective uid or by root;
//! - nobody but its owner may write it, except its group when that group is the configured
//!   one (`LedgerConfig::group`, `NUMAPIN_LEDGER_GID`);
//! - its directory is owned by the caller or root, and others cannot replace files in it
//!   (not writable by group or others, or sticky, as `/dev/shm` is).
//!
//! The checks run on the opened descriptor (`fstat`), so what is checked is what is mapped.
//! Inside a user namespace that does not map the host's root, every unmapped owner shows as
//! the overflow uid; it is taken for root there (it cannot be told apart), which is why the
//! mode checks do not depend on the owner.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result, TrustProblem};

/// This process's effective uid.
pub(super) fn caller_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether `uid` may be root as this process sees it: root itself, or, inside a user namespace
/// that does not map the host's root (e.g. `unshare -U -r` by an unprivileged user), the
/// overflow uid the kernel shows for every unmapped owner (root's `/dev/shm` among them).
fn root_like(uid: u32) -> bool {
    if uid == 0 {
        return true;
    }
    let overflow = std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let initial_ns = std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
    !initial_ns && overflow == Some(uid)
}

fn untrusted(path: &Path, md: &std::fs::Metadata, group: Option<u32>, p: TrustProblem) -> Error {
    Error::LedgerUntrusted {
        path: path.to_path_buf(),
        owner_uid: md.uid(),
        gid: md.gid(),
        mode: md.permissions().mode() & 0o7777,
        caller_uid: caller_uid(),
        group,
        problem: p,
    }
}

/// What a non-regular file is, for the error.
pub(super) fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "directory"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Checks an opened ledger file's metadata (from `fstat` on the descriptor).
pub(super) fn check_file(path: &Path, md: &std::fs::Metadata, group: Option<u32>) -> Result<()> {
    if !md.file_type().is_file() {
        return Err(Error::LedgerNotAFile {
            path: path.to_path_buf(),
            kind: kind(md.file_type()),
        });
    }
    let me = caller_uid();
    if md.uid() != me && !root_like(md.uid()) {
        return Err(untrusted(path, md, group, TrustProblem::ForeignOwner));
    }
    let mode = md.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(untrusted(path, md, group, TrustProblem::WritableByOthers));
    }
    if mode & 0o020 != 0 && group != Some(md.gid()) {
        return Err(untrusted(
            path,
            md,
            group,
            TrustProblem::WritableByUnconfiguredGroup,
        ));
    }
    Ok(())
}

/// Checks the directory a ledger file is in (or is about to be created in).
pub(super) fn check_dir(file: &Path) -> Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let md = std::fs::metadata(dir).map_err(|e| Error::LedgerIo {
        path: dir.to_path_buf(),
        op: "stat (directory)",
        source: e,
    })?;
    let me = caller_uid();
    if md.uid() != me && !root_like(md.uid()) {
        return Err(untrusted(dir, &md, None, TrustProblem::ForeignDirectory));
    }
    let mode = md.permissions().mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(untrusted(
            dir,
            &md,
            None,
            TrustProblem::ReplaceableDirectory,
        ));
    }
    Ok(())
}

/// Creates a ledger's directory (e.g. `/run/numapin`, which does not survive a reboot) if it
/// is missing: one level, mode 0755 (less the umask); it is then checked like any other ledger
/// directory (one someone else made first fails there).
pub(super) fn ensure_dir(file: &Path) -> Result<()> {
    let Some(dir) = file.parent() else {
        return Ok(());
    };
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::LedgerIo {
            path: dir.to_path_buf(),
            op: "mkdir",
            source: e,
        }),
    }
}
