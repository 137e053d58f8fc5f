//! # adopt
//!
//! A pure-Rust, framework-agnostic core of the ADOPT optimizer (Taniguchi et
//! al., *ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate*,
//! NeurIPS 2024) over raw f32 slices: SIMD kernels that are bit-identical to
//! a readable scalar [`reference`](mod@reference), which itself matches the published
//! PyTorch implementation (`torch-adopt`).
//!
//! ADOPT normalises the gradient by the *previous* second moment, clips it,
//! then applies momentum. Per lane, with `t` the number of steps already
//! taken:
//!
//! ```text
//! t == 0:  v = g·g                                    (nothing else moves)
//! t >= 1:  ĝ = clamp(g / max(sqrt(v), eps), -c(t), c(t))
//!          m = lerp(m, ĝ, 1-β1);   p = p - lr·m;   v = β2·v + (1-β2)·g·g
//! ```
//!
//! ## Quickstart
//!
//! ```
//! use adopt::{adopt_step, Hyper, State};
//!
//! // Minimise f(p) = Σ (p - 3)² from p = 0.
//! let hyper = Hyper { lr: 0.1, ..Hyper::default() };
//! let mut params = vec![0.0_f32; 16];
//! let mut state = State::new(params.len());
//! for _ in 0..200 {
//!     let grads: Vec<f32> = params.iter().map(|p| 2.0 * (p - 3.0)).collect();
//!     adopt_step(&mut params, &grads, &mut state, &hyper)?;
//! }
//! assert!(params.iter().all(|p| (p - 3.0).abs() < 0.1));
//! # Ok::<(), adopt::Error>(())
//! ```
//!
//! ## Exactness
//!
//! Hyperparameters are f64, like the reference's Python floats; every step
//! derives its f32 constants ([`StepConstants`]) in f64 and rounds each once.
//! Square roots are correctly rounded, the multiply-adds the reference fuses
//! are fused, and NaN propagates through the `max` and the clamp exactly as in
//! PyTorch. Every kernel equals [`reference`](mod@reference) bit for bit on every input.
//!
//! ## Beyond one buffer
//!
//! - [`Adopt`]: many parameters of any [`Layout`] (dense f32; bf16/f16
//!   parameters and gradients, with or without an f32 master copy; f32,
//!   bf16 or f16 moments; complex lanes; row-sparse embedding tables),
//!   parameter groups with their own [`Hyper`], lazily created
//!   per-parameter state, one validated step over any mix (split across
//!   the rayon pool), and [`checkpoint`]s of all of it.
//! - [`StepOptions::scaling`] with [`Scaling`] (and [`Adopt::step_scaled`]):
//!   mixed-precision unscaling fused into the kernel, and `found_inf` steps
//!   that change nothing; [`grads_nonfinite`] is the scan.
//! - The peers' variants in [`Hyper`]: [`WeightDecay`] with
//!   [`DecayScaling`] and first-step decay, [`Caution`] (timm's and
//!   pytorch-optimizer's rules), Nesterov, the clip schedule's offset.
//! - Sharding: stepping disjoint sub-ranges separately is bit-identical to
//!   stepping the whole buffer ([`caution_mask`] for cautious masking).
//! - [`sparse`]: row-sparse steps of embedding tables ([`adopt_step_rows`]),
//!   as PyTorch's `SparseAdam`: only the listed rows move, each with its own
//!   step count, duplicates summed.
//!
//! ## Layers
//!
//! Dependencies run one way, from the edges down to the specification; no
//! module imports one above it:
//!
//! ```text
//! capi/                       the C ABI: calls the front ends, never the kernels
//! optimizer/                  Adopt: registry, layouts, validation, schedule, checkpoints
//! step.rs sparse.rs           front ends over one buffer (and complex.rs,
//! precision.rs                precision.rs for half-precision storage)
//! prepare.rs                  the one validate-and-derive pipeline they all call
//! parallel.rs                 the only user of rayon: chunking across the pool
//! kernel/                     the SIMD kernels: one generic body, one file per ISA
//! hyper.rs state.rs lanes.rs  vocabulary: hyperparameters and their f32 constants,
//! error.rs ids.rs             state, storage types, errors, ids and kernel names
//! reference.rs                the scalar specification; calls nothing fast
//! ```
//!
//! ## Errors
//!
//! Bad input gets a typed [`Error`], and all validation happens before the
//! first write: on error, params, state and step count are unchanged.
//!
//! ## Features
//!
//! - `std` (default): implies `alloc`; enables `std::error::Error` through
//!   `core::error::Error` and `wide`'s std support.
//! - `alloc` (default through `std`): the owned [`State`], [`Adopt`] and
//!   the row-sparse [`sparse`] step. Without it, use
//!   [`StateView`] over your own storage; the core step needs neither std nor
//!   an allocator.
//! - `rayon` (default): buffers of at least [`PARALLEL_THRESHOLD`] lanes are
//!   split into chunks across the current rayon pool, bit-identical to a
//!   serial step. The pool is rayon's global pool (size it with
//!   `RAYON_NUM_THREADS` or `rayon::ThreadPoolBuilder::build_global`), or the
//!   pool whose `install` the step runs inside; a one-thread pool keeps every
//!   step serial.
//! - `half`: [`precision`] steps `bf16`/`f16` parameters and gradients with
//!   f32 arithmetic, optionally with an f32 master copy, half-precision
//!   moments (`v` in bf16 only) and stochastic rounding; [`Adopt`] layouts
//!   of those storage types.
//! - `capi`: [`capi`], the C ABI (`include/adopt.h`): single steps over
//!   f32 and bf16 buffers and the optimizer object with every layout, for
//!   C, C++ and Python's `ctypes` (implies `std` and `half`).
//! - `complex`: [`complex`] steps `num_complex::Complex32` parameters as
//!   interleaved real lanes, zero-copy, as the reference's `view_as_real`.
//! - `serde`: `Serialize`/`Deserialize` for [`Hyper`] (and its
//!   [`Clip`], [`WeightDecay`], [`DecayScaling`], [`Caution`]) and
//!   [`State`].
//!
//! ## Kernels
//!
//! The step runs on the fastest [`Kernel`] the CPU supports, detected once at
//! run time in a default build: AVX-512F or AVX2+FMA on x86-64, NEON on
//! aarch64, and a portable `wide` kernel otherwise. [`Kernel::active`] says
//! which (for logs); [`Kernel::force`], `ADOPT_KERNEL=portable` or
//! [`Adopt::set_kernel`] (one optimizer) pins one; [`Kernel::try_active`]
//! reports an `ADOPT_KERNEL` that cannot be followed.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "capi")]
pub mod capi;
#[cfg(feature = "complex")]
pub mod complex;
mod error;
mod hyper;
mod ids;
mod kernel;
mod lanes;
#[cfg(feature = "alloc")]
mod optimizer;
mod parallel;
#[cfg(feature = "half")]
pub mod precision;
mod prepare;
pub mod reference;
#[cfg(feature = "alloc")]
pub mod sparse;
mod state;
mod step;

#[cfg(feature = "alloc")]
pub use error::CheckpointError;
pub use error::{Buffer, Error, Float, HyperParam};
pub use hyper::{
    Caution, CautionMask, Clip, Decay, DecayScaling, Hyper, Scaling, StepConstants, StepOptions,
    WeightDecay,
};
pub use kernel::Kernel;
pub use lanes::{Dtype, Lanes, LanesMut, Rounding};
#[cfg(feature = "alloc")]
pub use optimizer::checkpoint;
#[cfg(feature = "alloc")]
pub use optimizer::{
    Adopt, Entry, Grads, GroupId, Item, Layout, ParamId, ParamState, ParamStateMut, Shape,
    StepItem, Steps, StepsMut,
};
pub use parallel::PARALLEL_THRESHOLD;
#[cfg(feature = "alloc")]
pub use sparse::{SparseOptions, SparseState, adopt_step_rows, adopt_step_rows_ext};
#[cfg(feature = "alloc")]
pub use state::State;
pub use state::StateView;
#[allow(deprecated)]
#[cfg(feature = "alloc")]
pub use step::adopt_step_scaled;
#[allow(deprecated)]
pub use step::{
    AsStateView, adopt_step, adopt_step_ext, adopt_step_view, caution_mask, grads_nonfinite,
};
#[allow(deprecated)]
pub use step::{adopt_step_scaled_view, adopt_step_with};

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
