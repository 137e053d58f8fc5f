//! The portable kernel over `wide::f32x8`, whose instructions are chosen at
//! compile time (SSE2 in a default x86-64 build, NEON on aarch64, plain
//! arrays elsewhere).

use super::generic::{F32Vector, impl_isa};
use wide::f32x8;

/// Whether `wide`'s `mul_add` is a fused instruction in this build. Without
/// one it is a multiply and an add (two roundings), so the kernel computes a
/// correctly rounded fma per lane instead.
const WIDE_FMA_IS_FUSED: bool = cfg!(any(
    all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "fma"
    ),
    all(target_arch = "aarch64", target_feature = "neon"),
));

// SAFETY: `wide` compiles `f32x8` to instructions of the build's target
// features only, so every method is safe on any CPU that runs this build.
unsafe impl F32Vector for f32x8 {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn load(src: &[f32]) -> Self {
        let lanes: [f32; 8] = src[..8].try_into().expect("8 lanes");
        f32x8::new(lanes)
    }
    #[inline(always)]
    unsafe fn store(self, dst: &mut [f32]) {
        dst[..8].copy_from_slice(&self.to_array());
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn sub(self, rhs: Self) -> Self {
        self - rhs
    }
    #[inline(always)]
    unsafe fn mul(self, rhs: Self) -> Self {
        self * rhs
    }
    #[inline(always)]
    unsafe fn div(self, rhs: Self) -> Self {
        self / rhs
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        f32x8::sqrt(self)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        if WIDE_FMA_IS_FUSED {
            f32x8::mul_add(self, b, c)
        } else {
            let (a, b, c) = (self.to_array(), b.to_array(), c.to_array());
            f32x8::new(core::array::from_fn(|i| libm::fmaf(a[i], b[i], c[i])))
        }
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        self.simd_lt(floor).bitselect(floor, self)
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        self.simd_gt(f32x8::ZERO).bitselect(then, f32x8::ZERO)
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        self.simd_gt(hi).bitselect(hi, self)
    }
}

/// The portable kernel: `f32x8` for every vector.
pub(crate) struct Portable;
impl_isa!(Portable, [], f32x8, f32x8, f32x8);
