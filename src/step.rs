//! The dense API: one ADOPT step over one f32 buffer.
//!
//! Two functions cover it: [`adopt_step`] over a [`State`](crate::State) or
//! a [`StateView`], and [`adopt_step_ext`] with [`StepOptions`] (a chosen
//! kernel, mixed-precision scaling, a shard's caution mask). Many buffers,
//! other storage types and row-sparse tables go through
//! [`Adopt`](crate::Adopt).

use crate::error::Error;
use crate::hyper::{CautionMask, Hyper, Scaling, StepConstants, StepOptions};
use crate::kernel::Kernel;
use crate::parallel;
use crate::prepare;
use crate::state::StateView;

/// Optimizer state a dense step can update: an owned
/// [`State`](crate::State) (needs `alloc`) or a [`StateView`] over the
/// caller's storage.
pub trait AsStateView {
    /// The state as a view of `m`, `v` and the step count.
    fn as_state_view(&mut self) -> StateView<'_>;
}

impl AsStateView for StateView<'_> {
    fn as_state_view(&mut self) -> StateView<'_> {
        self.reborrow()
    }
}

#[cfg(feature = "alloc")]
impl AsStateView for crate::state::State {
    fn as_state_view(&mut self) -> StateView<'_> {
        self.view_mut()
    }
}

/// Validates a dense step completely: the kernel to run it with, and its
/// constants (`None` when `found_inf` skips it).
fn prepare_dense(
    params: usize,
    grads: usize,
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(Kernel, Option<StepConstants>), Error> {
    let kernel = prepare::kernel(options.kernel)?;
    prepare::lengths(params, grads, state.exp_avg.len(), state.exp_avg_sq.len())?;
    let k = prepare::constants(*state.step, hyper, options.scaling)?;
    prepare::caution_mask(options.caution_mask, params)?;
    Ok((kernel, (!options.scaling.found_inf).then_some(k)))
}

/// One ADOPT step over `params` with `grads`, updating `state` (a
/// [`State`](crate::State) or a [`StateView`]).
///
/// All four buffers (`params`, `grads`, the state's `exp_avg` and
/// `exp_avg_sq`) must have the same length. On error nothing is written
/// and the step count does not advance.
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
pub fn adopt_step<S: AsStateView + ?Sized>(
    params: &mut [f32],
    grads: &[f32],
    state: &mut S,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_ext(params, grads, state, hyper, &StepOptions::default())
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

/// The step with every [`StepOptions`]: kernel, scaling and, for cautious
/// masking of a shard, the whole tensor's [`CautionMask`]. Every kernel
/// gives bit-identical results.
///
/// A cautious step after the first makes two passes: a read-only count of
/// the lanes that pass the mask (skipped when `options.caution_mask`
/// supplies the count), then the update.
///
/// ```
/// use adopt::{adopt_step_ext, Hyper, Kernel, Scaling, State, StepOptions};
/// for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
///     let mut params = [1.0_f32; 5];
///     let mut state = State::new(5);
///     let options = StepOptions { kernel: Some(kernel), ..StepOptions::default() };
///     adopt_step_ext(&mut params, &[0.5; 5], &mut state, &Hyper::default(), &options)?;
/// }
/// # Ok::<(), adopt::Error>(())
/// ```
///
/// Returns [`Error::KernelUnavailable`] if this CPU cannot run the kernel
/// asked for.
pub fn adopt_step_ext<S: AsStateView + ?Sized>(
    params: &mut [f32],
    grads: &[f32],
    state: &mut S,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(), Error> {
    step_dense(params, grads, &mut state.as_state_view(), hyper, options)
}

/// The body of [`adopt_step_ext`], not generic: compiled once, in this
/// crate, rather than in every crate that calls the generic front ends
/// (each instantiation of a generic step at opt-level 3 recompiled every
/// kernel).
fn step_dense(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(), Error> {
    let (kernel, Some(mut k)) = prepare_dense(params.len(), grads.len(), state, hyper, options)?
    else {
        return Ok(());
    };
    prepare::caution(&mut k, params.len(), options.caution_mask, |k| {
        parallel::count(kernel, params, grads, state.exp_avg, state.exp_avg_sq, k)
    });
    parallel::run(kernel, params, grads, state.exp_avg, state.exp_avg_sq, &k);
    *state.step += 1;
    Ok(())
}

/// The step with a chosen [`Kernel`] and a [`Scaling`].
#[deprecated(note = "use adopt_step_ext with StepOptions { kernel, scaling, .. }")]
pub fn adopt_step_with(
    kernel: Kernel,
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    let options = StepOptions {
        kernel: Some(kernel),
        scaling,
        caution_mask: None,
    };
    adopt_step_ext(params, grads, state, hyper, &options)
}

/// [`adopt_step`] with mixed-precision [`Scaling`].
#[cfg(feature = "alloc")]
#[deprecated(note = "use adopt_step_ext with StepOptions { scaling, .. }")]
pub fn adopt_step_scaled(
    params: &mut [f32],
    grads: &[f32],
    state: &mut crate::state::State,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    let options = StepOptions {
        scaling,
        ..StepOptions::default()
    };
    adopt_step_ext(params, grads, state, hyper, &options)
}

/// [`adopt_step_view`] with mixed-precision [`Scaling`].
#[deprecated(note = "use adopt_step_ext with StepOptions { scaling, .. }")]
pub fn adopt_step_scaled_view(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: Scaling,
) -> Result<(), Error> {
    let options = StepOptions {
        scaling,
        ..StepOptions::default()
    };
    adopt_step_ext(params, grads, state, hyper, &options)
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
/// adopt_step_ext(&mut p, &g, &mut state, &hyper, &StepOptions::default())?;
/// // Two shards of 4 lanes: count each, sum, then step each with the total.
/// let (p0, p1) = p.split_at_mut(4);
/// let mut s0 = State::from_parts(state.exp_avg()[..4].to_vec(), state.exp_avg_sq()[..4].to_vec(), 1);
/// let mut s1 = State::from_parts(state.exp_avg()[4..].to_vec(), state.exp_avg_sq()[4..].to_vec(), 1);
/// let total = caution_mask(p0, &g[..4], &s0.view_mut(), &hyper, &StepOptions::default())?
///     + caution_mask(p1, &g[4..], &s1.view_mut(), &hyper, &StepOptions::default())?;
/// let options = StepOptions { caution_mask: Some(total), ..StepOptions::default() };
/// adopt_step_ext(p0, &g[..4], &mut s0, &hyper, &options)?;
/// adopt_step_ext(p1, &g[4..], &mut s1, &hyper, &options)?;
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn caution_mask(
    params: &[f32],
    grads: &[f32],
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<CautionMask, Error> {
    let mut count = 0;
    if let (kernel, Some(mut k)) = prepare_dense(params.len(), grads.len(), state, hyper, options)?
    {
        prepare::caution(&mut k, params.len(), None, |k| {
            count = parallel::count(kernel, params, grads, state.exp_avg, state.exp_avg_sq, k);
            count
        });
    }
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
