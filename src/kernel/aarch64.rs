//! The aarch64 kernel over NEON (`float32x4_t`), which every aarch64 CPU has.

use super::generic::{F32Vector, impl_isa};
use core::arch::aarch64::*;
#[cfg(feature = "half")]
use half::bf16;

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
    // bf16 moves as shifts in registers; f16 goes lane by lane (the
    // trait's default): NEON's f16 conversions need the `float16x4_t`
    // type, which stable Rust does not have.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16(src: &[bf16]) -> Self {
        assert!(src.len() >= 4);
        // SAFETY: 4 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = vld1_u16(src.as_ptr().cast());
            Neon(vreinterpretq_f32_u32(vshll_n_u16::<16>(bits)))
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16(self, dst: &mut [bf16]) {
        assert!(dst.len() >= 4);
        // SAFETY: 4 writable lanes of 2 bytes checked above.
        unsafe {
            vst1_u16(
                dst.as_mut_ptr().cast(),
                vmovn_u32(bf16_nearest_neon(self.0)),
            )
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_stochastic(self, dst: &mut [bf16], key: u32, lane_lo: u32) {
        assert!(dst.len() >= 4);
        // SAFETY: 4 writable lanes of 2 bytes checked above.
        unsafe {
            let iota = vld1q_u32([0_u32, 1, 2, 3].as_ptr());
            let mut x = veorq_u32(vaddq_u32(vdupq_n_u32(lane_lo), iota), vdupq_n_u32(key));
            x = veorq_u32(x, vshrq_n_u32::<16>(x));
            x = vmulq_u32(x, vdupq_n_u32(0x7feb_352d));
            x = veorq_u32(x, vshrq_n_u32::<15>(x));
            x = vmulq_u32(x, vdupq_n_u32(0x846c_a68b));
            x = veorq_u32(x, vshrq_n_u32::<16>(x));
            let random = vshrq_n_u32::<16>(x);
            let bits = vreinterpretq_u32_f32(self.0);
            let up = vshrq_n_u32::<16>(vaddq_u32(bits, random));
            let exponent = vdupq_n_u32(0x7f80_0000);
            let special = vceqq_u32(vandq_u32(bits, exponent), exponent);
            let rounded = vbslq_u32(special, bf16_nearest_neon(self.0), up);
            vst1_u16(dst.as_mut_ptr().cast(), vmovn_u32(rounded))
        }
    }
}

/// [`bf16_nearest`](super::generic::bf16_nearest) on 4 lanes, the bf16
/// bits in the low half of each 32-bit lane.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn bf16_nearest_neon(x: float32x4_t) -> uint32x4_t {
    // SAFETY: NEON by the caller's contract.
    unsafe {
        let bits = vreinterpretq_u32_f32(x);
        let high = vshrq_n_u32::<16>(bits);
        let odd = vandq_u32(high, vdupq_n_u32(1));
        let bias = vaddq_u32(odd, vdupq_n_u32(0x7fff));
        let rounded = vshrq_n_u32::<16>(vaddq_u32(bits, bias));
        let nan = vorrq_u32(high, vdupq_n_u32(0x0040));
        // Equal to itself: not NaN.
        vbslq_u32(vceqq_f32(x, x), rounded, nan)
    }
}

/// NEON: 4-lane vectors (the aarch64 baseline: no `#[target_feature]`
/// needed).
pub(crate) struct NeonIsa;
impl_isa!(NeonIsa, [], Neon, Neon, Neon);
