//! Why a descriptor cannot be adopted as a shared reservation, and the seals of a memory file:
//! the values [`super::Error::NotAdoptable`] carries (re-exported by `numapin::shared`, where
//! they are found out).

use std::fmt;

use crate::units::{format_bytes, PageSize};

/// The seals of a memory file (`fcntl(F_GET_SEALS)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Seals {
    /// `F_SEAL_SHRINK`: the file cannot become smaller (no SIGBUS from truncation).
    pub shrink: bool,
    /// `F_SEAL_GROW`: the file cannot become larger (no memory beyond what was charged).
    pub grow: bool,
    /// `F_SEAL_WRITE`: no writes at all (guest RAM cannot be sealed so).
    pub write: bool,
    /// `F_SEAL_FUTURE_WRITE`: no new writable mappings (guest RAM cannot be sealed so).
    pub future_write: bool,
    /// `F_SEAL_SEAL`: the set of seals is final.
    pub seal: bool,
}

impl Seals {
    /// The seals numapin puts on a shared reservation and requires of one it adopts.
    pub const REQUIRED: Seals = Seals {
        shrink: true,
        grow: true,
        write: false,
        future_write: false,
        seal: true,
    };

    /// The names of the seals of [`Seals::REQUIRED`] that `self` lacks.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.shrink {
            m.push("F_SEAL_SHRINK");
        }
        if !self.grow {
            m.push("F_SEAL_GROW");
        }
        if !self.seal {
            m.push("F_SEAL_SEAL");
        }
        m
    }
}

impl fmt::Display for Seals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.shrink, "F_SEAL_SHRINK"),
            (self.grow, "F_SEAL_GROW"),
            (self.write, "F_SEAL_WRITE"),
            (self.future_write, "F_SEAL_FUTURE_WRITE"),
            (self.seal, "F_SEAL_SEAL"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}

/// Why a descriptor cannot be adopted as a shared reservation (see
/// [`super::Error::NotAdoptable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdoptProblem {
    /// Not a regular file at all: a pipe, a socket, a directory, a device.
    NotAFile {
        /// What it is (`pipe`, `socket`, `directory`, `character device`, ...).
        kind: &'static str,
    },
    /// A regular file, but not a memfd on hugetlbfs or shmem (e.g. a file on disk, or a
    /// named file in `/dev/shm` or a hugetlbfs mount, which can never be sealed).
    NotMemfd {
        /// The filesystem (`hugetlbfs`, `tmpfs`, or the `f_type` magic in hex).
        filesystem: String,
        /// What `/proc/self/fd/N` names (empty when `/proc` is not mounted).
        path: String,
    },
    /// A memfd without the seals that keep every mapper safe from truncation.
    Unsealed {
        /// The seals it has.
        present: Seals,
        /// The required seals it lacks.
        missing: Vec<&'static str>,
    },
    /// Sealed against writing (`F_SEAL_WRITE`/`F_SEAL_FUTURE_WRITE`): it cannot be guest RAM.
    WriteSealed {
        /// The seals it has.
        present: Seals,
    },
    /// The size differs from the one the adopter expects (or is empty, or not a whole number
    /// of pages).
    WrongSize {
        /// Bytes expected (0 when no size was asked: the file is empty or not page-aligned).
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The page size differs from the one the adopter expects.
    WrongPageSize {
        /// Page size expected.
        expected: PageSize,
        /// Page size of the file.
        actual: PageSize,
    },
    /// Not every page of the file exists yet, so mapping it would allocate (and zero) pages:
    /// it was not populated by numapin, or someone punched holes into it.
    NotPopulated {
        /// The file's size.
        size: u64,
        /// Bytes it has pages for.
        allocated: u64,
    },
}

impl fmt::Display for AdoptProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdoptProblem::NotAFile { kind } => write!(
                f,
                "it is a {kind}, not a memory file; pass the descriptor of a numapin shared reservation (`Reservation::as_fd`, or NUMAPIN_FD under `numapin run`)"
            ),
            AdoptProblem::NotMemfd { filesystem, path } => write!(
                f,
                "it is a regular file on {filesystem} ({}), not a memfd, so it cannot carry the seals that prevent truncation; reserve with `.shared(true)` (or `numapin run`) and pass that descriptor",
                if path.is_empty() { "path unknown" } else { path }
            ),
            AdoptProblem::Unsealed { present, missing } => write!(
                f,
                "the memfd lacks the seals {} (it has: {present}); anyone holding it could truncate it under the guest (SIGBUS). Seal it with fcntl(F_ADD_SEALS, F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL) before passing it on, as numapin's shared reservations are",
                missing.join("|")
            ),
            AdoptProblem::WriteSealed { present } => write!(
                f,
                "the memfd is sealed against writing ({present}); guest RAM must stay writable: pass a memfd sealed with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL only"
            ),
            AdoptProblem::WrongSize { expected: 0, actual } => write!(
                f,
                "its size {} is empty or not a whole number of its pages; pass a populated shared reservation",
                format_bytes(*actual)
            ),
            AdoptProblem::WrongSize { expected, actual } => write!(
                f,
                "it holds {} ({actual} bytes) but {} ({expected} bytes) was expected; pass the reservation made for this VM, or expect its real size (NUMAPIN_SIZE)",
                format_bytes(*actual),
                format_bytes(*expected)
            ),
            AdoptProblem::WrongPageSize { expected, actual } => write!(
                f,
                "its pages are {actual} but {expected} was expected; reserve with the page size the VM needs, or adopt with page size {actual}"
            ),
            AdoptProblem::NotPopulated { size, allocated } => write!(
                f,
                "only {} of its {} have pages (mapping it would allocate and zero {} more); adopt only populated shared reservations, or build one with numapin",
                format_bytes(*allocated),
                format_bytes(*size),
                format_bytes(size.saturating_sub(*allocated))
            ),
        }
    }
}
