//! Boundary checks shared by every export: null pointers, lengths, overlap.

use crate::error::{Error, ErrorKind, Result};
use std::fmt;

/// An argument's name for messages, formatted only when an error is reported:
/// `field`, or `tensors[i].field` inside a tensor list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Name {
    pub tensor: Option<usize>,
    pub field: &'static str,
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tensor {
            Some(i) => write!(f, "tensors[{i}].{}", self.field),
            None => f.write_str(self.field),
        }
    }
}

/// Fails with `DP_ERR_NULL_POINTER` if `ptr` is null while `len > 0`.
pub(crate) fn non_null<T>(name: impl fmt::Display, ptr: *const T, len: usize) -> Result<()> {
    if ptr.is_null() && len > 0 {
        return Err(Error::new(
            ErrorKind::NullPointer,
            format!("{name} is NULL but its length is {len}"),
        ));
    }
    Ok(())
}

/// Fails with `DP_ERR_NULL_POINTER` if `ptr` is null.
pub(crate) fn required<T>(name: impl fmt::Display, ptr: *const T) -> Result<()> {
    if ptr.is_null() {
        return Err(Error::new(
            ErrorKind::NullPointer,
            format!("{name} is NULL"),
        ));
    }
    Ok(())
}

/// Fails unless `len` elements of `T` fit in `isize::MAX` bytes and `ptr` is aligned for `T`.
pub(crate) fn size_and_alignment<T>(
    name: impl fmt::Display,
    ptr: *const T,
    len: usize,
) -> Result<()> {
    let bytes = len.checked_mul(core::mem::size_of::<T>());
    if bytes.is_none_or(|b| b > isize::MAX as usize) {
        return Err(Error::length(format!(
            "{name}: {len} elements overflow the address space"
        )));
    }
    if !ptr.is_null() && !(ptr as usize).is_multiple_of(core::mem::align_of::<T>()) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{name} is not aligned to {} bytes",
                core::mem::align_of::<T>()
            ),
        ));
    }
    Ok(())
}

/// One buffer an export touches, for the overlap check.
pub(crate) struct Region {
    pub name: Name,
    pub start: usize,
    pub end: usize,
    pub written: bool,
}

impl Region {
    pub(crate) fn new<T>(name: Name, ptr: *const T, len: usize, written: bool) -> Self {
        let start = ptr as usize;
        Self {
            name,
            start,
            end: start + len * core::mem::size_of::<T>(),
            written,
        }
    }
}

/// Fails with `DP_ERR_ALIASING` if a written region overlaps any other region.
/// Sorts by start and sweeps once: O(n log n) for the multi-tensor entry points.
pub(crate) fn disjoint(mut regions: Vec<Region>) -> Result<()> {
    regions.retain(|r| r.end > r.start);
    regions.sort_unstable_by_key(|r| r.start);
    let mut reach_any: Option<usize> = None; // index of the region reaching furthest so far
    let mut reach_written: Option<usize> = None;
    for (i, r) in regions.iter().enumerate() {
        let hit = if r.written { reach_any } else { reach_written };
        if let Some(j) = hit.filter(|&j| regions[j].end > r.start) {
            return Err(Error::new(
                ErrorKind::Aliasing,
                format!("{} overlaps {}", r.name, regions[j].name),
            ));
        }
        if reach_any.is_none_or(|j| r.end > regions[j].end) {
            reach_any = Some(i);
        }
        if r.written && reach_written.is_none_or(|j| r.end > regions[j].end) {
            reach_written = Some(i);
        }
    }
    Ok(())
}

/// A slice over caller memory; `(NULL, 0)` gives an empty slice.
///
/// # Safety
/// `ptr` must be null with `len == 0`, or valid for reads of `len` elements for `'a`, aligned
/// (checked by [`size_and_alignment`]), and not written through another reference during `'a`
/// (checked by [`disjoint`]).
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller guarantees validity; non-null and aligned were checked before.
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

/// A mutable slice over caller memory; `(NULL, 0)` gives an empty slice.
///
/// # Safety
/// As [`slice`], and valid for writes, with no other reference to that memory during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller guarantees validity and exclusivity; non-null, aligned and disjoint
    // were checked before.
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}
