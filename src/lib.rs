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
//!          m = m + (1-β1)(ĝ - m);   p = p - lr·m;   v = β2·v + (1-β2)·g·g
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
//! ## Errors
//!
//! Bad input gets a typed [`Error`], and all validation happens before the
//! first write: on error, params, state and step count are unchanged.
//!
//! ## Features
//!
//! - `std` (default): implies `alloc`; enables `std::error::Error` through
//!   `core::error::Error` and `wide`'s std support.
//! - `alloc` (default through `std`): the owned [`State`]. Without it, use
//!   [`StateView`] over your own storage; the core step needs neither std nor
//!   an allocator.
//! - `rayon` (default): buffers of at least [`PARALLEL_THRESHOLD`] lanes are
//!   split into chunks across the current rayon pool, bit-identical to a
//!   serial step. The pool is rayon's global pool (size it with
//!   `RAYON_NUM_THREADS` or `rayon::ThreadPoolBuilder::build_global`), or the
//!   pool whose `install` the step runs inside; a one-thread pool keeps every
//!   step serial.
//! - `complex`: [`complex`] steps `num_complex::Complex32` parameters as
//!   interleaved real lanes, zero-copy, as the reference's `view_as_real`.
//!
//! ## Kernels
//!
//! The step runs on the fastest [`Kernel`] the CPU supports, detected once at
//! run time in a default build: AVX-512F or AVX2+FMA on x86-64, NEON on
//! aarch64, and a portable `wide` kernel otherwise. [`Kernel::active`] says
//! which (for logs); [`Kernel::force`] or `ADOPT_KERNEL=portable` pins one.

#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "alloc")]
pub mod checkpoint;
#[cfg(feature = "complex")]
pub mod complex;
mod error;
mod hyper;
mod kernel;
#[cfg(feature = "alloc")]
mod optimizer;
mod parallel;
pub mod reference;
mod state;

pub use error::{Buffer, CheckpointError, Error, HyperParam};
pub use hyper::{Clip, Decay, DecayScaling, Hyper, Scaling, StepConstants};
pub use kernel::Kernel;
#[cfg(feature = "alloc")]
pub use optimizer::{Adopt, GroupId, Item, ParamId};
pub use parallel::PARALLEL_THRESHOLD;
#[cfg(feature = "alloc")]
pub use state::State;
pub use state::StateView;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Checks everything a step needs, before anything is written: buffer
/// lengths, the step count and the hyperparameters at this step.
pub(crate) fn prepare(
    params: usize,
    grads: usize,
    state: &StateView<'_>,
    hyper: &Hyper,
) -> Result<StepConstants, Error> {
    let lengths = [
        (Buffer::Grads, grads),
        (Buffer::ExpAvg, state.exp_avg.len()),
        (Buffer::ExpAvgSq, state.exp_avg_sq.len()),
    ];
    for (buffer, got) in lengths {
        if got != params {
            return Err(Error::LengthMismatch {
                buffer,
                expected: params,
                got,
            });
        }
    }
    if *state.step == u64::MAX {
        return Err(Error::StepOverflow);
    }
    hyper.constants(*state.step)
}

/// [`prepare`] with mixed-precision scaling: `None` when `found_inf` skips
/// the step (after validating everything, so bad input still errors).
pub(crate) fn prepare_scaled(
    params: usize,
    grads: usize,
    state: &StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<Option<StepConstants>, Error> {
    let mut k = prepare(params, grads, state, hyper)?;
    scaling.validate()?;
    k.inv_scale = scaling.inv_scale;
    Ok((!scaling.found_inf).then_some(k))
}

/// One ADOPT step over `params` with `grads`, updating `state`.
///
/// All four buffers (`params`, `grads`, `state.exp_avg()`,
/// `state.exp_avg_sq()`) must have the same length. On error nothing is
/// written and the step count does not advance.
///
/// ```
/// use adopt::{adopt_step, Hyper, State};
/// let mut params = vec![1.0_f32, 2.0, 3.0];
/// let mut state = State::new(3);
/// let hyper = Hyper { lr: 0.1, ..Hyper::default() };
/// adopt_step(&mut params, &[1.0, 1.0, 1.0], &mut state, &hyper)?; // records v
/// adopt_step(&mut params, &[1.0, 1.0, 1.0], &mut state, &hyper)?; // moves
/// assert!(params[0] < 1.0);
/// assert_eq!(state.step(), 2);
/// # Ok::<(), adopt::Error>(())
/// ```
#[cfg(feature = "alloc")]
pub fn adopt_step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut State,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_view(params, grads, &mut state.view_mut(), hyper)
}

/// [`adopt_step`] over a borrowed [`StateView`]: needs no allocator.
///
/// ```
/// use adopt::{adopt_step_view, Hyper, StateView};
/// let mut params = [1.0_f32; 3];
/// let (mut m, mut v, mut step) = ([0.0; 3], [0.0; 3], 0);
/// let mut state = StateView::new(&mut m, &mut v, &mut step);
/// adopt_step_view(&mut params, &[0.5; 3], &mut state, &adopt::Hyper::default())?;
/// assert_eq!(state.exp_avg_sq(), &[0.25; 3]);
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn adopt_step_view(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
) -> Result<(), Error> {
    step_impl(
        Kernel::active(),
        params,
        grads,
        state,
        hyper,
        Scaling::default(),
    )
}

/// The step with everything explicit: a chosen [`Kernel`] instead of the
/// active one (for tests that compare kernels, and benchmarks) and a
/// [`Scaling`] (`Scaling::default()` for none). Every kernel gives
/// bit-identical results.
///
/// ```
/// use adopt::{adopt_step_with, Hyper, Kernel, Scaling, StateView};
/// for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
///     let mut params = [1.0_f32; 5];
///     let (mut m, mut v, mut step) = ([0.0; 5], [0.0; 5], 0);
///     let mut state = StateView::new(&mut m, &mut v, &mut step);
///     adopt_step_with(kernel, &mut params, &[0.5; 5], &mut state, &Hyper::default(), Scaling::default())?;
/// }
/// # Ok::<(), adopt::Error>(())
/// ```
///
/// Returns [`Error::KernelUnavailable`] if this CPU cannot run `kernel`.
pub fn adopt_step_with(
    kernel: Kernel,
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    step_impl(kernel, params, grads, state, hyper, scaling)
}

/// [`adopt_step`] with mixed-precision [`Scaling`]: `inv_scale` is fused
/// into the kernel's first operation on each gradient lane, and `found_inf`
/// skips the step, changing nothing (inputs are still validated).
#[cfg(feature = "alloc")]
pub fn adopt_step_scaled(
    params: &mut [f32],
    grads: &[f32],
    state: &mut State,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    adopt_step_scaled_view(params, grads, &mut state.view_mut(), hyper, scaling)
}

/// [`adopt_step_scaled`] over a borrowed [`StateView`].
pub fn adopt_step_scaled_view(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    step_impl(Kernel::active(), params, grads, state, hyper, scaling)
}

fn step_impl(
    kernel: Kernel,
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    if !kernel.is_available() {
        return Err(Error::KernelUnavailable(kernel));
    }
    let Some(k) = prepare_scaled(params.len(), grads.len(), state, hyper, scaling)? else {
        return Ok(());
    };
    parallel::run(kernel, params, grads, state.exp_avg, state.exp_avg_sq, &k);
    *state.step += 1;
    Ok(())
}

/// Whether any gradient lane is NaN or ±inf: the check PyTorch's
/// `GradScaler.unscale_` makes before a step, to set
/// [`Scaling::found_inf`]. One read of the buffer, split across the rayon
/// pool for large buffers.
///
/// ```
/// assert!(!adopt::grads_nonfinite(&[1.0, -2.0, 3e38]));
/// assert!(adopt::grads_nonfinite(&[1.0, f32::NAN]));
/// assert!(adopt::grads_nonfinite(&[f32::NEG_INFINITY]));
/// ```
pub fn grads_nonfinite(grads: &[f32]) -> bool {
    parallel::any_nonfinite(grads)
}
