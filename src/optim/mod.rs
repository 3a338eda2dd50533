//! Stateful optimizers built from the kernels: they own their moment buffers and step count.

mod adam;
mod gauss_newton;

pub use adam::Adam;
pub use gauss_newton::{GaussNewton, GaussNewtonConfig};
