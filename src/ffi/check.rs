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
    size_and_alignment_of(name, &buffer("", ptr, len, false))
}

/// [`size_and_alignment`] for a buffer's element size and alignment: the byte count must fit in
/// `isize::MAX` and the range `[addr, addr + bytes)` must not wrap the address space.
fn size_and_alignment_of(name: impl fmt::Display, b: &Buffer) -> Result<()> {
    let bytes = b.len.checked_mul(b.elem_size);
    let wraps = bytes.is_none_or(|n| {
        n > isize::MAX as usize || (!b.addr.is_null() && (b.addr as usize).checked_add(n).is_none())
    });
    if wraps {
        return Err(Error::length(format!(
            "{name}: {} elements at {:p} overflow the address space",
            b.len, b.addr
        )));
    }
    if !b.addr.is_null() && !(b.addr as usize).is_multiple_of(b.align) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} is not aligned to {} bytes", b.align),
        ));
    }
    Ok(())
}

/// A versioned config struct: its first field is `size_t struct_size`, set to `sizeof` the
/// struct by its `*_default()` function.
pub(crate) trait Versioned: Copy {
    /// The struct's C name, for messages.
    const NAME: &'static str;
    /// The `*_default()` function that fills it, for messages.
    const DEFAULT_FN: &'static str;
    fn struct_size(&self) -> usize;
}

/// Reads a config struct from caller memory, unaligned: NULL is `DP_ERR_NULL_POINTER`; a
/// `struct_size` other than this library's `sizeof` is `DP_ERR_INVALID_ARGUMENT` (a struct from
/// another major version, or one not filled by its `*_default()` function).
///
/// # Safety
/// `ptr`, when non-null, must be valid for reading `size_of::<T>()` bytes (the C contract). `T`
/// must be plain data for which every bit pattern is valid (integers and floats only).
pub(crate) unsafe fn config<T: Versioned>(name: &'static str, ptr: *const T) -> Result<T> {
    required(name, ptr)?;
    // SAFETY: non-null (checked above), valid for size_of::<T>() bytes (C contract); read
    // unaligned, and every bit pattern is a valid T (integer and float fields only).
    let value = unsafe { read(ptr) };
    if value.struct_size() != core::mem::size_of::<T>() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{name}->struct_size = {}, but this library's {} has {} bytes: fill it with {}()",
                value.struct_size(),
                T::NAME,
                core::mem::size_of::<T>(),
                T::DEFAULT_FN
            ),
        ));
    }
    Ok(value)
}

/// A C boolean (`uint32_t`): 0 is false, 1 is true, anything else is `DP_ERR_INVALID_ARGUMENT`.
pub(crate) fn flag(name: impl fmt::Display, value: u32) -> Result<bool> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("{name} = {value}: a flag is 0 or 1"),
        )),
    }
}

/// Fails with `DP_ERR_LENGTH` unless a buffer's count is exactly what the operation needs.
pub(crate) fn exact_len(name: impl fmt::Display, got: usize, need: usize) -> Result<()> {
    if got != need {
        return Err(Error::length(format!(
            "{name}: {got} elements given, the operation needs {need}"
        )));
    }
    Ok(())
}

/// Fails with `DP_ERR_LENGTH` when a (strided) buffer's count is below what the operation reads.
pub(crate) fn min_len(name: impl fmt::Display, got: usize, need: usize) -> Result<()> {
    if got < need {
        return Err(Error::length(format!(
            "{name}: {got} elements given, the operation reads {need}"
        )));
    }
    Ok(())
}

/// Reads a struct from caller memory without assuming its alignment.
///
/// # Safety
/// `ptr` must be non-null and valid for reading `size_of::<T>()` bytes; every bit pattern must be
/// a valid `T`.
pub(crate) unsafe fn read<T: Copy>(ptr: *const T) -> T {
    // SAFETY: the caller's contract above; read_unaligned needs no alignment.
    unsafe { ptr.read_unaligned() }
}

/// Writes a value to caller memory without assuming its alignment; called only after every check.
///
/// # Safety
/// `ptr` must be non-null and valid for writing `size_of::<T>()` bytes.
pub(crate) unsafe fn write<T: Copy>(ptr: *mut T, value: T) {
    // SAFETY: the caller's contract above; write_unaligned needs no alignment.
    unsafe { ptr.write_unaligned(value) }
}

/// `a * b` elements of `name`, or a length error when the product overflows.
pub(crate) fn product(name: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::length(format!("{name}: {a} x {b} overflows")))
}

/// An argument outside any tensor list.
pub(crate) fn plain(field: &'static str) -> Name {
    Name {
        tensor: None,
        field,
    }
}

/// One buffer of a call: its name, address, element count, size and alignment, and whether the
/// call writes it. Optional buffers (NULL allowed) are listed only when non-NULL.
pub(crate) struct Buffer {
    name: &'static str,
    addr: *const u8,
    len: usize,
    elem_size: usize,
    align: usize,
    written: bool,
}

pub(crate) fn buffer<T>(name: &'static str, ptr: *const T, len: usize, written: bool) -> Buffer {
    Buffer {
        name,
        addr: ptr.cast(),
        len,
        elem_size: core::mem::size_of::<T>(),
        align: core::mem::align_of::<T>(),
        written,
    }
}

/// The null checks of every buffer, then the size and alignment checks (in that order across
/// all of them); on success, the buffers' regions for [`disjoint`], which callers run after
/// their hyperparameter checks.
pub(crate) fn check_buffers(buffers: &[Buffer]) -> Result<Vec<Region>> {
    let mut regions = Vec::with_capacity(buffers.len());
    check_tensor_buffers(None, buffers, &mut regions)?;
    Ok(regions)
}

/// [`check_buffers`] for the buffers of tensor `tensor` of a list (named `tensors[i].field`),
/// appending their regions to `regions`.
pub(crate) fn check_tensor_buffers(
    tensor: Option<usize>,
    buffers: &[Buffer],
    regions: &mut Vec<Region>,
) -> Result<()> {
    let name = |b: &Buffer| Name {
        tensor,
        field: b.name,
    };
    for b in buffers {
        non_null(name(b), b.addr, b.len)?;
    }
    for b in buffers {
        size_and_alignment_of(name(b), b)?;
    }
    regions.extend(
        buffers
            .iter()
            .map(|b| Region::new(name(b), b.addr, b.len * b.elem_size, b.written)),
    );
    Ok(())
}

/// A C tensor list of `count` entries, checked (non-null unless empty, sized, aligned), with
/// room reserved for `regions_per_tensor` overlap regions per tensor and `extra_regions` more
/// (the export's other buffers) before any tensor is read:
/// a count too large to check fails here, with `DP_ERR_ALLOCATION`.
///
/// # Safety
/// `tensors` must be valid for reading `count` entries for `'a` (the C contract).
pub(crate) unsafe fn tensor_list<'a, T>(
    tensors: *const T,
    count: usize,
    regions_per_tensor: usize,
    extra_regions: usize,
) -> Result<(&'a [T], Vec<Region>)> {
    non_null("tensors", tensors, count)?;
    size_and_alignment("tensors", tensors, count)?;
    let mut regions = Vec::new();
    regions
        .try_reserve_exact(
            count
                .saturating_mul(regions_per_tensor)
                .saturating_add(extra_regions),
        )
        .map_err(|_| {
            Error::new(
                ErrorKind::Allocation,
                format!("no memory to check {count} tensors for overlap"),
            )
        })?;
    // SAFETY: non-null (or count == 0), aligned and sized: checked above; validity is the
    // caller's contract.
    Ok((unsafe { slice(tensors, count) }, regions))
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
/// As [`slice()`], and valid for writes, with no other reference to that memory during `'a`.
pub(crate) unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller guarantees validity and exclusivity; non-null, aligned and disjoint
    // were checked before.
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}
