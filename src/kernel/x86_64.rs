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
// (callers guarantee the CPU supports them) is upheld by the AVX2+FMA
// kernel and the AVX-512 kernel's tails, which `Kernel` calls only after
// detecting avx2 + fma.
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
    // A partial vector moves as 128-bit halves (see `Fma128`): not
    // `vmaskmovps`, whose store form is microcoded and slow on AMD.
    #[inline(always)]
    unsafe fn load_partial(src: &[f32]) -> Self {
        assert!(src.len() < 8);
        // SAFETY: AVX by the trait's contract; each half reads its lanes of
        // `src` only.
        unsafe {
            Avx2(if src.len() >= 4 {
                let (lo, hi) = src.split_at(4);
                _mm256_set_m128(Fma128::load_partial(hi).0, Fma128::load(lo).0)
            } else {
                _mm256_zextps128_ps256(Fma128::load_partial(src).0)
            })
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        assert!(dst.len() < 8);
        // SAFETY: as above, writing `dst`'s lanes only.
        unsafe {
            let lo = Fma128(_mm256_castps256_ps128(self.0));
            if dst.len() >= 4 {
                let (dst_lo, dst_hi) = dst.split_at_mut(4);
                lo.store(dst_lo);
                Fma128(_mm256_extractf128_ps::<1>(self.0)).store_partial(dst_hi);
            } else {
                lo.store_partial(dst);
            }
        }
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

/// Four f32 lanes in an XMM register, with the VEX-encoded AVX and FMA
/// instructions: the narrowest tail vector of the AVX2 and AVX-512 kernels
/// (see [`super::step_generic`]), never a kernel's main vector.
#[derive(Clone, Copy)]
pub(crate) struct Fma128(__m128);

// SAFETY: every method runs SSE/AVX/FMA instructions on 128-bit vectors;
// the trait's contract (callers guarantee the CPU supports them) is upheld
// by the AVX2+FMA and AVX-512 kernels, its only users, which `Kernel` calls
// only after detecting avx2 + fma.
unsafe impl F32Vector for Fma128 {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn load(src: &[f32]) -> Self {
        assert!(src.len() >= 4);
        // SAFETY: 4 readable lanes checked above; loadu has no alignment need.
        Fma128(unsafe { _mm_loadu_ps(src.as_ptr()) })
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32]) {
        assert!(dst.len() >= 4);
        // SAFETY: 4 writable lanes checked above; storeu has no alignment need.
        unsafe { _mm_storeu_ps(dst.as_mut_ptr(), self.0) }
    }
    // One to three lanes move by plain 32- and 64-bit loads and stores:
    // `vmaskmovps` would do it in one instruction, but its store form is
    // microcoded and slow on AMD (10,000 buffers of 10 lanes, each an AVX2
    // vector and a `vmaskmovps` tail of two, stepped 60% slower than with a
    // masked AVX-512 tail of ten, here).
    #[inline(always)]
    unsafe fn load_partial(src: &[f32]) -> Self {
        let s = src.as_ptr();
        // SAFETY: each arm reads lanes `0..src.len()` of `src` only.
        unsafe {
            Fma128(match src.len() {
                0 => _mm_setzero_ps(),
                1 => _mm_load_ss(s),
                2 => _mm_castpd_ps(_mm_load_sd(s.cast())),
                3 => _mm_movelh_ps(_mm_castpd_ps(_mm_load_sd(s.cast())), _mm_load_ss(s.add(2))),
                n => panic!("a partial vector of {n} lanes"),
            })
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        let d = dst.as_mut_ptr();
        // SAFETY: each arm writes lanes `0..dst.len()` of `dst` only.
        unsafe {
            match dst.len() {
                0 => {}
                1 => _mm_store_ss(d, self.0),
                2 => _mm_store_sd(d.cast(), _mm_castps_pd(self.0)),
                3 => {
                    _mm_store_sd(d.cast(), _mm_castps_pd(self.0));
                    _mm_store_ss(d.add(2), _mm_movehl_ps(self.0, self.0));
                }
                n => panic!("a partial vector of {n} lanes"),
            }
        }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        // SAFETY (this and below): SSE4.1, AVX and FMA are available by the
        // trait's contract.
        Fma128(unsafe { _mm_set1_ps(x) })
    }
    #[inline(always)]
    unsafe fn sub(self, rhs: Self) -> Self {
        Fma128(unsafe { _mm_sub_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, rhs: Self) -> Self {
        Fma128(unsafe { _mm_mul_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn div(self, rhs: Self) -> Self {
        Fma128(unsafe { _mm_div_ps(self.0, rhs.0) })
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Fma128(unsafe { _mm_sqrt_ps(self.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Fma128(unsafe { _mm_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Fma128(unsafe { _mm_xor_ps(self.0, _mm_set1_ps(-0.0)) })
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // Ordered compare: false for NaN, so a NaN `self` is kept.
        unsafe {
            let below = _mm_cmp_ps::<_CMP_LT_OQ>(self.0, floor.0);
            Fma128(_mm_blendv_ps(self.0, floor.0, below))
        }
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        unsafe {
            let above = _mm_cmp_ps::<_CMP_GT_OQ>(self.0, hi.0);
            Fma128(_mm_blendv_ps(self.0, hi.0, above))
        }
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let zero = _mm_setzero_ps();
            Fma128(_mm_blendv_ps(
                zero,
                then.0,
                _mm_cmp_ps::<_CMP_GT_OQ>(self.0, zero),
            ))
        }
    }
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
    unsafe { super::step_generic::<Avx2, Fma128, Fma128>(p, g, m, v, k) }
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
    // A partial vector moves as 256-bit halves (see `Avx2`), not by masked
    // loads and stores: a masked store's address range is the whole 64
    // bytes, and a load of the next buffer that overlaps it (buffers laid
    // out back to back, as `State::many` lays out moments) waits for the
    // store to complete: 2,000 buffers of 10 lanes stepped 56 µs a step
    // with masked tails against 33 µs (see BENCHMARKS.md).
    unsafe fn load_partial(src: &[f32]) -> Self {
        assert!(src.len() < 16);
        // SAFETY: AVX-512F, and AVX2 which it implies, by the trait's
        // contract; each half reads its lanes of `src` only.
        unsafe {
            Avx512(if src.len() >= 8 {
                let (lo, hi) = src.split_at(8);
                let hi = _mm256_castps_pd(Avx2::load_partial(hi).0);
                let lo = _mm512_castps256_ps512(Avx2::load(lo).0);
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castps_pd(lo), hi))
            } else {
                _mm512_zextps256_ps512(Avx2::load_partial(src).0)
            })
        }
    }
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        assert!(dst.len() < 16);
        // SAFETY: as above, writing `dst`'s lanes only.
        unsafe {
            let lo = Avx2(_mm512_castps512_ps256(self.0));
            if dst.len() >= 8 {
                let (dst_lo, dst_hi) = dst.split_at_mut(8);
                lo.store(dst_lo);
                let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0));
                Avx2(_mm256_castpd_ps(hi)).store_partial(dst_hi);
            } else {
                lo.store_partial(dst);
            }
        }
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

/// The step with AVX-512F, its tail in AVX2 + FMA vectors.
///
/// # Safety
/// The CPU must support `avx512f`, `avx2` and `fma`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn step_avx512(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    // SAFETY: the caller guarantees avx512f, avx2 and fma.
    unsafe { super::step_generic::<Avx512, Avx2, Fma128>(p, g, m, v, k) }
}

/// Every job's step with AVX-512F, tails in AVX2 + FMA vectors.
///
/// # Safety
/// The CPU must support `avx512f`, `avx2` and `fma`; every job's slices
/// have equal lengths.
#[cfg(feature = "alloc")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(crate) unsafe fn step_each_avx512<'a>(jobs: impl Iterator<Item = super::Job<'a>>) {
    // SAFETY: guaranteed by the caller.
    unsafe { super::step_each_generic::<Avx512, Avx2, Fma128>(jobs) }
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
    unsafe { super::step_each_generic::<Avx2, Fma128, Fma128>(jobs) }
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
