//! x86-64 kernels: AVX2+FMA (`__m256`) and AVX-512F (`__m512`).
//!
//! `wide` chooses its instructions at compile time, so a default build
//! (baseline x86-64) would run its `f32x8` as two SSE halves with an unfused
//! `mul_add` even inside a `#[target_feature]` function. These vector types
//! use `core::arch` directly and are instantiated through thin
//! `#[target_feature]` wrappers, chosen at run time by [`super::Kernel`].

use super::F32Vector;
use crate::hyper::StepConstants;
use core::arch::x86_64::*;

/// Eight f32 lanes in an AVX register.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

// SAFETY: every method runs AVX/AVX2/FMA instructions; the trait's contract
// (callers guarantee the CPU supports them) is upheld by `step_avx2`, the
// only instantiation, which `Kernel` calls only after detecting avx2 + fma.
unsafe impl F32Vector for Avx2 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 8);
        // SAFETY: 8 readable lanes checked above; loadu has no alignment need.
        Avx2(unsafe { _mm256_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 8);
        // SAFETY: 8 writable lanes checked above; storeu has no alignment need.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    unsafe fn load_partial(src: &[f32]) -> Self {
        assert!(src.len() < 8);
        // SAFETY: lanes at and past `src.len()` are masked off, so maskload
        // reads (and faults on) only the `src.len()` lanes of `src`.
        unsafe { Avx2(_mm256_maskload_ps(src.as_ptr(), avx2_mask(src.len()))) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        assert!(dst.len() < 8);
        // SAFETY: as above; maskstore writes only the unmasked lanes.
        unsafe { _mm256_maskstore_ps(dst.as_mut_ptr(), avx2_mask(dst.len()), self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY (this and below): AVX is available by the trait's contract.
        Avx2(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn sub(self, rhs: Self) -> Self {
        Avx2(unsafe { _mm256_sub_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, rhs: Self) -> Self {
        Avx2(unsafe { _mm256_mul_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn div(self, rhs: Self) -> Self {
        Avx2(unsafe { _mm256_div_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Avx2(unsafe { _mm256_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx2(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Avx2(unsafe { _mm256_xor_ps(self.0, _mm256_set1_ps(-0.0)) })
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // Ordered compare: false for NaN, so a NaN `self` is kept.
        unsafe {
            let below = _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, floor.0);
            Avx2(_mm256_blendv_ps(self.0, floor.0, below))
        }
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        unsafe {
            let above = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, hi.0);
            Avx2(_mm256_blendv_ps(self.0, hi.0, above))
        }
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let zero = _mm256_setzero_ps();
            Avx2(_mm256_blendv_ps(
                zero,
                then.0,
                _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, zero),
            ))
        }
    }
}

/// A maskload/maskstore mask selecting lanes `0..n` (sign bit set).
#[inline(always)]
unsafe fn avx2_mask(n: usize) -> __m256i {
    const LANES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    // SAFETY: `n <= 8`, so the 8 lanes read from `8 - n` are in bounds.
    unsafe { _mm256_loadu_si256(LANES[8 - n..].as_ptr().cast()) }
}

/// The step with AVX2 + FMA.
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn step_avx2(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    // SAFETY: the caller guarantees avx2 + fma.
    unsafe { super::step_generic::<Avx2>(p, g, m, v, k) }
}

/// The caution count with AVX2 + FMA.
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn count_avx2(
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: &StepConstants,
) -> u64 {
    // SAFETY: the caller guarantees avx2 + fma.
    unsafe { super::count_generic::<Avx2>(p, g, m, v, k) }
}

/// Sixteen f32 lanes in an AVX-512 register.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

// SAFETY: every method runs AVX-512F instructions; the trait's contract is
// upheld by `step_avx512`, the only instantiation, which `Kernel` calls only
// after detecting avx512f.
unsafe impl F32Vector for Avx512 {
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: 16 readable lanes checked above; loadu has no alignment need.
        Avx512(unsafe { _mm512_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 16);
        // SAFETY: 16 writable lanes checked above.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    unsafe fn load_partial(src: &[f32]) -> Self {
        assert!(src.len() < 16);
        let mask: __mmask16 = (1 << src.len()) - 1;
        // SAFETY: masked-off lanes are neither read nor faulted on.
        Avx512(unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr()) })
    }
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        assert!(dst.len() < 16);
        let mask: __mmask16 = (1 << dst.len()) - 1;
        // SAFETY: only the `dst.len()` unmasked lanes are written.
        unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY (this and below): AVX-512F is available by the trait's contract.
        Avx512(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn sub(self, rhs: Self) -> Self {
        Avx512(unsafe { _mm512_sub_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, rhs: Self) -> Self {
        Avx512(unsafe { _mm512_mul_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn div(self, rhs: Self) -> Self {
        Avx512(unsafe { _mm512_div_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Avx512(unsafe { _mm512_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx512(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        // `_mm512_xor_ps` needs AVX-512DQ; the integer xor is AVX-512F.
        unsafe {
            let sign = _mm512_set1_epi32(i32::MIN);
            Avx512(_mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(self.0),
                sign,
            )))
        }
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // Ordered compare: false for NaN, so a NaN `self` is kept.
        unsafe {
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, floor.0);
            Avx512(_mm512_mask_blend_ps(below, self.0, floor.0))
        }
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        unsafe {
            let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, hi.0);
            Avx512(_mm512_mask_blend_ps(above, self.0, hi.0))
        }
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let zero = _mm512_setzero_ps();
            Avx512(_mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, zero),
                zero,
                then.0,
            ))
        }
    }
}

/// The step with AVX-512F.
///
/// # Safety
/// The CPU must support `avx512f`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn step_avx512(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    // SAFETY: the caller guarantees avx512f.
    unsafe { super::step_generic::<Avx512>(p, g, m, v, k) }
}

/// Every job's step with AVX-512F.
///
/// # Safety
/// The CPU must support `avx512f`; every job's slices have equal lengths.
#[cfg(feature = "alloc")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn step_each_avx512<'a>(jobs: impl Iterator<Item = super::Job<'a>>) {
    // SAFETY: guaranteed by the caller.
    unsafe { super::step_each_generic::<Avx512>(jobs) }
}

/// Every job's step with AVX2 and FMA.
///
/// # Safety
/// The CPU must support `avx2` and `fma`; every job's slices have equal
/// lengths.
#[cfg(feature = "alloc")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn step_each_avx2<'a>(jobs: impl Iterator<Item = super::Job<'a>>) {
    // SAFETY: guaranteed by the caller.
    unsafe { super::step_each_generic::<Avx2>(jobs) }
}

/// The caution count with AVX-512F.
///
/// # Safety
/// The CPU must support `avx512f`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn count_avx512(
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: &StepConstants,
) -> u64 {
    // SAFETY: the caller guarantees avx512f.
    unsafe { super::count_generic::<Avx512>(p, g, m, v, k) }
}

/// Runs `f` compiled with AVX2 + FMA, so the loops it inlines (the
/// half-precision conversions) are vectorised with them.
///
/// # Safety
/// The CPU must support `avx2` and `fma`.
#[cfg(feature = "half")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn within_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled with AVX-512F (see [`within_avx2`]).
///
/// # Safety
/// The CPU must support `avx512f`.
#[cfg(feature = "half")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn within_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
