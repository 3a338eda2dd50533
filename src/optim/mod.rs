//! Stateful optimizers built from the kernels: they own their moment buffers and step count.

mod adam;
mod rotated;

pub use rotated::{
    rotated_adam_step_with, rotated_gn_step_with, rotated_workspace_len, RotatedAdam, Soap,
    SoapConfig,
};
mod gn;

pub use adam::Adam;
pub use gn::{GaussNewton, GaussNewtonConfig};
