//! x86-64 kernels: AVX2+FMA (`__m256`) and AVX-512F (`__m512`).
//!
//! `wide` chooses its instructions at compile time, so a default build
//! (baseline x86-64) would run its `f32x8` as two SSE halves with an unfused
//! `mul_add` even inside a `#[target_feature]` function. These vector types
//! use `core::arch` directly and are instantiated through thin
//! `#[target_feature]` entry points (the [`Isa`](super::generic::Isa)
//! implementations at the end), which dispatch calls only with a token
//! proving the instruction set.

use super::generic::{F32Vector, impl_isa};
use core::arch::x86_64::*;
#[cfg(feature = "half")]
use half::{bf16, f16};

/// Eight f32 lanes in an AVX register.
#[derive(Clone, Copy)]
pub(crate) struct Avx2(__m256);

// SAFETY: every method runs AVX/AVX2/FMA instructions (the f16 ones F16C
// too); the trait's contract (callers guarantee the CPU supports them) is
// upheld by the `Isa` implementations below, which compile these methods
// only into entry points with those features, called only with a token
// proving them.
unsafe impl F32Vector for Avx2 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch never faults and reads nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

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
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // `maxps(a, b)` is `a > b ? a : b`: the second operand on NaN and on
        // ties, so with `self` second it keeps a NaN `self` and `self` on
        // ties, as `self < floor ? floor : self` does (one instruction).
        Avx2(unsafe { _mm256_max_ps(floor.0, self.0) })
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        // `minps(a, b)` is `a < b ? a : b` (see `max_keep_nan`).
        Avx2(unsafe { _mm256_min_ps(hi.0, self.0) })
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, _mm256_setzero_ps());
            Avx2(_mm256_and_ps(positive, then.0))
        }
    }
    #[inline(always)]
    unsafe fn count_positive(self, n: usize) -> u32 {
        unsafe {
            let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, _mm256_setzero_ps());
            let bits = _mm256_movemask_ps(positive) as u32 & ((1_u32 << n) - 1);
            bits.count_ones()
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16(src: &[bf16]) -> Self {
        assert!(src.len() >= 8);
        // SAFETY: 8 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = _mm_loadu_si128(src.as_ptr().cast());
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(
                _mm256_cvtepu16_epi32(bits),
            )))
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16(self, dst: &mut [bf16]) {
        assert!(dst.len() >= 8);
        // SAFETY: 8 writable lanes of 2 bytes checked above.
        unsafe { store_u16x8(bf16_nearest_avx2(self.0), dst.as_mut_ptr().cast()) }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_stochastic(self, dst: &mut [bf16], key: u32, lane_lo: u32) {
        assert!(dst.len() >= 8);
        // SAFETY: 8 writable lanes of 2 bytes checked above.
        unsafe {
            let lanes = _mm256_add_epi32(
                _mm256_set1_epi32(lane_lo as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let rounded = bf16_stochastic_avx2(self.0, lane_bits_avx2(lanes, key));
            store_u16x8(rounded, dst.as_mut_ptr().cast())
        }
    }
    // A pair is 16 bf16 lanes in one 256-bit register, each 32-bit
    // element holding lanes `2j` (low half) and `2j + 1` (high half): the
    // first vector is the even lanes, the second the odd ones, each
    // widened in place by a shift or a mask, and stored back by one `or`,
    // with none of the shuffles (`vpmovzxwd`, `vpackusdw`, `vextracti128`)
    // of two single vectors. The step tests all its pairs' vectors for
    // NaN at once (`any_nan`) and, when there is none, stores them with
    // the select-free rounding (`CLEAN`).
    #[inline(always)]
    unsafe fn any_nan<const N: usize>(vectors: [Self; N]) -> bool {
        // SAFETY: AVX by the trait's contract.
        unsafe {
            // Two vectors per compare (`unord(a, b)`: either is NaN).
            let mut nan = _mm256_setzero_ps();
            for i in (0..N).step_by(2) {
                let (a, b) = (vectors[i].0, vectors[(i + 1).min(N - 1)].0);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
            }
            _mm256_movemask_ps(nan) != 0
        }
    }
    const BF16_PAIRS: bool = true;
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16_pair(src: &[bf16]) -> (Self, Self) {
        assert!(src.len() >= 16);
        // SAFETY: 16 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = _mm256_loadu_si256(src.as_ptr().cast());
            let even = _mm256_slli_epi32::<16>(bits);
            let odd = _mm256_and_si256(bits, _mm256_set1_epi32(0xffff_0000_u32 as i32));
            (
                Avx2(_mm256_castsi256_ps(even)),
                Avx2(_mm256_castsi256_ps(odd)),
            )
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair<const CLEAN: bool>(a: Self, b: Self, dst: &mut [bf16]) {
        assert!(dst.len() >= 16);
        // SAFETY: 16 writable lanes of 2 bytes checked above.
        unsafe {
            let joined = if CLEAN {
                // No NaN: `bf16_nearest`'s rounding without its select, in
                // 16-bit lanes of the joined pair: the truncated high
                // halves `h` and the low halves `l` dropped from them, each
                // `h` plus the carry of `l + 0x7fff + (h & 1)`: `l` plus
                // `0x7ffe + (h & 1)` saturates at `0xffff` exactly when
                // it carries. Two operations fewer per store than rounding
                // each vector in its 32-bit lanes.
                let (a, b) = (_mm256_castps_si256(a.0), _mm256_castps_si256(b.0));
                let high = _mm256_blend_epi16::<0xaa>(_mm256_srli_epi32::<16>(a), b);
                let low = _mm256_blend_epi16::<0xaa>(a, _mm256_slli_epi32::<16>(b));
                let odd = _mm256_and_si256(high, _mm256_set1_epi16(1));
                let half = _mm256_or_si256(odd, _mm256_set1_epi16(0x7ffe));
                let sum = _mm256_adds_epu16(low, half);
                let carry = _mm256_cmpeq_epi16(sum, _mm256_set1_epi16(-1));
                _mm256_sub_epi16(high, carry)
            } else {
                _mm256_or_si256(
                    bf16_nearest_avx2(a.0),
                    _mm256_slli_epi32::<16>(bf16_nearest_avx2(b.0)),
                )
            };
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), joined)
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair_stochastic<const CLEAN: bool>(
        a: Self,
        b: Self,
        dst: &mut [bf16],
        key: u32,
        lane_lo: u32,
    ) {
        assert!(dst.len() >= 16);
        // SAFETY: 16 writable lanes of 2 bytes checked above.
        unsafe {
            // Lane `j` of the first vector is lane `2j` of the pair, of the
            // second `2j + 1`.
            let even_lanes = _mm256_add_epi32(
                _mm256_set1_epi32(lane_lo as i32),
                _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
            );
            let odd_lanes = _mm256_add_epi32(even_lanes, _mm256_set1_epi32(1));
            let even_random = lane_bits_avx2(even_lanes, key);
            let odd_random = lane_bits_avx2(odd_lanes, key);
            let joined = if CLEAN {
                // No NaN: the random bits added and the low halves dropped,
                // with no select (an infinity's zero mantissa takes the
                // random bits and truncates back to the infinity).
                let even = _mm256_add_epi32(_mm256_castps_si256(a.0), even_random);
                let odd = _mm256_add_epi32(_mm256_castps_si256(b.0), odd_random);
                _mm256_or_si256(
                    _mm256_srli_epi32::<16>(even),
                    _mm256_and_si256(odd, _mm256_set1_epi32(0xffff_0000_u32 as i32)),
                )
            } else {
                let even = bf16_stochastic_avx2(a.0, even_random);
                let odd = bf16_stochastic_avx2(b.0, odd_random);
                _mm256_or_si256(even, _mm256_slli_epi32::<16>(odd))
            };
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), joined)
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_f16(src: &[f16]) -> Self {
        assert!(src.len() >= 8);
        // SAFETY: 8 readable lanes of 2 bytes checked above; F16C by the
        // contract of the half-precision entry points.
        Avx2(unsafe { _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().cast())) })
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_f16(self, dst: &mut [f16]) {
        assert!(dst.len() >= 8);
        // SAFETY: as above, writing 8 lanes.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm_storeu_si128(dst.as_mut_ptr().cast(), h)
        }
    }
}

/// bf16 bits (in the low half of each 32-bit lane) of `x` rounded to
/// nearest even, NaN quieted: [`bf16_nearest`](super::generic::bf16_nearest)
/// on 8 lanes.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn bf16_nearest_avx2(x: __m256) -> __m256i {
    // SAFETY: AVX2 by the caller's contract.
    unsafe {
        let bits = _mm256_castps_si256(x);
        let high = _mm256_srli_epi32::<16>(bits);
        let odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, bias));
        let nan = _mm256_or_si256(high, _mm256_set1_epi32(0x0040));
        let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        _mm256_blendv_epi8(rounded, nan, is_nan)
    }
}

/// bf16 bits (in the low half of each 32-bit lane) of `x` rounded
/// stochastically with the 16 random bits of each lane of `random`:
/// [`bf16_stochastic`](super::generic::bf16_stochastic) on 8 lanes.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn bf16_stochastic_avx2(x: __m256, random: __m256i) -> __m256i {
    // SAFETY: AVX2 by the caller's contract.
    unsafe {
        let bits = _mm256_castps_si256(x);
        let up = _mm256_srli_epi32::<16>(_mm256_add_epi32(bits, random));
        let exponent = _mm256_set1_epi32(0x7f80_0000);
        let special = _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent);
        _mm256_blendv_epi8(up, bf16_nearest_avx2(x), special)
    }
}

/// [`lane_bits`](super::generic::lane_bits) of 8 lane indices.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn lane_bits_avx2(lanes: __m256i, key: u32) -> __m256i {
    // SAFETY: AVX2 by the caller's contract.
    unsafe {
        let mut x = _mm256_xor_si256(lanes, _mm256_set1_epi32(key as i32));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb_352d));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<15>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846c_a68b_u32 as i32));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
        _mm256_srli_epi32::<16>(x)
    }
}

/// Stores the low halves of 8 32-bit lanes (each below 2^16) as 8 u16.
///
/// # Safety
/// `dst` has 16 writable bytes; AVX2.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn store_u16x8(x: __m256i, dst: *mut __m128i) {
    // SAFETY: the caller's contract.
    unsafe {
        let packed = _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256::<1>(x));
        _mm_storeu_si128(dst, packed)
    }
}

/// Four f32 lanes in an XMM register, with the VEX-encoded AVX and FMA
/// instructions: the narrowest tail vector of the AVX2 and AVX-512 kernels
/// (see [`super::step_generic`]), never a kernel's main vector.
#[derive(Clone, Copy)]
pub(crate) struct Fma128(__m128);

// SAFETY: every method runs SSE/AVX/FMA instructions on 128-bit vectors
// (the bf16 ones AVX2, the f16 ones F16C); the trait's contract is upheld
// by the AVX2+FMA and AVX-512 entry points below, its only users.
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
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // One instruction, as `Avx2::max_keep_nan`.
        Fma128(unsafe { _mm_max_ps(floor.0, self.0) })
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        Fma128(unsafe { _mm_min_ps(hi.0, self.0) })
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let positive = _mm_cmp_ps::<_CMP_GT_OQ>(self.0, _mm_setzero_ps());
            Fma128(_mm_and_ps(positive, then.0))
        }
    }
    #[inline(always)]
    unsafe fn count_positive(self, n: usize) -> u32 {
        unsafe {
            let positive = _mm_cmp_ps::<_CMP_GT_OQ>(self.0, _mm_setzero_ps());
            (_mm_movemask_ps(positive) as u32 & ((1_u32 << n) - 1)).count_ones()
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16(src: &[bf16]) -> Self {
        assert!(src.len() >= 4);
        // SAFETY: 4 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = _mm_loadl_epi64(src.as_ptr().cast());
            Fma128(_mm_castsi128_ps(_mm_slli_epi32::<16>(_mm_cvtepu16_epi32(
                bits,
            ))))
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16(self, dst: &mut [bf16]) {
        assert!(dst.len() >= 4);
        // SAFETY: 4 writable lanes of 2 bytes checked above.
        unsafe {
            let wide = _mm256_zextsi128_si256(_mm_castps_si128(self.0));
            let rounded = bf16_nearest_avx2(_mm256_castsi256_ps(wide));
            let packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm_setzero_si128());
            _mm_storel_epi64(dst.as_mut_ptr().cast(), packed)
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_stochastic(self, dst: &mut [bf16], key: u32, lane_lo: u32) {
        assert!(dst.len() >= 4);
        // SAFETY: as above; the upper four lanes are computed and dropped.
        unsafe {
            let mut all = [bf16::ZERO; 8];
            let wide = Avx2(_mm256_castps128_ps256(self.0));
            wide.store_bf16_stochastic(&mut all, key, lane_lo);
            dst[..4].copy_from_slice(&all[..4]);
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_f16(src: &[f16]) -> Self {
        assert!(src.len() >= 4);
        // SAFETY: 4 readable lanes of 2 bytes checked above; F16C by the
        // contract of the half-precision entry points.
        Fma128(unsafe { _mm_cvtph_ps(_mm_loadl_epi64(src.as_ptr().cast())) })
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_f16(self, dst: &mut [f16]) {
        assert!(dst.len() >= 4);
        // SAFETY: as above, writing 4 lanes.
        unsafe {
            let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm_storel_epi64(dst.as_mut_ptr().cast(), h)
        }
    }
}

/// Sixteen f32 lanes in an AVX-512 register.
#[derive(Clone, Copy)]
pub(crate) struct Avx512(__m512);

// SAFETY: every method runs AVX-512F instructions (and the AVX2 ones of
// its partial moves); the trait's contract is upheld by the AVX-512 entry
// points below, its only users.
unsafe impl F32Vector for Avx512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn prefetch(p: *const u8) {
        // SAFETY: a prefetch never faults and reads nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

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
    // store to complete (measured in BENCHMARKS.md, "narrow tails").
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
    unsafe fn max_keep_nan(self, floor: Self) -> Self {
        // One instruction, as `Avx2::max_keep_nan`.
        Avx512(unsafe { _mm512_max_ps(floor.0, self.0) })
    }
    #[inline(always)]
    unsafe fn min_keep_nan(self, hi: Self) -> Self {
        Avx512(unsafe { _mm512_min_ps(hi.0, self.0) })
    }
    #[inline(always)]
    unsafe fn positive_select(self, then: Self) -> Self {
        unsafe {
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, _mm512_setzero_ps());
            Avx512(_mm512_maskz_mov_ps(positive, then.0))
        }
    }
    #[inline(always)]
    unsafe fn count_positive(self, n: usize) -> u32 {
        unsafe {
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, _mm512_setzero_ps());
            (u32::from(positive) & ((1_u32 << n) - 1)).count_ones()
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16(src: &[bf16]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: 16 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = _mm256_loadu_si256(src.as_ptr().cast());
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                _mm512_cvtepu16_epi32(bits),
            )))
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16(self, dst: &mut [bf16]) {
        assert!(dst.len() >= 16);
        // SAFETY: 16 writable lanes of 2 bytes checked above.
        unsafe {
            let packed = _mm512_cvtepi32_epi16(bf16_nearest_avx512(self.0));
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), packed)
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_stochastic(self, dst: &mut [bf16], key: u32, lane_lo: u32) {
        assert!(dst.len() >= 16);
        // SAFETY: 16 writable lanes of 2 bytes checked above.
        unsafe {
            let lanes = _mm512_add_epi32(
                _mm512_set1_epi32(lane_lo as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            let rounded = bf16_stochastic_avx512(self.0, lane_bits_avx512(lanes, key));
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(rounded))
        }
    }
    // Pairs as `Avx2`'s: 32 bf16 lanes in one 512-bit register, the even
    // lanes the first vector and the odd ones the second, with no
    // `vpmovzxwd` or `vpmovdw` (the shuffle port's); when the step found
    // a NaN (`CLEAN` false), NaN lanes by masked selects.
    #[inline(always)]
    unsafe fn any_nan<const N: usize>(vectors: [Self; N]) -> bool {
        // SAFETY: AVX-512F by the trait's contract.
        unsafe {
            let mut nan: __mmask16 = 0;
            for i in (0..N).step_by(2) {
                let (a, b) = (vectors[i].0, vectors[(i + 1).min(N - 1)].0);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b);
            }
            nan != 0
        }
    }
    const BF16_PAIRS: bool = true;
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16_pair(src: &[bf16]) -> (Self, Self) {
        assert!(src.len() >= 32);
        // SAFETY: 32 readable lanes of 2 bytes checked above.
        unsafe {
            let bits = _mm512_loadu_si512(src.as_ptr().cast());
            let even = _mm512_slli_epi32::<16>(bits);
            let odd = _mm512_and_si512(bits, _mm512_set1_epi32(0xffff_0000_u32 as i32));
            (
                Avx512(_mm512_castsi512_ps(even)),
                Avx512(_mm512_castsi512_ps(odd)),
            )
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair<const CLEAN: bool>(a: Self, b: Self, dst: &mut [bf16]) {
        assert!(dst.len() >= 32);
        // SAFETY: 32 writable lanes of 2 bytes checked above.
        unsafe {
            // `bf16_nearest` before its select: the rounded bits, in the
            // high half.
            let round = |x: __m512| {
                let bits = _mm512_castps_si512(x);
                let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
                _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)))
            };
            let (even, high) = if CLEAN {
                // No NaN: no select.
                (_mm512_srli_epi32::<16>(round(a.0)), round(b.0))
            } else {
                // The quieted NaN selected in the high halves before their
                // low halves are cleared.
                let nan = _mm512_or_si512(_mm512_castps_si512(b.0), _mm512_set1_epi32(0x0040_0000));
                let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(b.0, b.0);
                let high = _mm512_mask_blend_epi32(is_nan, round(b.0), nan);
                (bf16_nearest_avx512(a.0), high)
            };
            let high = _mm512_and_si512(high, _mm512_set1_epi32(0xffff_0000_u32 as i32));
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), _mm512_or_si512(even, high))
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair_stochastic<const CLEAN: bool>(
        a: Self,
        b: Self,
        dst: &mut [bf16],
        key: u32,
        lane_lo: u32,
    ) {
        assert!(dst.len() >= 32);
        // SAFETY: 32 writable lanes of 2 bytes checked above.
        unsafe {
            // As `Avx2`'s: lane `j` of the first vector is lane `2j`.
            let even_lanes = _mm512_add_epi32(
                _mm512_set1_epi32(lane_lo as i32),
                _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
            );
            let odd_lanes = _mm512_add_epi32(even_lanes, _mm512_set1_epi32(1));
            let even_random = lane_bits_avx512(even_lanes, key);
            let odd_random = lane_bits_avx512(odd_lanes, key);
            let joined = if CLEAN {
                // No NaN: as `Avx2`'s, no select.
                let even = _mm512_add_epi32(_mm512_castps_si512(a.0), even_random);
                let odd = _mm512_add_epi32(_mm512_castps_si512(b.0), odd_random);
                _mm512_or_si512(
                    _mm512_srli_epi32::<16>(even),
                    _mm512_and_si512(odd, _mm512_set1_epi32(0xffff_0000_u32 as i32)),
                )
            } else {
                let even = bf16_stochastic_avx512(a.0, even_random);
                let odd = bf16_stochastic_avx512(b.0, odd_random);
                _mm512_or_si512(even, _mm512_slli_epi32::<16>(odd))
            };
            _mm512_storeu_si512(dst.as_mut_ptr().cast(), joined)
        }
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_f16(src: &[f16]) -> Self {
        assert!(src.len() >= 16);
        // SAFETY: 16 readable lanes of 2 bytes checked above.
        Avx512(unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().cast())) })
    }
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_f16(self, dst: &mut [f16]) {
        assert!(dst.len() >= 16);
        // SAFETY: as above, writing 16 lanes.
        unsafe {
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), h)
        }
    }
}

/// [`bf16_nearest`](super::generic::bf16_nearest) on 16 lanes (see
/// `bf16_nearest_avx2`).
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn bf16_nearest_avx512(x: __m512) -> __m512i {
    // SAFETY: AVX-512F by the caller's contract.
    unsafe {
        let bits = _mm512_castps_si512(x);
        let high = _mm512_srli_epi32::<16>(bits);
        let odd = _mm512_and_si512(high, _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
        let nan = _mm512_or_si512(high, _mm512_set1_epi32(0x0040));
        let is_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        _mm512_mask_blend_epi32(is_nan, rounded, nan)
    }
}

/// [`bf16_stochastic`](super::generic::bf16_stochastic) on 16 lanes (see
/// `bf16_stochastic_avx2`).
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn bf16_stochastic_avx512(x: __m512, random: __m512i) -> __m512i {
    // SAFETY: AVX-512F by the caller's contract.
    unsafe {
        let bits = _mm512_castps_si512(x);
        let up = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, random));
        let exponent = _mm512_set1_epi32(0x7f80_0000);
        let special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, exponent), exponent);
        _mm512_mask_blend_epi32(special, up, bf16_nearest_avx512(x))
    }
}

/// [`lane_bits`](super::generic::lane_bits) of 16 lane indices.
#[cfg(feature = "half")]
#[inline(always)]
unsafe fn lane_bits_avx512(lanes: __m512i, key: u32) -> __m512i {
    // SAFETY: AVX-512F by the caller's contract.
    unsafe {
        let mut x = _mm512_xor_si512(lanes, _mm512_set1_epi32(key as i32));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<16>(x));
        x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb_352d));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<15>(x));
        x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x846c_a68b_u32 as i32));
        x = _mm512_xor_si512(x, _mm512_srli_epi32::<16>(x));
        _mm512_srli_epi32::<16>(x)
    }
}

/// AVX2 + FMA: 8-lane vectors, 4-lane tails.
pub(crate) struct Avx2Fma;
impl_isa!(
    Avx2Fma,
    [target_feature(enable = "avx2,fma")],
    Avx2,
    Fma128,
    Fma128
);

/// AVX2 + FMA with F16C: the half-precision entry points.
#[cfg(feature = "half")]
pub(crate) struct Avx2FmaF16c;
#[cfg(feature = "half")]
impl_isa!(
    Avx2FmaF16c,
    [target_feature(enable = "avx2,fma,f16c")],
    Avx2,
    Fma128,
    Fma128
);

/// AVX-512F: 16-lane vectors, AVX2 + FMA tails.
pub(crate) struct Avx512F;
impl_isa!(
    Avx512F,
    [target_feature(enable = "avx512f,avx2,fma")],
    Avx512,
    Avx2,
    Fma128
);

/// AVX-512F with F16C: the half-precision entry points.
#[cfg(feature = "half")]
pub(crate) struct Avx512FF16c;
#[cfg(feature = "half")]
impl_isa!(
    Avx512FF16c,
    [target_feature(enable = "avx512f,avx2,fma,f16c")],
    Avx512,
    Avx2,
    Fma128
);

#[cfg(all(test, feature = "half"))]
mod tests {
    //! The bf16 pair stores against the scalar rounding, on bit patterns
    //! at every edge of it: the steps' property tests reach ties and
    //! carries only by chance.

    use super::super::generic::{F32Vector, bf16_nearest, bf16_stochastic, lane_bits};
    use super::super::select::{Avx2FmaToken, Avx512FToken};
    use super::{Avx2, Avx512};
    use half::bf16;
    use std::vec;
    use std::vec::Vec;

    /// f32 bit patterns: high halves at the ends of the binades, the
    /// largest finite values, infinities, zeros and subnormals, each with
    /// low halves around the tie (`0x8000`) and the carry (`0xffff`),
    /// then pseudo-random ones.
    fn patterns(nan: bool) -> Vec<u32> {
        let highs = [
            0x0000, 0x0001, 0x007f, 0x0080, 0x3f7f, 0x3f80, 0x3f81, 0x7f7e, 0x7f7f, 0x7f80, 0x8000,
            0x8001, 0x80ff, 0xbf80, 0xff7f, 0xff80,
        ];
        let lows = [
            0x0000, 0x0001, 0x4000, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xc000, 0xfffe, 0xffff,
        ];
        let mut out: Vec<u32> = highs
            .iter()
            .flat_map(|&h| lows.iter().map(move |&l| h << 16 | l))
            .collect();
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..512 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(x);
        }
        out.retain(|&b| nan || !f32::from_bits(b).is_nan());
        if nan {
            out.extend([
                0x7fc0_0000,
                0xffc0_0000,
                0x7f80_0001,
                0x7fff_ffff,
                0xff80_8000,
            ]);
        }
        out
    }

    /// Every pair store of `V` against the scalar rounding, lane `2j` of
    /// the pair in lane `j` of the first vector and lane `2j + 1` in the
    /// second, over `patterns` rotated so that each pattern takes every
    /// position.
    ///
    /// # Safety
    /// `V`'s instruction set is available.
    #[inline(always)]
    unsafe fn pair_stores_match<V: F32Vector>() {
        let n = V::LANES;
        for nan in [false, true] {
            let all = patterns(nan);
            for start in 0..all.len() {
                let lanes: Vec<f32> = (0..2 * n)
                    .map(|i| f32::from_bits(all[(start + i * 7) % all.len()]))
                    .collect();
                let even: Vec<f32> = lanes.iter().step_by(2).copied().collect();
                let odd: Vec<f32> = lanes.iter().skip(1).step_by(2).copied().collect();
                // SAFETY: the caller's guarantee; each buffer holds its lanes.
                let (a, b) = unsafe { (V::load(&even), V::load(&odd)) };
                let holds_nan = lanes.iter().any(|x| x.is_nan());
                // SAFETY: as above.
                assert_eq!(unsafe { V::any_nan([a, b]) }, holds_nan);
                let (key, lane_lo) = (0x1234_5678, start as u32 * 64);
                let near: Vec<u16> = lanes.iter().map(|&x| bf16_nearest(x)).collect();
                let sr: Vec<u16> = (0..2 * n)
                    .map(|i| bf16_stochastic(lanes[i], lane_bits(key, lane_lo + i as u32)))
                    .collect();
                let mut got = vec![bf16::ZERO; 2 * n];
                let bits = |got: &[bf16]| got.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                // SAFETY (the stores): as above.
                unsafe { V::store_bf16_pair::<false>(a, b, &mut got) };
                assert_eq!(bits(&got), near, "nearest, {lanes:?}");
                unsafe { V::store_bf16_pair_stochastic::<false>(a, b, &mut got, key, lane_lo) };
                assert_eq!(bits(&got), sr, "stochastic, {lanes:?}");
                if !holds_nan {
                    unsafe { V::store_bf16_pair::<true>(a, b, &mut got) };
                    assert_eq!(bits(&got), near, "nearest, no NaN, {lanes:?}");
                    unsafe { V::store_bf16_pair_stochastic::<true>(a, b, &mut got, key, lane_lo) };
                    assert_eq!(bits(&got), sr, "stochastic, no NaN, {lanes:?}");
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2() {
        // SAFETY: the caller's guarantee.
        unsafe { pair_stores_match::<Avx2>() }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512() {
        // SAFETY: the caller's guarantee.
        unsafe { pair_stores_match::<Avx512>() }
    }

    #[test]
    fn bf16_pair_stores_round_as_the_scalar_model() {
        if Avx2FmaToken::detect().is_some() {
            // SAFETY: AVX2 and FMA detected.
            unsafe { avx2() }
        }
        if Avx512FToken::detect().is_some() {
            // SAFETY: AVX-512F detected (with AVX2 and FMA).
            unsafe { avx512() }
        }
    }
}
