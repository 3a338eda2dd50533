//! The crate's one error type. Every failure carries a kind (one per C status code) and a
//! human-readable message naming the argument at fault.

use core::fmt;

/// What went wrong. Each kind maps to exactly one `dp_status` value in the C ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A required pointer was null (C ABI only).
    NullPointer,
    /// Buffer lengths disagree, a size is zero where it must not be, or a size overflows.
    Length,
    /// Two buffers that must be disjoint overlap (C ABI only: Rust borrows rule this out).
    Aliasing,
    /// A hyperparameter is out of its documented range.
    InvalidHyperparameter,
    /// The gradient holds NaN or +-Inf and a finite check was requested: nothing was written.
    NonFinite,
    /// A panic was caught at the C boundary (a bug in diagprec: please report it).
    Panic,
    /// An argument other than a length or hyperparameter is invalid (a mode, a thread count).
    InvalidArgument,
    /// A workspace or thread pool could not be allocated.
    Allocation,
}

/// An error with its kind and a readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The readable reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn length(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Length, message)
    }

    pub(crate) fn hyperparameter(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidHyperparameter, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The gradient held NaN or Inf: the step was skipped and nothing was written.
pub(crate) fn non_finite_error() -> Error {
    Error::new(
        ErrorKind::NonFinite,
        "the gradient holds NaN or Inf (after unscaling): step skipped, nothing written",
    )
}

/// Checks that every named length equals `expected`.
pub(crate) fn check_lengths(expected: usize, named: &[(&str, usize)]) -> Result<()> {
    for &(name, len) in named {
        if len != expected {
            return Err(Error::length(format!(
                "{name} has {len} elements, expected {expected}"
            )));
        }
    }
    Ok(())
}

/// Checks that a 1-based step count is not 0.
pub(crate) fn check_step(step: u64) -> Result<()> {
    if step == 0 {
        return Err(Error::hyperparameter("step = 0: steps are counted from 1"));
    }
    Ok(())
}

/// Checks that a batch has at least one sample (its average is defined).
pub(crate) fn check_samples(n_samples: usize) -> Result<()> {
    if n_samples == 0 {
        return Err(Error::length(
            "n_samples = 0: the batch average is undefined",
        ));
    }
    Ok(())
}

/// Checks a running-average decay `beta` in `[0, 1)`.
pub(crate) fn check_beta(beta: f64) -> Result<()> {
    check_half_open("beta", beta, 0.0, 1.0)
}

/// Checks `low <= value < high` (with `value` finite).
pub(crate) fn check_half_open(name: &str, value: f64, low: f64, high: f64) -> Result<()> {
    if value.is_finite() && value >= low && value < high {
        Ok(())
    } else {
        Err(Error::hyperparameter(format!(
            "{name} = {value} is outside [{low}, {high})"
        )))
    }
}

/// Checks `value > 0` and finite.
pub(crate) fn check_positive(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::hyperparameter(format!(
            "{name} = {value} must be finite and > 0"
        )))
    }
}

/// Checks `value >= 0` and finite.
pub(crate) fn check_non_negative(name: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::hyperparameter(format!(
            "{name} = {value} must be finite and >= 0"
        )))
    }
}

/// Checks that `value`, rounded to the f32 a kernel computes with, is finite (and nonzero when
/// `nonzero`, for a value that divides or must not vanish): a finite f64 such as `1e39` or
/// `1e-46` that overflows or underflows f32 is [`ErrorKind::InvalidHyperparameter`].
pub(crate) fn check_f32(name: &str, value: f64, nonzero: bool) -> Result<()> {
    let rounded = value as f32;
    if !rounded.is_finite() {
        return Err(Error::hyperparameter(format!(
            "{name} = {value:e} overflows f32 (the kernels compute in f32; at most {:e})",
            f32::MAX
        )));
    }
    if nonzero && rounded == 0.0 {
        return Err(Error::hyperparameter(format!(
            "{name} = {value:e} rounds to 0 in f32 (the kernels compute in f32; at least {:e})",
            f32::from_bits(1)
        )));
    }
    Ok(())
}
