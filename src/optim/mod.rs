//! Stateful optimizers built from the kernels: they own their moment buffers and step count.

mod adam;
mod rotated;

pub use rotated::{RotatedAdam, Soap, SoapConfig};
mod gn;

pub use adam::Adam;
pub use gn::{GaussNewton, GaussNewtonConfig};
