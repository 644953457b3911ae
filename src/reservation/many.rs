//! [`Reservation::build_many`]: several regions at once, all or nothing.

use super::{Reservation, ReservationBuilder};
use crate::error::Result;

impl Reservation {
    /// Reserves several regions at once — e.g. one per NUMA node of a guest — populating them
    /// concurrently, each with its own node's CPUs. All or nothing: if one fails, the others
    /// are released and the first error (in input order) is returned.
    ///
    /// # Errors
    /// The first error any of the builders returns.
    pub fn build_many(
        builders: impl IntoIterator<Item = ReservationBuilder>,
    ) -> Result<Vec<Reservation>> {
        let pending = builders
            .into_iter()
            .map(ReservationBuilder::build_background)
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(pending.len());
        let mut first_err = None;
        for p in pending {
            match p.wait() {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
