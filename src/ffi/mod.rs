//! The C ABI. Nothing outside this module is `unsafe`.
//!
//! Every export follows the same contract (`docs/architecture.md`, "The C contract"):
//! 1. it runs inside `guard`: a panic becomes `DP_ERR_PANIC`, never an unwind into C;
//! 2. it checks, in this order and before any slice is formed: null pointers (`(NULL, 0)` is an
//!    empty buffer), lengths and size overflow, hyperparameters, overlapping buffers;
//! 3. on failure it returns a status, stores a message for [`library::dp_last_error_message`],
//!    and writes no output.

#![allow(non_camel_case_types)]

pub mod adam;
pub mod adam_mixed;
pub mod basis;
mod check;
pub mod gn;
pub mod grad_norm;
pub mod library;

use crate::error::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Status returned by every function. `DP_OK` is 0; values are never reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum dp_status {
    /// Success.
    DP_OK = 0,
    /// A required pointer was NULL.
    DP_ERR_NULL_POINTER = 1,
    /// Lengths disagree or a size overflows.
    DP_ERR_LENGTH = 2,
    /// Two buffers that must be disjoint overlap.
    DP_ERR_ALIASING = 3,
    /// A hyperparameter is out of range.
    DP_ERR_INVALID_HYPERPARAMETER = 4,
    /// The gradient holds NaN or Inf and check_finite was set: nothing was written.
    DP_ERR_NON_FINITE = 5,
    /// A Rust panic was caught (a bug in diagprec).
    DP_ERR_PANIC = 6,
    /// Another argument is invalid (a mode, a missing optional buffer, a misaligned pointer).
    DP_ERR_INVALID_ARGUMENT = 7,
    /// Memory or threads could not be allocated.
    DP_ERR_ALLOCATION = 8,
}

impl From<ErrorKind> for dp_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NullPointer => dp_status::DP_ERR_NULL_POINTER,
            ErrorKind::Length => dp_status::DP_ERR_LENGTH,
            ErrorKind::Aliasing => dp_status::DP_ERR_ALIASING,
            ErrorKind::InvalidHyperparameter => dp_status::DP_ERR_INVALID_HYPERPARAMETER,
            ErrorKind::NonFinite => dp_status::DP_ERR_NON_FINITE,
            ErrorKind::Panic => dp_status::DP_ERR_PANIC,
            ErrorKind::InvalidArgument => dp_status::DP_ERR_INVALID_ARGUMENT,
            ErrorKind::Allocation => dp_status::DP_ERR_ALLOCATION,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records the message of this thread's last call. From a thread-local destructor, after the
/// slot is gone, the message is dropped rather than aborting the host.
fn set_last_error(message: &str) {
    let _ = LAST_ERROR.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            return;
        };
        // PERF: a success after a success allocates nothing.
        if message.is_empty() && slot.as_bytes().is_empty() {
            return;
        }
        *slot = CString::new(message.replace('\0', " ")).unwrap_or_default();
    });
}

/// The message of this thread's last call; `""` where none can be read (a thread-local
/// destructor running after the slot was destroyed).
fn last_error() -> *const std::ffi::c_char {
    LAST_ERROR
        .try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// Runs an export's body: catches panics, records the message of a failure, maps it to a status.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Error>) -> dp_status {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::new(
            ErrorKind::Panic,
            format!("internal panic caught at the C boundary (please report): {what}"),
        ))
    });
    match outcome {
        Ok(()) => {
            set_last_error("");
            dp_status::DP_OK
        }
        Err(error) => {
            set_last_error(error.message());
            error.kind().into()
        }
    }
}
