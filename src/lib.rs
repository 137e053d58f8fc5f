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
//! ## Beyond one buffer
//!
//! - [`Adopt`]: many buffers, parameter groups with their own [`Hyper`],
//!   lazily created per-parameter state, one validated step over all of
//!   them (split across the rayon pool), and [`checkpoint`]s.
//! - [`adopt_step_scaled`] with [`Scaling`]: mixed-precision unscaling fused
//!   into the kernel, and `found_inf` steps that change nothing;
//!   [`grads_nonfinite`] is the scan.
//! - The peers' variants in [`Hyper`]: [`DecayScaling`] and Nesterov.
//! - Sharding: stepping disjoint sub-ranges separately is bit-identical to
//!   stepping the whole buffer.
//! - [`sparse`]: row-sparse steps of embedding tables ([`adopt_step_rows`]),
//!   as PyTorch's `SparseAdam`: only the listed rows move, each with its own
//!   step count, duplicates summed.
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
//!   f32 arithmetic, optionally with an f32 master copy, `bf16` optimizer
//!   state and stochastic rounding.
//! - `capi`: [`capi`], the C ABI (`include/adopt.h`): single steps over
//!   f32 and bf16 buffers and the optimizer object, for C, C++ and Python's
//!   `ctypes` (implies `std` and `half`).
//! - `complex`: [`complex`] steps `num_complex::Complex32` parameters as
//!   interleaved real lanes, zero-copy, as the reference's `view_as_real`.
//! - `serde`: `Serialize`/`Deserialize` for [`Hyper`], [`Clip`],
//!   [`DecayScaling`] and [`State`].
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

#[cfg(feature = "capi")]
pub mod capi;
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
#[cfg(feature = "half")]
pub mod precision;
pub mod reference;
#[cfg(feature = "alloc")]
pub mod sparse;
mod state;

pub use error::{Buffer, CheckpointError, Error, Float, HyperParam};
pub use hyper::{
    Caution, CautionMask, Clip, Decay, DecayScaling, Hyper, Scaling, StepConstants, WeightDecay,
};
pub use kernel::Kernel;
#[cfg(feature = "alloc")]
pub use optimizer::{Adopt, GroupId, Item, ParamId};
pub use parallel::PARALLEL_THRESHOLD;
#[cfg(feature = "alloc")]
pub use sparse::{SparseOptions, SparseState, adopt_step_rows, adopt_step_rows_ext};
#[cfg(feature = "alloc")]
pub use state::State;
pub use state::StateView;

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Checks everything a step needs, before anything is written: buffer
/// lengths (of params, grads, `m`, `v`), the step count and the
/// hyperparameters at this step.
pub(crate) fn prepare(
    params: usize,
    grads: usize,
    exp_avg: usize,
    exp_avg_sq: usize,
    step: u64,
    hyper: &Hyper,
) -> Result<StepConstants, Error> {
    let lengths = [
        (Buffer::Grads, grads),
        (Buffer::ExpAvg, exp_avg),
        (Buffer::ExpAvgSq, exp_avg_sq),
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
    if step == u64::MAX {
        return Err(Error::StepOverflow);
    }
    hyper.constants(step)
}

/// Everything a step can be told besides buffers and hyperparameters.
///
/// ```
/// use adopt::{adopt_step_ext, Hyper, Kernel, Scaling, StateView, StepOptions};
/// let options = StepOptions { kernel: Some(Kernel::Portable), ..StepOptions::default() };
/// let (mut p, mut m, mut v, mut step) = ([1.0_f32; 3], [0.0; 3], [0.0; 3], 0);
/// adopt_step_ext(&mut p, &[0.5; 3], &mut StateView::new(&mut m, &mut v, &mut step), &Hyper::default(), &options)?;
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepOptions {
    /// The kernel; `None` for [`Kernel::try_active`].
    pub kernel: Option<Kernel>,
    /// Mixed-precision scaling.
    pub scaling: Scaling,
    /// For cautious masking ([`Hyper::caution`]) of a shard: the mask count
    /// of the whole tensor (the sum of every shard's [`caution_mask`]).
    /// `None`: the step counts its own buffer.
    pub caution_mask: Option<CautionMask>,
}

/// The kernel a step asked for, if available, else the active one
/// ([`Kernel::try_active`]).
pub(crate) fn resolve_kernel(kernel: Option<Kernel>) -> Result<Kernel, Error> {
    match kernel {
        Some(kernel) if !kernel.is_available() => Err(Error::KernelUnavailable(kernel)),
        Some(kernel) => Ok(kernel),
        None => Kernel::try_active(),
    }
}

/// [`prepare`] with every option: the kernel to run, and `None` constants
/// when `found_inf` skips the step (after validating everything, so bad
/// input still errors).
pub(crate) fn prepare_options(
    params: usize,
    grads: usize,
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(Kernel, Option<StepConstants>), Error> {
    let kernel = resolve_kernel(options.kernel)?;
    let k = prepare_scaled(params, grads, state, hyper, options.scaling)?;
    if let Some(mask) = options.caution_mask
        && (mask.count > mask.lanes || mask.lanes < params as u64)
    {
        return Err(Error::InvalidCautionMask {
            count: mask.count,
            lanes: mask.lanes,
            shard: params as u64,
        });
    }
    Ok((kernel, k))
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
    let mut k = prepare(
        params,
        grads,
        state.exp_avg.len(),
        state.exp_avg_sq.len(),
        *state.step,
        hyper,
    )?;
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
    adopt_step_ext(params, grads, state, hyper, &StepOptions::default())
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
    adopt_step_ext(
        params,
        grads,
        state,
        hyper,
        &StepOptions {
            kernel: Some(kernel),
            scaling,
            caution_mask: None,
        },
    )
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
    adopt_step_ext(
        params,
        grads,
        state,
        hyper,
        &StepOptions {
            scaling,
            ..StepOptions::default()
        },
    )
}

/// The step with every [`StepOptions`]: kernel, scaling and, for cautious
/// masking of a shard, the whole tensor's [`CautionMask`].
///
/// A cautious step after the first makes two passes: a read-only count of
/// the lanes where the update agrees with the gradient (skipped when
/// `options.caution_mask` supplies the count), then the update.
pub fn adopt_step_ext(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(), Error> {
    let (kernel, Some(mut k)) = prepare_options(params.len(), grads.len(), state, hyper, options)?
    else {
        return Ok(());
    };
    if hyper.caution != Caution::Off && k.step > 0 {
        let mask = options.caution_mask.unwrap_or_else(|| CautionMask {
            count: parallel::count(kernel, params, grads, state.exp_avg, state.exp_avg_sq, &k),
            lanes: params.len() as u64,
        });
        k.caution_scale = Some(mask.scale(hyper.caution));
    }
    parallel::run(kernel, params, grads, state.exp_avg, state.exp_avg_sq, &k);
    *state.step += 1;
    Ok(())
}

/// This buffer's share of the caution mask at its next step (cautious
/// masking, [`Hyper::caution`]): for engines that step one tensor in
/// shards. Sum the shards' masks and pass the total as
/// [`StepOptions::caution_mask`] to every shard's step; the result is then
/// bit-identical to stepping the whole tensor. Reads only; without cautious
/// masking (or on a first step) the count is 0.
///
/// ```
/// use adopt::{adopt_step_ext, caution_mask, Caution, Hyper, State, StepOptions};
/// let hyper = Hyper { caution: Caution::Timm, ..Hyper::default() };
/// let (mut p, g) = (vec![1.0_f32; 8], vec![0.5_f32; 8]);
/// let mut state = State::new(8);
/// adopt_step_ext(&mut p, &g, &mut state.view_mut(), &hyper, &StepOptions::default())?;
/// // Two shards of 4 lanes: count each, sum, then step each with the total.
/// let (p0, p1) = p.split_at_mut(4);
/// let mut s0 = State::from_parts(state.exp_avg()[..4].to_vec(), state.exp_avg_sq()[..4].to_vec(), 1);
/// let mut s1 = State::from_parts(state.exp_avg()[4..].to_vec(), state.exp_avg_sq()[4..].to_vec(), 1);
/// let total = caution_mask(p0, &g[..4], &s0.view_mut(), &hyper, &StepOptions::default())?
///     + caution_mask(p1, &g[4..], &s1.view_mut(), &hyper, &StepOptions::default())?;
/// let options = StepOptions { caution_mask: Some(total), ..StepOptions::default() };
/// adopt_step_ext(p0, &g[..4], &mut s0.view_mut(), &hyper, &options)?;
/// adopt_step_ext(p1, &g[4..], &mut s1.view_mut(), &hyper, &options)?;
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn caution_mask(
    params: &[f32],
    grads: &[f32],
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<CautionMask, Error> {
    let count = match prepare_options(params.len(), grads.len(), state, hyper, options)? {
        (kernel, Some(k)) if k.step > 0 && hyper.caution != Caution::Off => {
            parallel::count(kernel, params, grads, state.exp_avg, state.exp_avg_sq, &k)
        }
        _ => 0,
    };
    Ok(CautionMask {
        count,
        lanes: params.len() as u64,
    })
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
