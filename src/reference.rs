//! The scalar specification of an ADOPT step, written to be read.
//!
//! Every kernel of this crate equals this code bit for bit on every input
//! (any NaN matching any NaN), and this code matches the published reference
//! implementation (`torch-adopt`) within the tolerance stated in
//! `tests/golden/README.md`. Use it to property-test an integration:
//!
//! ```
//! use adopt::{adopt_step, reference, Hyper, State};
//! let hyper = Hyper { lr: 1e-2, ..Hyper::default() };
//! let grads = [0.3_f32, -2.0, f32::NAN, 1e-30];
//! let (mut fast, mut slow) = ([1.0_f32; 4], [1.0_f32; 4]);
//! let (mut fast_state, mut slow_state) = (State::new(4), State::new(4));
//! for _ in 0..5 {
//!     adopt_step(&mut fast, &grads, &mut fast_state, &hyper)?;
//!     reference::adopt_step(&mut slow, &grads, &mut slow_state, &hyper)?;
//! }
//! let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
//! assert!(fast.iter().zip(&slow).all(|(&a, &b)| same(a, b)));
//! # Ok::<(), adopt::Error>(())
//! ```
//!
//! # The update, per f32 lane
//!
//! With `t` the number of steps already taken and the f32 constants of
//! [`StepConstants`] (each derived in f64 and rounded once):
//!
//! ```text
//! grad = grad · inv_scale                       (only with a Scaling)
//! g = maximize ? -grad : grad
//! L2 decay:        g = fma(wd, p, g)
//! decoupled:       p = fma(-(lr·wd), p, p)       (or -wd, -(lr²/max_lr)·wd;
//!                                               t >= 1, or first_step)
//! t == 0:          v = g·g                      (m does not move)
//! t >= 1:
//!   ĝ = g / max(sqrt(v), eps)                  (NaN stays NaN)
//!   ĝ = clamp(ĝ, -c(t), c(t))                  (NaN stays NaN)
//!   m = lerp(m, ĝ, 1-β1)                       (torch's lerp, two forms:)
//!       |w| <  0.5:  fma(w, ĝ - m, m)          (w = 1-β1 as f32)
//!       |w| >= 0.5:  fma(w - 1, ĝ - m, ĝ)      (β1 <= 0.5; w - 1 in f32)
//!   u = nesterov ? fma(β1, m, (1-β1)·ĝ) : m    (optax's nesterov)
//!   caution:       u = u · (u·x > 0 ? s : 0)     (x = g for timm, ĝ for
//!                                               pytorch-optimizer;
//!                                               s = CautionMask::scale)
//!   p = fma(-lr, u, p)
//!   v = fma((1-β2)·g, g, β2·v)                 (torch's addcmul)
//! ```
//!
//! `sqrt` and `fma` are correctly rounded (the pure-Rust `libm`, so this
//! module is identical with and without `std`).

use crate::error::{Buffer, Error};
use crate::hyper::StepOptions;
use crate::hyper::{Caution, CautionMask, Decay, Hyper, StepConstants};
#[cfg(feature = "alloc")]
use crate::state::State;
use crate::state::StateView;

/// `a·b + c` with a single rounding.
#[inline]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    libm::fmaf(a, b, c)
}

/// `max(x, floor)` that keeps a NaN `x` (torch's `clamp(min=floor)`); when
/// `x == floor` (e.g. `-0.0` and `0.0`), `x` is kept.
#[inline]
pub fn max_keep_nan(x: f32, floor: f32) -> f32 {
    if x < floor { floor } else { x }
}

/// `clamp(x, lo, hi)` that keeps a NaN `x` (torch's `clamp`): first the lower
/// bound, then the upper, each replacing `x` only on a strict comparison.
#[inline]
pub fn clamp_keep_nan(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi { hi } else { x }
}

/// PyTorch's CPU `lerp(start, end, weight)`, which has two forms: for
/// `|weight| < 0.5` it computes `fma(weight, end - start, start)`, otherwise
/// `fma(weight - 1, end - start, end)` (with `weight - 1` rounded in f32).
/// They differ in the last bit on many lanes, and in the NaN/inf class
/// when `end` is infinite: `lerp(0, inf, 0.7)` is `-inf + inf = NaN`.
///
/// ```
/// use adopt::reference::lerp;
/// assert_eq!(lerp(1.0, 3.0, 0.25), 1.5);
/// assert_eq!(lerp(1.0, 3.0, 0.75), 2.5);
/// assert_eq!(lerp(0.0, f32::INFINITY, 0.1), f32::INFINITY);
/// assert!(lerp(0.0, f32::INFINITY, 0.7).is_nan());
/// ```
#[inline]
pub fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        fma(weight, end - start, start)
    } else {
        fma(weight - 1.0, end - start, end)
    }
}

/// The gradient of one lane as the step sees it: unscaled (mixed
/// precision; `x · 1.0 == x`, so 1.0 skips the multiply), negated if
/// maximising, plus the L2 term.
pub fn effective_grad(p: f32, grad: f32, k: &StepConstants) -> f32 {
    let grad = if k.inv_scale != 1.0 {
        grad * k.inv_scale
    } else {
        grad
    };
    let g = if k.maximize { -grad } else { grad };
    match k.decay {
        Decay::L2(wd) => fma(wd, p, g),
        _ => g,
    }
}

/// The new first moment, the update direction `u` before cautious masking
/// and the normalised, clipped gradient `ĝ` of a step after the first:
/// `(m, u, ĝ)`.
pub fn moment_and_direction(g: f32, m: f32, v: f32, k: &StepConstants) -> (f32, f32, f32) {
    // Normalise by the *previous* second moment, then clip.
    let denom = max_keep_nan(libm::sqrtf(v), k.eps);
    let normed = clamp_keep_nan(g / denom, -k.clip, k.clip);
    let m = lerp(m, normed, k.one_minus_beta1);
    let u = if k.nesterov {
        // optax's `b1 * m + (1 - b1) * g` with the new m, one fused step.
        fma(k.beta1, m, k.one_minus_beta1 * normed)
    } else {
        m
    };
    (m, u, normed)
}

/// Whether a lane passes the cautious mask: its update `u` agrees in sign
/// with the gradient `g` (timm, and [`Caution::Off`], which never uses the
/// mask) or with `ĝ` (pytorch-optimizer).
pub fn caution_agrees(u: f32, g: f32, normed: f32, k: &StepConstants) -> bool {
    match k.caution {
        Caution::Off | Caution::Timm => u * g > 0.0,
        Caution::PytorchOptimizer => u * normed > 0.0,
    }
}

/// One lane of one step: updates `p`, `m` (`exp_avg`) and `v` (`exp_avg_sq`)
/// from the gradient `grad`.
pub fn update_lane(p: &mut f32, grad: f32, m: &mut f32, v: &mut f32, k: &StepConstants) {
    let g = effective_grad(*p, grad, k);
    if let Decay::Decoupled(neg_rate) = k.decay {
        *p = fma(neg_rate, *p, *p);
    }
    if k.step == 0 {
        // The first step only records the second moment (and decays with
        // first-step decay, whose constants carry `Decay::Decoupled`).
        *v = g * g;
        return;
    }
    let (new_m, mut update, normed) = moment_and_direction(g, *m, *v, k);
    *m = new_m;
    if let Some(scale) = k.caution_scale {
        // Keep the lanes where the update agrees with the gradient.
        update *= if caution_agrees(update, g, normed, k) {
            scale
        } else {
            0.0
        };
    }
    *p = fma(k.neg_lr, update, *p);
    *v = fma(k.one_minus_beta2 * g, g, k.beta2 * *v);
}

/// Whether a lane passes the caution mask ([`caution_agrees`]) at a step
/// after the first.
pub fn caution_lane(p: f32, grad: f32, m: f32, v: f32, k: &StepConstants) -> bool {
    let g = effective_grad(p, grad, k);
    let (_, u, normed) = moment_and_direction(g, m, v, k);
    caution_agrees(u, g, normed, k)
}

/// The validation every step makes before it writes anything, in the same
/// order as the fast path, so the same bad input gets the same error:
/// lengths, the step count, the hyperparameters at this step, the scaling,
/// a supplied caution mask. `None` when `found_inf` skips the step.
fn validate(
    params: usize,
    grads: usize,
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<Option<StepConstants>, Error> {
    for (buffer, got) in [
        (Buffer::Grads, grads),
        (Buffer::ExpAvg, state.exp_avg.len()),
        (Buffer::ExpAvgSq, state.exp_avg_sq.len()),
    ] {
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
    let mut k = hyper.constants(*state.step)?;
    options.scaling.validate()?;
    k.inv_scale = options.scaling.inv_scale;
    if let Some(mask) = options.caution_mask
        && (mask.count > mask.lanes || mask.lanes < params as u64)
    {
        return Err(Error::InvalidCautionMask {
            count: mask.count,
            lanes: mask.lanes,
            shard: params as u64,
        });
    }
    Ok((!options.scaling.found_inf).then_some(k))
}

/// The reference form of [`adopt_step_view`](crate::adopt_step_view): same
/// validation, same errors, same results, one lane at a time.
pub fn adopt_step_view(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_ext(params, grads, state, hyper, &StepOptions::default())
}

/// The reference form of [`adopt_step_view`](crate::adopt_step_view) with
/// mixed-precision scaling.
#[deprecated(note = "use reference::adopt_step_ext with StepOptions { scaling, .. }")]
pub fn adopt_step_scaled_view(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    scaling: crate::hyper::Scaling,
) -> Result<(), Error> {
    let options = StepOptions {
        scaling,
        ..StepOptions::default()
    };
    adopt_step_ext(params, grads, state, hyper, &options)
}

/// The reference form of [`caution_mask`](crate::caution_mask).
pub fn caution_mask(
    params: &[f32],
    grads: &[f32],
    state: &StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<CautionMask, Error> {
    let k = validate(params.len(), grads.len(), state, hyper, options)?;
    let count = match k {
        Some(k) if k.step > 0 && hyper.caution != Caution::Off => params
            .iter()
            .zip(grads)
            .zip(state.exp_avg.iter().zip(state.exp_avg_sq.iter()))
            .filter(|&((&p, &g), (&m, &v))| caution_lane(p, g, m, v, &k))
            .count() as u64,
        _ => 0,
    };
    Ok(CautionMask {
        count,
        lanes: params.len() as u64,
    })
}

/// The reference form of [`adopt_step_ext`](crate::adopt_step_ext)
/// (`options.kernel` is ignored: this is its own kernel).
pub fn adopt_step_ext(
    params: &mut [f32],
    grads: &[f32],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    options: &StepOptions,
) -> Result<(), Error> {
    let Some(mut k) = validate(params.len(), grads.len(), state, hyper, options)? else {
        return Ok(()); // found_inf: the step is skipped
    };
    if hyper.caution != Caution::Off && k.step > 0 {
        let mask = match options.caution_mask {
            Some(mask) => mask,
            None => caution_mask(params, grads, state, hyper, options)?,
        };
        k.caution_scale = Some(mask.scale(hyper.caution));
    }
    let lanes = params
        .iter_mut()
        .zip(grads)
        .zip(state.exp_avg.iter_mut())
        .zip(state.exp_avg_sq.iter_mut());
    for (((p, &g), m), v) in lanes {
        update_lane(p, g, m, v, &k);
    }
    *state.step += 1;
    Ok(())
}

/// The reference form of [`adopt_step`](crate::adopt_step) over an owned
/// [`State`].
#[cfg(feature = "alloc")]
pub fn adopt_step(
    params: &mut [f32],
    grads: &[f32],
    state: &mut State,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_view(params, grads, &mut state.view_mut(), hyper)
}
