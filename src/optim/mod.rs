//! Stateful optimizers built from the kernels: they own their moment buffers and step count.

mod adam;

pub use adam::Adam;
