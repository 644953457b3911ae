//! The reaper: settles and frees the records of dead owners.
//!
//! A record's owner is dead when nobody holds its slot's lock (see `owner.rs`). The reaper
//! takes that lock itself (never waiting) before it writes anything, so it never races the
//! holder, a claimer or another reaper, and a holder that is alive can never be reaped.

use super::owner::current_owner;
use super::table::{Crash, OWNER_REAPING};
use super::Ledger;
use crate::error::Result;

impl Ledger {
    /// Releases the charges of every record whose owner is dead, and frees those records.
    /// Returns how many records were reaped. Never waits: a slot whose lock is held (its
    /// owner lives, or someone else is claiming or reaping it) is skipped; a reaper that dies
    /// midway leaves the record to the next one, which settles it the same way.
    ///
    /// # Errors
    /// [`crate::Error::LedgerInvalid`] if a record holds out-of-range values;
    /// [`crate::Error::LedgerIo`] if a lock cannot be probed or taken.
    pub fn reap(&self) -> Result<usize> {
        let me = current_owner()?;
        let mut n = 0;
        for s in 0..self.table.geo.slots {
            if self.reap_slot(s, me)? {
                n += 1;
            }
        }
        Ok(n)
    }

    pub(super) fn reap_slot(&self, s: usize, me: u64) -> Result<bool> {
        let t = &self.table;
        let bad = |b| self.bad(b);
        if t.owner(s).map_err(bad)? == 0 {
            return Ok(false);
        }
        // A cheap look first (most slots are held by live owners), then the lock itself.
        let off = self.lock_offset(s);
        if self.beacons.is_held(off)? {
            return Ok(false);
        }
        let Some(_beacon) = self.beacons.try_hold(off)? else {
            return Ok(false);
        };
        // We hold the slot's lock: its holder is gone (the kernel dropped its lock when its
        // last descriptor closed), and nobody else may write the slot until we drop it.
        let o = t.owner(s).map_err(bad)?;
        if o == 0 {
            return Ok(false); // freed between our look and our lock
        }
        let reaper = me | OWNER_REAPING;
        if !t.claim(s, o, reaper).map_err(bad)? {
            return Ok(false);
        }
        let r = (|| {
            let mut seq = t.resolve(s)?;
            for c in 0..t.geo.classes {
                let from = t.charged(s, c)?;
                if from != 0 {
                    // Never refused: a release has no limit. Errors only for corrupted counters.
                    let _ = t.apply(s, seq, c, from, 0, None, None, Crash::Never)?;
                    seq += 1;
                }
            }
            t.clear_info(s)?;
            t.free(s, reaper)
        })();
        r.map_err(bad)?;
        Ok(true)
    }
}
