//! Single-buffer steps over raw pointers.

use super::hyper::read_hyper;
use super::{
    ADOPT_ROUNDING_NEAREST_EVEN, ADOPT_ROUNDING_STOCHASTIC, AdoptHyper, AdoptStatus, Fail, Span,
    check_disjoint, check_one, check_ptr, guard, slice, slice_mut, write_out,
};
use crate::precision::{self, Rounding};
use crate::state::StateView;
use alloc::format;
use half::bf16;

/// Checks the buffers of a single step (`P` is the parameters' and
/// gradients' lane type): each pointer, then that no two overlap.
#[allow(clippy::too_many_arguments)]
fn check_step_buffers<P>(
    params: *const P,
    params_len: usize,
    grads: *const P,
    grads_len: usize,
    exp_avg: *const f32,
    exp_avg_len: usize,
    exp_avg_sq: *const f32,
    exp_avg_sq_len: usize,
    step: *const u64,
) -> Result<(), Fail> {
    check_ptr("params", params, params_len)?;
    check_ptr("grads", grads, grads_len)?;
    check_ptr("exp_avg", exp_avg, exp_avg_len)?;
    check_ptr("exp_avg_sq", exp_avg_sq, exp_avg_sq_len)?;
    check_one("step", step)?;
    check_disjoint(&mut [
        Span::new("params", params, params_len, true),
        Span::new("grads", grads, grads_len, false),
        Span::new("exp_avg", exp_avg, exp_avg_len, true),
        Span::new("exp_avg_sq", exp_avg_sq, exp_avg_sq_len, true),
        Span::new("step", step, 1, true),
    ])
}

/// One ADOPT step over f32 buffers: `params` with `grads`, updating the
/// moments `exp_avg` (m) and `exp_avg_sq` (v) and the step count `*step`
/// (steps already taken: 0, with zeroed moments, for a fresh state).
///
/// Every buffer must have `params_len` lanes
/// (`ADOPT_STATUS_LENGTH_MISMATCH` otherwise). The result is bit-identical
/// to the Rust `adopt::adopt_step`. On any error nothing is written.
///
/// # Safety
///
/// Each non-null buffer points to as many valid, initialised elements as
/// its length says; `step` and `hyper` are null or point to a valid value;
/// nothing else reads or writes these during the call. Null pointers,
/// misalignment and overlap are checked.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adopt_step_f32(
    params: *mut f32,
    params_len: usize,
    grads: *const f32,
    grads_len: usize,
    exp_avg: *mut f32,
    exp_avg_len: usize,
    exp_avg_sq: *mut f32,
    exp_avg_sq_len: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
) -> AdoptStatus {
    guard(|| {
        check_step_buffers(
            params,
            params_len,
            grads,
            grads_len,
            exp_avg,
            exp_avg_len,
            exp_avg_sq,
            exp_avg_sq_len,
            step,
        )?;
        // SAFETY: read_hyper checks the pointer; valid by the contract.
        let hyper = unsafe { read_hyper(hyper) }?;
        // SAFETY: every pointer passed check_ptr or check_one and none
        // overlap (check_step_buffers); valid and exclusive by the contract.
        let (params, grads, m, v, step) = unsafe {
            (
                slice_mut(params, params_len),
                slice(grads, grads_len),
                slice_mut(exp_avg, exp_avg_len),
                slice_mut(exp_avg_sq, exp_avg_sq_len),
                &mut *step,
            )
        };
        crate::adopt_step_view(params, grads, &mut StateView::new(m, v, step), &hyper)?;
        Ok(())
    })
}

/// [`adopt_step_f32`] with one length for the four buffers, `lanes` (the
/// second version of the single step: the first, with a length per
/// buffer, stays for existing callers).
///
/// # Safety
///
/// As for `adopt_step_f32`, each buffer of `lanes` lanes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_step_f32_v2(
    params: *mut f32,
    grads: *const f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    lanes: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
) -> AdoptStatus {
    // SAFETY: the caller's contract is adopt_step_f32's.
    unsafe {
        adopt_step_f32(
            params, lanes, grads, lanes, exp_avg, lanes, exp_avg_sq, lanes, step, hyper,
        )
    }
}

/// [`adopt_step_bf16`] with one length for the four buffers, `lanes`.
///
/// # Safety
///
/// As for `adopt_step_bf16`, each buffer of `lanes` lanes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adopt_step_bf16_v2(
    params: *mut u16,
    grads: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    lanes: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
    rounding: u32,
    seed: u64,
) -> AdoptStatus {
    // SAFETY: the caller's contract is adopt_step_bf16's.
    unsafe {
        adopt_step_bf16(
            params, lanes, grads, lanes, exp_avg, lanes, exp_avg_sq, lanes, step, hyper, rounding,
            seed,
        )
    }
}

/// One ADOPT step over bf16 parameters and gradients (as `uint16_t` bit
/// patterns) with f32 moments: each lane is widened exactly to f32, stepped
/// exactly as `adopt_step_f32` would, and rounded back to bf16 by
/// `rounding`: `ADOPT_ROUNDING_NEAREST_EVEN`, or `ADOPT_ROUNDING_STOCHASTIC`
/// with random bits that depend only on `(seed, step, lane)` (`seed` is
/// unused otherwise).
///
/// Lengths, errors and the step count are as for `adopt_step_f32`.
///
/// # Safety
///
/// As for `adopt_step_f32`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adopt_step_bf16(
    params: *mut u16,
    params_len: usize,
    grads: *const u16,
    grads_len: usize,
    exp_avg: *mut f32,
    exp_avg_len: usize,
    exp_avg_sq: *mut f32,
    exp_avg_sq_len: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
    rounding: u32,
    seed: u64,
) -> AdoptStatus {
    guard(|| {
        check_step_buffers(
            params,
            params_len,
            grads,
            grads_len,
            exp_avg,
            exp_avg_len,
            exp_avg_sq,
            exp_avg_sq_len,
            step,
        )?;
        // SAFETY: read_hyper checks the pointer; valid by the contract.
        let hyper = unsafe { read_hyper(hyper) }?;
        let rounding = match rounding {
            ADOPT_ROUNDING_NEAREST_EVEN => Rounding::NearestEven,
            ADOPT_ROUNDING_STOCHASTIC => Rounding::Stochastic { seed },
            other => {
                return Err(Fail::invalid(format!(
                    "rounding is {other}: must be ADOPT_ROUNDING_NEAREST_EVEN (0) or ADOPT_ROUNDING_STOCHASTIC (1)"
                )));
            }
        };
        // SAFETY: every pointer passed check_ptr or check_one and none
        // overlap (check_step_buffers); valid and exclusive by the contract.
        // `bf16` is `repr(transparent)` over `u16`, so the casts keep size,
        // alignment and validity (every bit pattern is a bf16).
        let (params, grads, m, v, step) = unsafe {
            (
                slice_mut(params.cast::<bf16>(), params_len),
                slice(grads.cast::<bf16>(), grads_len),
                slice_mut(exp_avg, exp_avg_len),
                slice_mut(exp_avg_sq, exp_avg_sq_len),
                &mut *step,
            )
        };
        precision::adopt_step_half(params, grads, m, v, step, &hyper, rounding)?;
        Ok(())
    })
}

/// Whether any of `len` gradient lanes is NaN or ±inf (split across the
/// rayon pool when large), into `*out` (1 or 0): the scan PyTorch's
/// `GradScaler` runs in `unscale_`, to feed `found_inf` of
/// [`adopt_optimizer_step_scaled`](super::adopt_optimizer_step_scaled). Scan the gradients as they are, still
/// scaled: the scaled step unscales them itself.
///
/// # Safety
///
/// `grads` is null (with `len` 0) or points to `len` valid, initialised
/// floats; `out` is null or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_grads_nonfinite(
    grads: *const f32,
    len: usize,
    out: *mut u32,
) -> AdoptStatus {
    guard(|| {
        check_ptr("grads", grads, len)?;
        check_one("out", out)?;
        // SAFETY: checked by check_ptr; valid by the contract.
        let found = crate::grads_nonfinite(unsafe { slice(grads, len) });
        // SAFETY: checked non-null and aligned; valid by the contract.
        unsafe { write_out(out, u32::from(found)) };
        Ok(())
    })
}
