//! The SIMD kernels, in layers that run one way:
//!
//! - [`select`]: kernel names, detection, the process-wide choice, and the
//!   tokens that prove an instruction set is present;
//! - [`generic`]: the vector trait and the one generic step body;
//! - `x86_64`, `aarch64`, `portable`: the vector types of each instruction
//!   set and their entry points (they import `generic` only);
//! - [`dispatch`]: one match per operation, from a kernel's token to the
//!   instruction set's entry point.
//!
//! Every instantiation performs exactly the operations of
//! [`reference::update_lane`](crate::reference::update_lane), in the same
//! order, with the same roundings, so each is bit-identical to it.

#[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
mod aarch64;
mod dispatch;
pub(crate) mod generic;
mod portable;
mod select;
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86_64;

#[cfg(feature = "alloc")]
pub(crate) use generic::Job;
pub use select::Kernel;
