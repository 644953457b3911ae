//! The reaper: settles and frees the records of dead owners.

use super::owner::current_owner;
use super::table::{self, Crash, OWNER_REAPING};
use super::Ledger;
use crate::error::Result;

impl Ledger {
    // ---- reaping -------------------------------------------------------------------------

    /// Releases the charges of every record whose owner is dead, and frees those records.
    /// Returns how many records were reaped. Runs without locks: a reaper that dies midway
    /// leaves the record to the next one, which settles it the same way.
    ///
    /// # Errors
    /// [`crate::Error::LedgerInvalid`] if a record holds out-of-range values.
    pub fn reap(&self) -> Result<usize> {
        let me = current_owner()?;
        self.reap_as(me)
    }

    /// [`Ledger::reap`] acting as the given owner word.
    #[doc(hidden)]
    pub fn reap_as(&self, me: u64) -> Result<usize> {
        let mut n = 0;
        for s in 0..self.table.geo.slots {
            if self.reap_slot(s, me).map_err(|b| self.bad(b))? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn reap_slot(&self, s: usize, me: u64) -> table::R<bool> {
        let t = &self.table;
        let o = t.owner(s)?;
        if o == 0 || (o & !OWNER_REAPING) == me || (self.alive)(o & !OWNER_REAPING) {
            return Ok(false);
        }
        let reaper = me | OWNER_REAPING;
        if !t.claim(s, o, reaper)? {
            return Ok(false);
        }
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
        t.free(s, reaper)?;
        Ok(true)
    }
}
