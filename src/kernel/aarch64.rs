//! The aarch64 kernel over NEON (`float32x4_t`), which every aarch64 CPU has.

use super::F32Vector;
use crate::hyper::StepConstants;
use core::arch::aarch64::*;

/// Four f32 lanes in a NEON register.
#[derive(Clone, Copy)]
pub(crate) struct Neon(float32x4_t);

// SAFETY: NEON is part of the aarch64 baseline this crate is compiled for
// (`Kernel::Neon` is available only when `target_feature = "neon"`).
unsafe impl F32Vector for Neon {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 4);
        // SAFETY: 4 readable lanes checked above; vld1q has no alignment need.
        Neon(unsafe { vld1q_f32(src.as_ptr()) })
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 4);
        // SAFETY: 4 writable lanes checked above.
        unsafe { vst1q_f32(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY (this and below): NEON is available by the trait's contract.
        Neon(unsafe { vdupq_n_f32(x) })
    }
    #[inline(always)]
    unsafe fn sub(self, rhs: Self) -> Self {
        Neon(unsafe { vsubq_f32(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, rhs: Self) -> Self {
        Neon(unsafe { vmulq_f32(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn div(self, rhs: Self) -> Self {
        Neon(unsafe { vdivq_f32(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Neon(unsafe { vsqrtq_f32(self.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // vfmaq_f32(c, a, b) = c + a·b, fused.
        Neon(unsafe { vfmaq_f32(c.0, self.0, b.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // FNEG flips the sign bit, also of zeros and NaN.
        Neon(unsafe { vnegq_f32(self.0) })
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // Ordered compare: false for NaN, so a NaN `self` is kept.
        unsafe { Neon(vbslq_f32(vcltq_f32(self.0, floor.0), floor.0, self.0)) }
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let zero = vdupq_n_f32(0.0);
            Neon(vbslq_f32(vcgtq_f32(self.0, zero), then.0, zero))
        }
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        unsafe { Neon(vbslq_f32(vcgtq_f32(self.0, hi.0), hi.0, self.0)) }
    }
}

/// The step with NEON.
pub(crate) fn step_neon(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &StepConstants) {
    // SAFETY: NEON is in the aarch64 baseline (checked by `Kernel::is_available`
    // before this is reachable, and by the module's cfg).
    unsafe { super::step_generic::<Neon, Neon, Neon>(p, g, m, v, k) }
}

/// The caution count with NEON.
pub(crate) fn count_neon(p: &[f32], g: &[f32], m: &[f32], v: &[f32], k: &StepConstants) -> u64 {
    // SAFETY: NEON is in the aarch64 baseline (see `step_neon`).
    unsafe { super::count_generic::<Neon>(p, g, m, v, k) }
}

/// Every job's step with NEON.
#[cfg(feature = "alloc")]
pub(crate) fn step_each_neon<'a>(jobs: impl Iterator<Item = super::Job<'a>>) {
    // SAFETY: NEON is in the aarch64 baseline (see `step_neon`).
    unsafe { super::step_each_generic::<Neon, Neon, Neon>(jobs) }
}
