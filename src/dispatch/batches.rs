//! The multi-tensor scheduler: [`balanced_batches`] cuts a list of tensors into batches of
//! about one block of elements each (so threads share work by elements, not by tensor count),
//! and [`step_batches`] runs a step over them (the finite scan of every batch first, then the
//! update), on the crate's pool.

use super::{Par, Split};
use crate::error::{non_finite_error, Result};

/// The second half of every multi-tensor step: with `check_finite`, `finite` must hold for
/// every piece (all batches scanned in parallel; else [`crate::ErrorKind::NonFinite`] and nothing is
/// written), then `update` runs on every piece, the batches in parallel.
pub(crate) fn step_batches<W: Send + Sync>(
    par: Par,
    batches: Vec<Vec<W>>,
    check_finite: bool,
    finite: impl Fn(&W) -> bool + Sync,
    update: impl Fn(W) + Sync,
) -> Result<()> {
    if check_finite {
        let failed = std::sync::atomic::AtomicBool::new(false);
        super::for_each_item(par, batches.iter().collect(), |batch: &Vec<W>| {
            if !batch.iter().all(&finite) {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })?;
        if failed.into_inner() {
            return Err(non_finite_error());
        }
    }
    super::for_each_item(par, batches, |batch| batch.into_iter().for_each(&update))
}

/// Cuts each piece into blocks of at most `block` elements and packs consecutive pieces into
/// batches of about `block` elements, so threads share work by elements, not by tensor count.
/// Pieces are cut only at multiples of `granule` (a divisor of `block`; a batch may then run
/// over `block` by less than `granule`).
pub(crate) fn balanced_batches<W: Split>(
    pieces: impl Iterator<Item = W>,
    block: usize,
    granule: usize,
) -> Vec<Vec<W>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut current_len = 0;
    for piece in pieces {
        let mut rest = piece;
        while rest.len() > 0 {
            let take = rest
                .len()
                .min((block - current_len).next_multiple_of(granule));
            let (head, tail) = rest.split_at(take);
            current.push(head);
            current_len += take;
            rest = tail;
            if current_len >= block {
                batches.push(std::mem::take(&mut current));
                current_len = 0;
            }
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
