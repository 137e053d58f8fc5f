//! The vector trait and the one generic step body, written once and
//! instantiated per instruction set (by `x86_64.rs`, `aarch64.rs` and
//! `portable.rs`) and per configuration of the step (a [`Variant`] chosen
//! once per call by [`with_variant`]).
//!
//! Every instantiation performs exactly the operations of
//! [`reference::update_lane`](crate::reference::update_lane), in the same
//! order, with the same roundings, so each is bit-identical to it.

use crate::hyper::{Caution, Decay, StepConstants};
#[cfg(feature = "half")]
use half::{bf16, f16};

/// The widest vector any kernel uses, in f32 lanes (AVX-512).
pub(crate) const MAX_LANES: usize = 16;

/// How many lanes ahead the half-precision steps prefetch.
const PREFETCH_AHEAD: usize = 1024;

/// The half-precision steps prefetch at every multiple of this many lanes
/// (a multiple of every vector pair's lanes), each cache line of the block
/// once.
const PREFETCH_BLOCK: usize = 32;

/// Prefetches the cache lines of `PREFETCH_BLOCK` lanes from `from`
/// (which may be past the buffer's end: a prefetch never faults).
///
/// # Safety
///
/// As [`F32Vector::prefetch`].
#[inline(always)]
unsafe fn fetch<V: F32Vector, S>(from: *const S) {
    let bytes = PREFETCH_BLOCK * core::mem::size_of::<S>();
    let from = from.cast::<u8>();
    for line in (0..bytes).step_by(64) {
        // SAFETY: the caller's contract.
        unsafe { V::prefetch(from.wrapping_add(line)) }
    }
}

/// The operations the step needs from a vector of f32 lanes.
///
/// # Safety
///
/// Implementing the trait asserts, for every method:
///
/// - it computes, lane by lane, exactly what the scalar operation of the
///   same name in [`reference`](crate::reference) computes (the same
///   rounding; NaN where the reference has NaN, any NaN);
/// - loads read only the lanes of the slice they are given, and stores
///   write only the lanes of theirs: a whole vector's `LANES` first lanes
///   (the slice may be longer; shorter is a panic), a partial vector's
///   `src.len()` or `dst.len()` lanes, fewer than `LANES`;
/// - it executes instructions of one instruction set only, so it is sound
///   wherever that instruction set is present. Callers must call the
///   methods (and instantiate the generic body with the type) only where
///   the CPU supports it, which [`Isa`] and the tokens of
///   `kernel::select` guarantee.
pub(crate) unsafe trait F32Vector: Copy {
    /// Lanes per vector; at most [`MAX_LANES`].
    const LANES: usize;
    /// Loads `src[..LANES]`; panics if `src` is shorter.
    unsafe fn load(src: &[f32]) -> Self;
    /// Stores into `dst[..LANES]`; panics if `dst` is shorter.
    unsafe fn store(self, dst: &mut [f32]);
    /// Loads the `src.len() < LANES` lanes of a tail into the first lanes,
    /// zero in the others. ISAs override this copy where they can do
    /// better.
    #[inline(always)]
    unsafe fn load_partial(src: &[f32]) -> Self {
        let mut buf = [0.0_f32; MAX_LANES];
        buf[..src.len()].copy_from_slice(src);
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { Self::load(&buf) }
    }
    /// Stores the first `dst.len() < LANES` lanes into `dst`.
    #[inline(always)]
    unsafe fn store_partial(self, dst: &mut [f32]) {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        let n = dst.len();
        dst.copy_from_slice(&buf[..n]);
    }
    /// Loads `src[..LANES]` widened exactly to f32. ISAs override this
    /// per-lane conversion with shifts in registers.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16(src: &[bf16]) -> Self {
        let mut buf = [0.0_f32; MAX_LANES];
        for (d, s) in buf.iter_mut().zip(&src[..Self::LANES]) {
            *d = bf16_to_f32(s.to_bits());
        }
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { Self::load(&buf) }
    }
    /// Stores into `dst[..LANES]` rounded to nearest even as
    /// [`bf16_nearest`] rounds.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16(self, dst: &mut [bf16]) {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        for (d, &s) in dst[..Self::LANES].iter_mut().zip(&buf) {
            *d = bf16::from_bits(bf16_nearest(s));
        }
    }
    /// Stores into `dst[..LANES]` rounded stochastically as
    /// [`bf16_stochastic`] rounds, lane `i` with the random bits
    /// [`lane_bits`]`(key, lane_lo + i)` (`lane_lo + LANES - 1` does not
    /// overflow).
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_stochastic(self, dst: &mut [bf16], key: u32, lane_lo: u32) {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        for (i, (d, &s)) in dst[..Self::LANES].iter_mut().zip(&buf).enumerate() {
            let random = lane_bits(key, lane_lo + i as u32);
            *d = bf16::from_bits(bf16_stochastic(s, random));
        }
    }
    /// Whether [`load_bf16_pair`](Self::load_bf16_pair),
    /// [`store_bf16_pair`](Self::store_bf16_pair) and
    /// [`store_bf16_pair_stochastic`](Self::store_bf16_pair_stochastic) are
    /// cheaper than two vectors' loads and stores; they may then order the
    /// lanes differently from memory, so the step uses them only when
    /// every buffer is bf16 (the same order throughout).
    const BF16_PAIRS: bool = false;
    /// Loads `src[..2 * LANES]` widened exactly to f32, as two vectors in
    /// this ISA's pair order: a fixed permutation of the lanes, the same
    /// for every call, undone by [`store_bf16_pair`](Self::store_bf16_pair).
    /// In memory order (the first vector `src[..LANES]`) by default.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_bf16_pair(src: &[bf16]) -> (Self, Self) {
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { (Self::load_bf16(src), Self::load_bf16(&src[Self::LANES..])) }
    }
    /// Whether any lane of `vectors` is NaN: the test that lets every
    /// pair store of a step's lanes take [`store_bf16_pair`]'s
    /// `CLEAN` rounding (one test and branch for all of them, not one per
    /// store).
    ///
    /// [`store_bf16_pair`]: Self::store_bf16_pair
    #[inline(always)]
    unsafe fn any_nan<const N: usize>(vectors: [Self; N]) -> bool {
        let mut buf = [0.0_f32; MAX_LANES];
        vectors.iter().any(|x| {
            // SAFETY: the caller's guarantee of the ISA carries over.
            unsafe { x.store(&mut buf) };
            buf[..Self::LANES].iter().any(|x| x.is_nan())
        })
    }
    /// Stores two vectors in the pair order of
    /// [`load_bf16_pair`](Self::load_bf16_pair) into `dst[..2 * LANES]`,
    /// rounded to nearest even as [`bf16_nearest`] rounds. `CLEAN`: the
    /// caller has found no NaN in `a` or `b` ([`any_nan`](Self::any_nan)),
    /// so the rounding may leave out its NaN select.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair<const CLEAN: bool>(a: Self, b: Self, dst: &mut [bf16]) {
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe {
            a.store_bf16(dst);
            b.store_bf16(&mut dst[Self::LANES..]);
        }
    }
    /// Stores two vectors in the pair order of
    /// [`load_bf16_pair`](Self::load_bf16_pair) into `dst[..2 * LANES]`,
    /// rounded stochastically as
    /// [`store_bf16_stochastic`](Self::store_bf16_stochastic) rounds: the
    /// lane stored at `dst[i]` with the random bits
    /// [`lane_bits`]`(key, lane_lo + i)`, whichever vector held it
    /// (`lane_lo + 2 * LANES - 1` does not overflow). `CLEAN` as for
    /// [`store_bf16_pair`](Self::store_bf16_pair).
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_bf16_pair_stochastic<const CLEAN: bool>(
        a: Self,
        b: Self,
        dst: &mut [bf16],
        key: u32,
        lane_lo: u32,
    ) {
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe {
            a.store_bf16_stochastic(dst, key, lane_lo);
            b.store_bf16_stochastic(&mut dst[Self::LANES..], key, lane_lo + Self::LANES as u32);
        }
    }
    /// Loads `src[..LANES]` widened exactly to f32.
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn load_f16(src: &[f16]) -> Self {
        let mut buf = [0.0_f32; MAX_LANES];
        for (d, s) in buf.iter_mut().zip(&src[..Self::LANES]) {
            *d = s.to_f32();
        }
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { Self::load(&buf) }
    }
    /// Stores into `dst[..LANES]` rounded to nearest even (IEEE).
    #[cfg(feature = "half")]
    #[inline(always)]
    unsafe fn store_f16(self, dst: &mut [f16]) {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        for (d, &s) in dst[..Self::LANES].iter_mut().zip(&buf) {
            *d = f16::from_f32(s);
        }
    }
    unsafe fn splat(x: f32) -> Self;
    unsafe fn sub(self, rhs: Self) -> Self;
    unsafe fn mul(self, rhs: Self) -> Self;
    unsafe fn div(self, rhs: Self) -> Self;
    /// Correctly rounded square root.
    unsafe fn sqrt(self) -> Self;
    /// `self·b + c` with one rounding.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self < floor ? floor : self`, lane by lane, as
    /// [`reference::max_keep_nan`](crate::reference::max_keep_nan): keeps
    /// a NaN `self`, and `self` on ties (`-0.0` against `0.0`).
    unsafe fn max_keep_nan(self, floor: Self) -> Self;
    /// `self > hi ? hi : self`, lane by lane (keeps a NaN `self`, and
    /// `self` on ties).
    unsafe fn min_keep_nan(self, hi: Self) -> Self;
    /// `self > 0 ? then : +0.0`, lane by lane (NaN selects `+0.0`).
    unsafe fn positive_select(self, then: Self) -> Self;
    /// A hint to fetch the cache line at `p` (any address: it is never
    /// dereferenced); nothing by default.
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
    /// How many of the first `n` lanes are `> 0` (NaN does not count).
    #[inline(always)]
    unsafe fn count_positive(self, n: usize) -> u32 {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        buf[..n].iter().filter(|&&x| x > 0.0).count() as u32
    }
}

/// bf16 bits widened exactly to f32.
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// An f32 rounded to the nearest bf16, ties to even; NaN stays NaN
/// (quieted), as `half` rounds.
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn bf16_nearest(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let nan = (bits >> 16) as u16 | 0x0040;
    if x.is_nan() { nan } else { rounded as u16 }
}

/// An f32 rounded to bf16 stochastically: adds 16 random bits below the
/// bf16 mantissa and truncates, so it rounds up with probability equal to
/// the discarded fraction (unbiased). NaN and ±inf round as to nearest; a
/// carry into the exponent rounds up to the next binade, or to inf past
/// the largest bf16, as rounding up should.
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn bf16_stochastic(x: f32, random: u16) -> u16 {
    if !x.is_finite() {
        return bf16_nearest(x);
    }
    (x.to_bits().wrapping_add(u32::from(random)) >> 16) as u16
}

/// The key of a random stream: SplitMix64 of (seed, step, the high half of
/// the lane index).
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn stream_key(seed: u64, step: u64, lane_hi: u64) -> u32 {
    let mut z = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ lane_hi.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// 16 random bits for a lane of a stream: a 32-bit integer hash (a
/// bijection, so distinct lanes of a stream never share an input) of the
/// low half of the lane index and the key. ISAs vectorise exactly this.
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn lane_bits(key: u32, lane_lo: u32) -> u16 {
    let mut x = lane_lo ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    (x >> 16) as u16
}

/// The random bits of lane `lane` of the stream of `(seed, step)`: what
/// stochastic rounding of that lane uses, wherever the lane is stepped.
#[cfg(feature = "half")]
#[inline(always)]
pub(crate) fn random_bits(seed: u64, step: u64, lane: u64) -> u16 {
    lane_bits(stream_key(seed, step, lane >> 32), lane as u32)
}

/// A storage type of lanes: `f32`, and with the `half` feature `bf16` and
/// `f16`, each loaded into and stored from vectors in registers.
///
/// # Safety
///
/// The methods call [`F32Vector`] methods: the caller guarantees `V`'s
/// instruction set, as for those. Loads and stores touch only the lanes
/// they are given (as [`F32Vector`] states).
#[cfg_attr(not(feature = "half"), allow(dead_code))]
pub(crate) unsafe trait Storage: Copy + Send + Sync + 'static {
    /// The value a partial vector's other lanes are padded with.
    const PAD: Self;
    /// Whether the type is `f32`.
    const F32: bool;
    /// Whether the type is `bf16` (then its pair loads and stores are the
    /// vector's bf16 ones, in the vector's pair order).
    const BF16: bool = false;
    /// Rounds one lane to nearest even.
    fn nearest(x: f32) -> Self;
    /// Rounds one lane stochastically with 16 random bits (bf16; the
    /// others round to nearest).
    #[inline(always)]
    fn stochastic(x: f32, _random: u16) -> Self {
        Self::nearest(x)
    }
    /// Loads `src[..V::LANES]`, widened.
    unsafe fn load<V: F32Vector>(src: &[Self]) -> V;
    /// Stores `dst[..V::LANES]`, rounded to nearest even.
    unsafe fn store<V: F32Vector>(x: V, dst: &mut [Self]);
    /// Stores `dst[..V::LANES]` rounded stochastically (see
    /// [`F32Vector::store_bf16_stochastic`]); nearest for all but bf16.
    #[inline(always)]
    unsafe fn store_stochastic<V: F32Vector>(x: V, dst: &mut [Self], _key: u32, _lane_lo: u32) {
        // SAFETY: the caller's guarantee.
        unsafe { Self::store(x, dst) }
    }
    /// Loads `src[..2 * V::LANES]` as two vectors: in memory order, but
    /// for bf16 in `V`'s pair order (see [`F32Vector::BF16_PAIRS`]).
    #[inline(always)]
    unsafe fn load_pair<V: F32Vector>(src: &[Self]) -> (V, V) {
        // SAFETY: the caller's guarantee.
        unsafe { (Self::load(src), Self::load(&src[V::LANES..])) }
    }
    /// Stores two vectors of [`load_pair`](Self::load_pair)'s order into
    /// `dst[..2 * V::LANES]`, rounded to nearest even (`CLEAN`: neither
    /// holds a NaN, see [`F32Vector::store_bf16_pair`]).
    #[inline(always)]
    unsafe fn store_pair<V: F32Vector, const CLEAN: bool>(a: V, b: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe {
            Self::store(a, dst);
            Self::store(b, &mut dst[V::LANES..]);
        }
    }
    /// Stores two vectors of [`load_pair`](Self::load_pair)'s order into
    /// `dst[..2 * V::LANES]` rounded stochastically, the lane stored at
    /// `dst[i]` with the random bits of lane `lane_lo + i` (see
    /// [`F32Vector::store_bf16_pair_stochastic`]); nearest for all but
    /// bf16. `CLEAN` as for [`store_pair`](Self::store_pair).
    #[inline(always)]
    unsafe fn store_pair_stochastic<V: F32Vector, const CLEAN: bool>(
        a: V,
        b: V,
        dst: &mut [Self],
        key: u32,
        lane_lo: u32,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe {
            Self::store_stochastic(a, dst, key, lane_lo);
            Self::store_stochastic(b, &mut dst[V::LANES..], key, lane_lo + V::LANES as u32);
        }
    }
    /// Loads the `src.len() < V::LANES` lanes of a tail (the others zero).
    #[inline(always)]
    unsafe fn load_partial<V: F32Vector>(src: &[Self]) -> V {
        let mut buf = [Self::PAD; MAX_LANES];
        buf[..src.len()].copy_from_slice(src);
        // SAFETY: the caller's guarantee.
        unsafe { Self::load(&buf) }
    }
    /// Stores the first `dst.len() < V::LANES` lanes, rounded to nearest.
    #[inline(always)]
    unsafe fn store_partial<V: F32Vector>(x: V, dst: &mut [Self]) {
        let mut buf = [Self::PAD; MAX_LANES];
        // SAFETY: the caller's guarantee.
        unsafe { Self::store(x, &mut buf) };
        let n = dst.len();
        dst.copy_from_slice(&buf[..n]);
    }
}

// SAFETY: each method is the vector's own load or store.
unsafe impl Storage for f32 {
    const PAD: Self = 0.0;
    const F32: bool = true;
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn load<V: F32Vector>(src: &[Self]) -> V {
        // SAFETY: the caller's guarantee.
        unsafe { V::load(src) }
    }
    #[inline(always)]
    unsafe fn store<V: F32Vector>(x: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe { x.store(dst) }
    }
    #[inline(always)]
    unsafe fn load_partial<V: F32Vector>(src: &[Self]) -> V {
        // SAFETY: the caller's guarantee.
        unsafe { V::load_partial(src) }
    }
    #[inline(always)]
    unsafe fn store_partial<V: F32Vector>(x: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe { x.store_partial(dst) }
    }
}

// SAFETY: each method is the vector's bf16 load or store.
#[cfg(feature = "half")]
unsafe impl Storage for bf16 {
    const PAD: Self = bf16::ZERO;
    const F32: bool = false;
    const BF16: bool = true;
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        bf16::from_bits(bf16_nearest(x))
    }
    #[inline(always)]
    fn stochastic(x: f32, random: u16) -> Self {
        bf16::from_bits(bf16_stochastic(x, random))
    }
    #[inline(always)]
    unsafe fn load<V: F32Vector>(src: &[Self]) -> V {
        // SAFETY: the caller's guarantee.
        unsafe { V::load_bf16(src) }
    }
    #[inline(always)]
    unsafe fn store<V: F32Vector>(x: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe { x.store_bf16(dst) }
    }
    #[inline(always)]
    unsafe fn store_stochastic<V: F32Vector>(x: V, dst: &mut [Self], key: u32, lane_lo: u32) {
        // SAFETY: the caller's guarantee.
        unsafe { x.store_bf16_stochastic(dst, key, lane_lo) }
    }
    #[inline(always)]
    unsafe fn load_pair<V: F32Vector>(src: &[Self]) -> (V, V) {
        // SAFETY: the caller's guarantee.
        unsafe { V::load_bf16_pair(src) }
    }
    #[inline(always)]
    unsafe fn store_pair<V: F32Vector, const CLEAN: bool>(a: V, b: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe { V::store_bf16_pair::<CLEAN>(a, b, dst) }
    }
    #[inline(always)]
    unsafe fn store_pair_stochastic<V: F32Vector, const CLEAN: bool>(
        a: V,
        b: V,
        dst: &mut [Self],
        key: u32,
        lane_lo: u32,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe { V::store_bf16_pair_stochastic::<CLEAN>(a, b, dst, key, lane_lo) }
    }
}

// SAFETY: each method is the vector's f16 load or store.
#[cfg(feature = "half")]
unsafe impl Storage for f16 {
    const PAD: Self = f16::ZERO;
    const F32: bool = false;
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    unsafe fn load<V: F32Vector>(src: &[Self]) -> V {
        // SAFETY: the caller's guarantee.
        unsafe { V::load_f16(src) }
    }
    #[inline(always)]
    unsafe fn store<V: F32Vector>(x: V, dst: &mut [Self]) {
        // SAFETY: the caller's guarantee.
        unsafe { x.store_f16(dst) }
    }
}

/// How the parameters' new values are rounded into their storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// To nearest, ties to even.
    Nearest,
    /// Stochastically (bf16 only; others to nearest), from the random bits
    /// of [`random_bits`]`(seed, k.step, lane)`.
    #[cfg(feature = "half")]
    Stochastic {
        /// Chooses the random stream.
        seed: u64,
    },
}

/// Which work a step's body does, fixed at compile time per instantiation
/// or read from [`StepConstants`] at run time ([`DYNAMIC`]).
///
/// Each constant is one of the values documented on it.
pub(crate) trait Variant {
    /// Multiplies each gradient by `±inv_scale` (mixed-precision
    /// unscaling and `maximize`): [`NO`], [`YES`] or [`DYNAMIC`].
    const SCALED: u8;
    /// The decay: [`DECAY_NONE`], [`DECAY_L2`], [`DECAY_DECOUPLED`] or
    /// [`DYNAMIC`].
    const DECAY: u8;
    /// The lerp's second form ([`StepConstants::lerp_from_end`]).
    const LERP_FROM_END: u8;
    /// Nesterov momentum.
    const NESTEROV: u8;
    /// The cautious mask: [`CAUTION_OFF`] (no mask), [`CAUTION_GRAD`]
    /// (`u·g`), [`CAUTION_NORMED`] (`u·ĝ`) or [`DYNAMIC`].
    const CAUTION: u8;
}

pub(crate) const NO: u8 = 0;
pub(crate) const YES: u8 = 1;
pub(crate) const DYNAMIC: u8 = u8::MAX;
pub(crate) const DECAY_NONE: u8 = 0;
pub(crate) const DECAY_L2: u8 = 1;
pub(crate) const DECAY_DECOUPLED: u8 = 2;
pub(crate) const CAUTION_OFF: u8 = 0;
pub(crate) const CAUTION_GRAD: u8 = 1;
pub(crate) const CAUTION_NORMED: u8 = 2;

/// A [`Variant`] of constants.
pub(crate) struct Fixed<
    const SCALED: u8,
    const DECAY: u8,
    const LERP_FROM_END: u8,
    const NESTEROV: u8,
    const CAUTION: u8,
>;

impl<const S: u8, const D: u8, const L: u8, const N: u8, const C: u8> Variant
    for Fixed<S, D, L, N, C>
{
    const SCALED: u8 = S;
    const DECAY: u8 = D;
    const LERP_FROM_END: u8 = L;
    const NESTEROV: u8 = N;
    const CAUTION: u8 = C;
}

/// Every choice read at run time: one instantiation for every
/// configuration (the batched f32 steps, and the half-precision steps
/// other than their [`TypedVariant`]s).
pub(crate) type Dynamic = Fixed<DYNAMIC, DYNAMIC, DYNAMIC, DYNAMIC, DYNAMIC>;

/// The values of a step's [`Variant`] constants at run time.
#[derive(Clone, Copy)]
struct Choices {
    scaled: u8,
    decay: u8,
    lerp_from_end: u8,
    nesterov: u8,
    caution: u8,
}

impl Choices {
    #[inline(always)]
    fn of(k: &StepConstants) -> Choices {
        let first = k.step == 0;
        Choices {
            scaled: u8::from(k.inv_scale != 1.0 || k.maximize),
            decay: match k.decay {
                Decay::None => DECAY_NONE,
                Decay::L2(_) => DECAY_L2,
                Decay::Decoupled(_) => DECAY_DECOUPLED,
            },
            // The first step uses none of the three below: one
            // instantiation serves it whatever they are.
            lerp_from_end: u8::from(k.lerp_from_end && !first),
            nesterov: u8::from(k.nesterov && !first),
            caution: match (k.caution_scale, k.caution) {
                _ if first => CAUTION_OFF,
                (None, _) => CAUTION_OFF,
                (Some(_), Caution::PytorchOptimizer) => CAUTION_NORMED,
                (Some(_), Caution::Off | Caution::Timm) => CAUTION_GRAD,
            },
        }
    }

    /// The run-time value of one of `O`'s constants.
    #[inline(always)]
    fn pick(fixed: u8, dynamic: u8) -> u8 {
        if fixed == DYNAMIC { dynamic } else { fixed }
    }
}

/// A call to make with the [`Variant`] a step's constants select.
pub(crate) trait WithVariant {
    /// What the call returns.
    type Output;
    /// Makes the call with `O`.
    fn call<O: Variant>(self) -> Self::Output;
}

/// Calls `f` with the [`Fixed`] variant `k` selects: the one place that
/// chooses among the 6 first-step and 72 later-step instantiations.
#[inline(always)]
pub(crate) fn with_variant<F: WithVariant>(k: &StepConstants, f: F) -> F::Output {
    let c = Choices::of(k);
    // Each level fixes one constant and hands the rest down.
    match (c.scaled, c.decay) {
        (NO, DECAY_NONE) => lerp::<F, NO, DECAY_NONE>(c, f),
        (NO, DECAY_L2) => lerp::<F, NO, DECAY_L2>(c, f),
        (NO, _) => lerp::<F, NO, DECAY_DECOUPLED>(c, f),
        (_, DECAY_NONE) => lerp::<F, YES, DECAY_NONE>(c, f),
        (_, DECAY_L2) => lerp::<F, YES, DECAY_L2>(c, f),
        (_, _) => lerp::<F, YES, DECAY_DECOUPLED>(c, f),
    }
}

#[inline(always)]
fn lerp<F: WithVariant, const S: u8, const D: u8>(c: Choices, f: F) -> F::Output {
    match (c.lerp_from_end, c.nesterov) {
        (NO, NO) => caution::<F, S, D, NO, NO>(c, f),
        (NO, _) => caution::<F, S, D, NO, YES>(c, f),
        (_, NO) => caution::<F, S, D, YES, NO>(c, f),
        (_, _) => caution::<F, S, D, YES, YES>(c, f),
    }
}

#[inline(always)]
fn caution<F: WithVariant, const S: u8, const D: u8, const L: u8, const N: u8>(
    c: Choices,
    f: F,
) -> F::Output {
    match c.caution {
        CAUTION_OFF => f.call::<Fixed<S, D, L, N, CAUTION_OFF>>(),
        CAUTION_GRAD => f.call::<Fixed<S, D, L, N, CAUTION_GRAD>>(),
        _ => f.call::<Fixed<S, D, L, N, CAUTION_NORMED>>(),
    }
}

/// The half-precision steps' variants: which one of the few [`Fixed`]
/// instantiations the storage-generic step has serves `k`, the rest
/// going to [`Dynamic`].
#[cfg(feature = "half")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypedVariant {
    /// Nothing but the update: no scaling, no decay, the lerp's first
    /// form, no Nesterov, no caution.
    Plain,
    /// [`TypedVariant::Plain`] with decoupled decay.
    Decoupled,
    /// Anything else, read at run time.
    Dynamic,
}

#[cfg(feature = "half")]
impl TypedVariant {
    /// The variant that serves `k` (the first step included).
    #[inline(always)]
    pub(crate) fn of(k: &StepConstants) -> TypedVariant {
        let c = Choices::of(k);
        let plain =
            c.scaled == NO && c.lerp_from_end == NO && c.nesterov == NO && c.caution == CAUTION_OFF;
        match c.decay {
            DECAY_NONE if plain => TypedVariant::Plain,
            DECAY_DECOUPLED if plain => TypedVariant::Decoupled,
            _ => TypedVariant::Dynamic,
        }
    }
}

/// [`TypedVariant::Plain`].
#[cfg(feature = "half")]
pub(crate) type TypedPlain = Fixed<NO, DECAY_NONE, NO, NO, CAUTION_OFF>;
/// [`TypedVariant::Decoupled`].
#[cfg(feature = "half")]
pub(crate) type TypedDecoupled = Fixed<NO, DECAY_DECOUPLED, NO, NO, CAUTION_OFF>;

/// The step constants splatted into vectors once per call.
struct Splat<V> {
    grad_scale: V,
    eps: V,
    neg_clip: V,
    clip: V,
    one_minus_beta1: V,
    lerp_factor: V,
    beta1: V,
    caution_scale: V,
    neg_lr: V,
    beta2: V,
    one_minus_beta2: V,
    decay: V,
}

/// The run-time choices of variant `O` for the constants `k`.
struct Plan {
    scaled: bool,
    decay: u8,
    lerp_from_end: bool,
    nesterov: bool,
    caution: u8,
}

impl Plan {
    #[inline(always)]
    fn of<O: Variant>(k: &StepConstants) -> Plan {
        let c = Choices::of(k);
        Plan {
            scaled: Choices::pick(O::SCALED, c.scaled) == YES,
            decay: Choices::pick(O::DECAY, c.decay),
            lerp_from_end: Choices::pick(O::LERP_FROM_END, c.lerp_from_end) == YES,
            nesterov: Choices::pick(O::NESTEROV, c.nesterov) == YES,
            caution: Choices::pick(O::CAUTION, c.caution),
        }
    }
}

// In the functions below, every `unsafe` operation is a method of
// `F32Vector` or `Storage`: their callers guarantee its instruction set
// (the contract of `step_body`), so each `unsafe` block inherits that
// guarantee.

impl<V: F32Vector> Splat<V> {
    #[inline(always)]
    unsafe fn new(k: &StepConstants) -> Self {
        let decay = match k.decay {
            Decay::None => 0.0,
            Decay::L2(wd) => wd,
            Decay::Decoupled(neg_lr_wd) => neg_lr_wd,
        };
        // `-(g·s)` and `g·(-s)` are the same number: negation is exact
        // and the rounding of a product is symmetric in sign.
        let grad_scale = if k.maximize {
            -k.inv_scale
        } else {
            k.inv_scale
        };
        // SAFETY: see the note above.
        unsafe {
            Splat {
                grad_scale: V::splat(grad_scale),
                eps: V::splat(k.eps),
                neg_clip: V::splat(-k.clip),
                clip: V::splat(k.clip),
                one_minus_beta1: V::splat(k.one_minus_beta1),
                lerp_factor: V::splat(k.lerp_factor),
                beta1: V::splat(k.beta1),
                caution_scale: V::splat(k.caution_scale.unwrap_or(0.0)),
                neg_lr: V::splat(k.neg_lr),
                beta2: V::splat(k.beta2),
                one_minus_beta2: V::splat(k.one_minus_beta2),
                decay: V::splat(decay),
            }
        }
    }
}

/// A whole vector, or (`PARTIAL`) the tail of fewer lanes.
#[inline(always)]
unsafe fn load<V: F32Vector, S: Storage, const PARTIAL: bool>(src: &[S]) -> V {
    // SAFETY: see the note above.
    unsafe {
        if PARTIAL {
            S::load_partial(src)
        } else {
            S::load(src)
        }
    }
}

#[inline(always)]
unsafe fn store<V: F32Vector, S: Storage, const PARTIAL: bool>(x: V, dst: &mut [S]) {
    // SAFETY: see the note above.
    unsafe {
        if PARTIAL {
            S::store_partial(x, dst)
        } else {
            S::store(x, dst)
        }
    }
}

/// Where a step's new parameter values go: the parameters themselves,
/// rounded as [`Round`] says, and optionally a rounded copy (the
/// parameters of an f32 master copy).
pub(crate) trait Params {
    /// The parameters' storage.
    type P: Storage;
    /// The parameters.
    fn params(&mut self) -> &mut [Self::P];
    /// Lanes `..mid` and `mid..`, each knowing its first lane's index.
    #[cfg(feature = "half")]
    fn split_at(self, mid: usize) -> (Self, Self)
    where
        Self: Sized;
    /// Whether any store rounds stochastically (a bf16 or f16 destination
    /// with [`Round::Stochastic`]); when false the step's main loop is the
    /// one compiled for nearest rounding alone.
    fn stochastic(&self) -> bool;
    /// Stores the new values of lanes `at..at + x's lanes` (`dst` is those
    /// lanes of the parameters); `moved` is false where the step leaves the
    /// parameters as they are (a first step without decay). `NEAREST`
    /// rounds to nearest whatever the rounding is (the caller knows
    /// [`Params::stochastic`] is false).
    ///
    /// # Safety
    ///
    /// As [`Storage`]'s methods.
    unsafe fn put<V: F32Vector, const PARTIAL: bool, const NEAREST: bool>(
        &mut self,
        x: V,
        at: usize,
        moved: bool,
        k: &StepConstants,
    );
    /// Stores the new values of lanes `at..at + 2 * V::LANES` of a step
    /// after the first, two vectors in [`Storage::load_pair`]'s order,
    /// rounded as [`put`](Self::put) rounds (`NEAREST` likewise; `CLEAN`
    /// as for [`Storage::store_pair`]). Unless `NEAREST`,
    /// [`pair_fits`](Self::pair_fits) holds for those lanes.
    ///
    /// # Safety
    ///
    /// As [`Storage`]'s methods.
    #[inline(always)]
    unsafe fn put_pair<V: F32Vector, const NEAREST: bool, const CLEAN: bool>(
        &mut self,
        a: V,
        b: V,
        at: usize,
        k: &StepConstants,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe {
            self.put::<V, false, NEAREST>(a, at, true, k);
            self.put::<V, false, NEAREST>(b, at + V::LANES, true, k);
        }
    }
    /// Whether [`put_pair`](Self::put_pair) may round lanes
    /// `at..at + lanes` stochastically as pairs: their indices in the
    /// tensor share the high half that selects their random stream.
    #[inline(always)]
    fn pair_fits(&self, _at: usize, _lanes: usize) -> bool {
        true
    }
}

/// The parameters alone, rounded with `round`, the first of them lane
/// `first_lane` of the whole tensor (for stochastic rounding).
pub(crate) struct Plain<'a, P> {
    pub(crate) p: &'a mut [P],
    pub(crate) round: Round,
    pub(crate) first_lane: u64,
}

/// Stores `x` into `dst` (lanes from `lane` of the tensor) rounded as
/// `round` says.
#[inline(always)]
unsafe fn put_rounded<V: F32Vector, S: Storage, const PARTIAL: bool>(
    x: V,
    dst: &mut [S],
    round: Round,
    lane: u64,
    step: u64,
) {
    #[cfg(not(feature = "half"))]
    let _ = (lane, step);
    // SAFETY: see the note above.
    unsafe {
        match round {
            #[cfg(feature = "half")]
            Round::Stochastic { seed } if !S::F32 => {
                let lo = lane as u32;
                if !PARTIAL && lo.checked_add(V::LANES as u32 - 1).is_some() {
                    let key = stream_key(seed, step, lane >> 32);
                    S::store_stochastic(x, dst, key, lo);
                } else {
                    // A tail, or a vector whose lanes cross a change of
                    // the lane index's high half: lane by lane.
                    let mut buf = [0.0_f32; MAX_LANES];
                    x.store(&mut buf);
                    let n = if PARTIAL { dst.len() } else { V::LANES };
                    for (i, (d, &s)) in dst[..n].iter_mut().zip(&buf).enumerate() {
                        *d = S::stochastic(s, random_bits(seed, step, lane + i as u64));
                    }
                }
            }
            _ => store::<V, S, PARTIAL>(x, dst),
        }
    }
}

impl<P: Storage> Params for Plain<'_, P> {
    type P = P;
    #[inline(always)]
    fn params(&mut self) -> &mut [P] {
        self.p
    }
    #[cfg(feature = "half")]
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, b) = self.p.split_at_mut(mid);
        let (round, first_lane) = (self.round, self.first_lane);
        let rest = first_lane + mid as u64;
        (
            Plain {
                p: a,
                round,
                first_lane,
            },
            Plain {
                p: b,
                round,
                first_lane: rest,
            },
        )
    }
    #[inline(always)]
    fn stochastic(&self) -> bool {
        !P::F32 && self.round != Round::Nearest
    }
    #[inline(always)]
    unsafe fn put<V: F32Vector, const PARTIAL: bool, const NEAREST: bool>(
        &mut self,
        x: V,
        at: usize,
        moved: bool,
        k: &StepConstants,
    ) {
        if !moved {
            return;
        }
        let lane = self.first_lane + at as u64;
        let round = if NEAREST { Round::Nearest } else { self.round };
        // SAFETY: see the note above.
        unsafe { put_rounded::<V, P, PARTIAL>(x, &mut self.p[at..], round, lane, k.step) }
    }
    #[inline(always)]
    unsafe fn put_pair<V: F32Vector, const NEAREST: bool, const CLEAN: bool>(
        &mut self,
        a: V,
        b: V,
        at: usize,
        k: &StepConstants,
    ) {
        #[cfg(not(feature = "half"))]
        let _ = k;
        let dst = &mut self.p[at..];
        // SAFETY: see the note above.
        unsafe {
            match self.round {
                #[cfg(feature = "half")]
                Round::Stochastic { seed } if !NEAREST && !P::F32 => {
                    let lane = self.first_lane + at as u64;
                    let key = stream_key(seed, k.step, lane >> 32);
                    P::store_pair_stochastic::<V, CLEAN>(a, b, dst, key, lane as u32);
                }
                _ => P::store_pair::<V, CLEAN>(a, b, dst),
            }
        }
    }
    #[inline(always)]
    fn pair_fits(&self, at: usize, lanes: usize) -> bool {
        let lo = (self.first_lane + at as u64) as u32;
        lo.checked_add(lanes as u32 - 1).is_some()
    }
}

/// An f32 master copy stepped in place, and the parameters rounded from it
/// on every step (the first included).
#[cfg(feature = "half")]
pub(crate) struct Master<'a, C> {
    pub(crate) master: &'a mut [f32],
    pub(crate) copy: &'a mut [C],
    pub(crate) round: Round,
    pub(crate) first_lane: u64,
}

#[cfg(feature = "half")]
impl<C: Storage> Params for Master<'_, C> {
    type P = f32;
    #[inline(always)]
    fn params(&mut self) -> &mut [f32] {
        self.master
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (m0, m1) = self.master.split_at_mut(mid);
        let (c0, c1) = self.copy.split_at_mut(mid);
        let (round, first_lane) = (self.round, self.first_lane);
        let rest = first_lane + mid as u64;
        (
            Master {
                master: m0,
                copy: c0,
                round,
                first_lane,
            },
            Master {
                master: m1,
                copy: c1,
                round,
                first_lane: rest,
            },
        )
    }
    #[inline(always)]
    fn stochastic(&self) -> bool {
        !C::F32 && self.round != Round::Nearest
    }
    #[inline(always)]
    unsafe fn put<V: F32Vector, const PARTIAL: bool, const NEAREST: bool>(
        &mut self,
        x: V,
        at: usize,
        moved: bool,
        k: &StepConstants,
    ) {
        let lane = self.first_lane + at as u64;
        let round = if NEAREST { Round::Nearest } else { self.round };
        // SAFETY: see the note above.
        unsafe {
            if moved {
                store::<V, f32, PARTIAL>(x, &mut self.master[at..]);
            }
            put_rounded::<V, C, PARTIAL>(x, &mut self.copy[at..], round, lane, k.step);
        }
    }
}

/// The gradient as the step sees it: unscaled and negated if maximising
/// (one multiply by `±inv_scale`), plus the L2 term.
#[inline(always)]
unsafe fn effective_grad<V: F32Vector>(p: V, grad: V, plan: &Plan, s: &Splat<V>) -> V {
    // SAFETY: see the note above.
    unsafe {
        let g = if plan.scaled {
            grad.mul(s.grad_scale)
        } else {
            grad
        };
        if plan.decay == DECAY_L2 {
            s.decay.mul_add(p, g)
        } else {
            g
        }
    }
}

/// The new first moment, the update direction `u` (before cautious
/// masking) and the normalised, clipped gradient `ĝ` of a step after the
/// first: `(m, u, ĝ)`.
#[inline(always)]
unsafe fn moment_and_direction<V: F32Vector>(
    g: V,
    mv: V,
    vv: V,
    plan: &Plan,
    s: &Splat<V>,
) -> (V, V, V) {
    // SAFETY: see the note above.
    unsafe {
        let denom = vv.sqrt().max_keep_nan(s.eps);
        let normed = g.div(denom).max_keep_nan(s.neg_clip).min_keep_nan(s.clip);
        // torch's two-form lerp (see `reference::lerp`).
        let start = if plan.lerp_from_end { normed } else { mv };
        let mv = s.lerp_factor.mul_add(normed.sub(mv), start);
        let u = if plan.nesterov {
            s.beta1.mul_add(mv, s.one_minus_beta1.mul(normed))
        } else {
            mv
        };
        (mv, u, normed)
    }
}

/// The product whose sign decides the cautious mask: `u·g` (timm) or
/// `u·ĝ` (pytorch-optimizer).
#[inline(always)]
unsafe fn caution_product<V: F32Vector>(u: V, g: V, normed: V, plan: &Plan) -> V {
    // SAFETY: see the note above.
    unsafe {
        if plan.caution == CAUTION_NORMED {
            u.mul(normed)
        } else {
            u.mul(g)
        }
    }
}

/// One vector of lanes at `at` of a step after the first.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn update<
    V: F32Vector,
    X: Params,
    G: Storage,
    M: Storage,
    W: Storage,
    const PARTIAL: bool,
    const NEAREST: bool,
>(
    out: &mut X,
    grad: &[G],
    m: &mut [M],
    v: &mut [W],
    at: usize,
    k: &StepConstants,
    plan: &Plan,
    s: &Splat<V>,
) {
    // SAFETY: see the note above.
    unsafe {
        let pv = load::<V, X::P, PARTIAL>(&out.params()[at..]);
        let gv = load::<V, G, PARTIAL>(&grad[at..]);
        let (mv, vv) = (
            load::<V, M, PARTIAL>(&m[at..]),
            load::<V, W, PARTIAL>(&v[at..]),
        );
        let (pv, mv, vv) = advance(pv, gv, mv, vv, plan, s);
        out.put::<V, PARTIAL, NEAREST>(pv, at, true, k);
        store::<V, M, PARTIAL>(mv, &mut m[at..]);
        store::<V, W, PARTIAL>(vv, &mut v[at..]);
    }
}

/// The arithmetic of a step after the first on one vector: the new
/// `(p, m, v)` from the loaded `p`, gradient, `m` and `v`.
#[inline(always)]
unsafe fn advance<V: F32Vector>(
    pv: V,
    grad: V,
    mv: V,
    vv: V,
    plan: &Plan,
    s: &Splat<V>,
) -> (V, V, V) {
    // SAFETY: see the note above.
    unsafe {
        let mut pv = pv;
        let g = effective_grad(pv, grad, plan, s);
        if plan.decay == DECAY_DECOUPLED {
            pv = s.decay.mul_add(pv, pv);
        }
        let (mv, mut u, normed) = moment_and_direction(g, mv, vv, plan, s);
        if plan.caution != CAUTION_OFF {
            let agree = caution_product(u, g, normed, plan);
            u = u.mul(agree.positive_select(s.caution_scale));
        }
        pv = s.neg_lr.mul_add(u, pv);
        let vv = s.one_minus_beta2.mul(g).mul_add(g, s.beta2.mul(vv));
        (pv, mv, vv)
    }
}

/// Two vectors of lanes at `at` of a step after the first, every buffer
/// loaded and stored as a pair ([`Storage::load_pair`]; `NEAREST` as
/// [`Params::put_pair`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn update_pair<
    V: F32Vector,
    X: Params,
    G: Storage,
    M: Storage,
    W: Storage,
    const NEAREST: bool,
>(
    out: &mut X,
    grad: &[G],
    m: &mut [M],
    v: &mut [W],
    at: usize,
    k: &StepConstants,
    plan: &Plan,
    s: &Splat<V>,
) {
    // SAFETY: see the note above.
    unsafe {
        let (p0, p1) = X::P::load_pair::<V>(&out.params()[at..]);
        let (g0, g1) = G::load_pair::<V>(&grad[at..]);
        let (m0, m1) = M::load_pair::<V>(&m[at..]);
        let (v0, v1) = W::load_pair::<V>(&v[at..]);
        let (p0, m0, v0) = advance(p0, g0, m0, v0, plan, s);
        let (p1, m1, v1) = advance(p1, g1, m1, v1, plan, s);
        // One NaN test for the six vectors, and one branch: a test per
        // store cost a fifth of the all-bf16 step's time on AVX2.
        let (p, mv, vv) = ((p0, p1), (m0, m1), (v0, v1));
        if V::any_nan([p0, p1, m0, m1, v0, v1]) {
            put_pairs::<V, X, M, W, NEAREST, false>(out, m, v, at, k, p, mv, vv);
        } else {
            put_pairs::<V, X, M, W, NEAREST, true>(out, m, v, at, k, p, mv, vv);
        }
    }
}

/// The stores of [`update_pair`] (`CLEAN`: none of the vectors holds a
/// NaN, see [`Storage::store_pair`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn put_pairs<
    V: F32Vector,
    X: Params,
    M: Storage,
    W: Storage,
    const NEAREST: bool,
    const CLEAN: bool,
>(
    out: &mut X,
    m: &mut [M],
    v: &mut [W],
    at: usize,
    k: &StepConstants,
    p: (V, V),
    mv: (V, V),
    vv: (V, V),
) {
    // SAFETY: see the note above.
    unsafe {
        out.put_pair::<V, NEAREST, CLEAN>(p.0, p.1, at, k);
        M::store_pair::<V, CLEAN>(mv.0, mv.1, &mut m[at..]);
        W::store_pair::<V, CLEAN>(vv.0, vv.1, &mut v[at..]);
    }
}

/// One vector of lanes at `at` of the first step: `v = g·g`, and `m` does
/// not move; `p` moves only with first-step decoupled decay.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn initialise<V: F32Vector, X: Params, G: Storage, W: Storage, const PARTIAL: bool>(
    out: &mut X,
    grad: &[G],
    v: &mut [W],
    at: usize,
    k: &StepConstants,
    plan: &Plan,
    s: &Splat<V>,
) {
    // SAFETY: see the note above.
    unsafe {
        let pv = load::<V, X::P, PARTIAL>(&out.params()[at..]);
        let g = effective_grad(pv, load::<V, G, PARTIAL>(&grad[at..]), plan, s);
        if plan.decay == DECAY_DECOUPLED {
            out.put::<V, PARTIAL, false>(s.decay.mul_add(pv, pv), at, true, k);
        } else {
            out.put::<V, PARTIAL, false>(pv, at, false, k);
        }
        store::<V, W, PARTIAL>(g.mul(g), &mut v[at..]);
    }
}

/// One vector (`PARTIAL`: fewer lanes) at `at`, of the first step or a
/// later one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn vector<
    V: F32Vector,
    X: Params,
    G: Storage,
    M: Storage,
    W: Storage,
    const PARTIAL: bool,
>(
    out: &mut X,
    grad: &[G],
    m: &mut [M],
    v: &mut [W],
    at: usize,
    k: &StepConstants,
    plan: &Plan,
) {
    // SAFETY: see the note above.
    unsafe {
        let s = Splat::<V>::new(k);
        if k.step == 0 {
            initialise::<V, X, G, W, PARTIAL>(out, grad, v, at, k, plan, &s);
        } else {
            update::<V, X, G, M, W, PARTIAL, false>(out, grad, m, v, at, k, plan, &s);
        }
    }
}

/// The whole vectors `..body` of a step after the first (`NEAREST`: as
/// [`Params::put`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn updates<
    I: Vectors,
    X: Params,
    G: Storage,
    M: Storage,
    W: Storage,
    const NEAREST: bool,
>(
    out: &mut X,
    g: &[G],
    m: &mut [M],
    v: &mut [W],
    body: usize,
    k: &StepConstants,
    plan: &Plan,
    s: &Splat<I::V>,
) {
    let n = I::V::LANES;
    // Half-precision buffers: fetch ahead by hand. Their vectors carry
    // conversion work, so fewer of them fit the out-of-order window and
    // the loads alone keep fewer lines in flight.
    let ahead = !(X::P::F32 && G::F32 && M::F32 && W::F32);
    let mut at = 0;
    // SAFETY: the caller guarantees the instruction sets.
    unsafe {
        // Every buffer bf16 (the parameters `Plain`: a master copy's are
        // f32): pairs of vectors, whose loads and stores the ISA may do in
        // fewer instructions in its own lane order (AVX2: no shuffles).
        // Implies `ahead`.
        let pairs = I::V::BF16_PAIRS && X::P::BF16 && G::BF16 && M::BF16 && W::BF16;
        if ahead {
            // Blocks of `PREFETCH_BLOCK` lanes, each line of the block
            // ahead fetched once (a prefetch per vector and buffer cost
            // 10% in cache), then the block's vectors (or pairs).
            while at + PREFETCH_BLOCK <= body {
                let to = at + PREFETCH_AHEAD;
                fetch::<I::V, X::P>(out.params().as_ptr().wrapping_add(to));
                fetch::<I::V, G>(g.as_ptr().wrapping_add(to));
                fetch::<I::V, M>(m.as_ptr().wrapping_add(to));
                fetch::<I::V, W>(v.as_ptr().wrapping_add(to));
                // Stochastic rounding: blocks whose lanes cross a change of
                // random stream (once in 2^32 lanes) go vector by vector.
                if pairs && (NEAREST || out.pair_fits(at, PREFETCH_BLOCK)) {
                    for i in (0..PREFETCH_BLOCK).step_by(2 * n) {
                        update_pair::<I::V, X, G, M, W, NEAREST>(out, g, m, v, at + i, k, plan, s);
                    }
                } else {
                    for i in (0..PREFETCH_BLOCK).step_by(n) {
                        update::<I::V, X, G, M, W, false, NEAREST>(
                            out,
                            g,
                            m,
                            v,
                            at + i,
                            k,
                            plan,
                            s,
                        );
                    }
                }
                at += PREFETCH_BLOCK;
            }
        }
        while at < body {
            update::<I::V, X, G, M, W, false, NEAREST>(out, g, m, v, at, k, plan, s);
            at += n;
        }
    }
}

/// The vectors of one instruction set: the main one, and narrower ones of
/// the same instruction set for the tail (ISAs without narrower vectors
/// name the main one three times).
pub(crate) trait Vectors {
    /// The main vector.
    type V: F32Vector;
    /// A tail vector of at most `V::LANES` lanes.
    type H: F32Vector;
    /// A tail vector of at most `H::LANES` lanes.
    type Q: F32Vector;
}

/// The generic step: every kernel is this function instantiated for one
/// set of vectors `I`, one [`Variant`] `O` and the storage of each buffer.
/// The lanes past the last whole `V` go through one vector, the narrowest
/// of `Q`, `H` and `V` that holds them: whole if they fill it, else
/// partial, with the other lanes zero. Every lane goes through the same
/// arithmetic whichever vector holds it.
///
/// The narrow tail is for speed: a tail's cost is its vector's square root
/// and divide (see BENCHMARKS.md).
///
/// The buffers have equal lengths (checked by the caller; a shorter one
/// panics).
///
/// # Safety
///
/// The CPU must support the instruction sets of `I`'s vectors (see
/// [`F32Vector`]).
#[inline(always)]
pub(crate) unsafe fn step_body<
    I: Vectors,
    O: Variant,
    X: Params,
    G: Storage,
    M: Storage,
    W: Storage,
>(
    mut out: X,
    g: &[G],
    m: &mut [M],
    v: &mut [W],
    k: &StepConstants,
) {
    let lanes = g.len();
    assert!(out.params().len() == lanes && m.len() == lanes && v.len() == lanes);
    let plan = Plan::of::<O>(k);
    let n = I::V::LANES;
    let body = lanes - lanes % n;
    // SAFETY: the caller guarantees the instruction sets.
    unsafe {
        let s = Splat::<I::V>::new(k);
        // Two loops, so that the choice of the first step is made once.
        if k.step == 0 {
            for at in (0..body).step_by(n) {
                initialise::<I::V, X, G, W, false>(&mut out, g, v, at, k, &plan, &s);
            }
        } else if out.stochastic() {
            updates::<I, X, G, M, W, false>(&mut out, g, m, v, body, k, &plan, &s);
        } else {
            // Nearest rounding: the loop without the stochastic stores'
            // code, whose constants and branch cost registers (spills) and
            // front-end slots on every vector.
            updates::<I, X, G, M, W, true>(&mut out, g, m, v, body, k, &plan, &s);
        }
        let rest = lanes - body;
        if rest == 0 {
            return;
        }
        let (q, h) = (I::Q::LANES, I::H::LANES);
        let at = body;
        // The narrower tails pay on small f32 buffers (many small tensors
        // batched into one call among them); the half-precision steps
        // (over other storage types, bound by memory) take the partial
        // main vector alone, which keeps 5 of their 7 inlined copies of
        // the step out of the build (each storage mix is instantiated for
        // every instruction set and three variants).
        let all_f32 = X::P::F32 && G::F32 && M::F32 && W::F32;
        let narrow_tails = all_f32;
        if narrow_tails && q < n && rest <= q {
            if rest == q {
                vector::<I::Q, X, G, M, W, false>(&mut out, g, m, v, at, k, &plan);
            } else {
                vector::<I::Q, X, G, M, W, true>(&mut out, g, m, v, at, k, &plan);
            }
        } else if narrow_tails && h < n && rest <= h {
            if rest == h {
                vector::<I::H, X, G, M, W, false>(&mut out, g, m, v, at, k, &plan);
            } else {
                vector::<I::H, X, G, M, W, true>(&mut out, g, m, v, at, k, &plan);
            }
        } else {
            vector::<I::V, X, G, M, W, true>(&mut out, g, m, v, at, k, &plan);
        }
    }
}

/// The number of lanes passing the caution mask (`u·g > 0`, or `u·ĝ`),
/// reading the four equal-length buffers and writing nothing: the first
/// pass of a cautious step after the first.
///
/// # Safety
///
/// The CPU must support the instruction set of `V` (see [`F32Vector`]).
#[inline(always)]
pub(crate) unsafe fn count_body<V: F32Vector, P: Storage, G: Storage, M: Storage, W: Storage>(
    p: &[P],
    g: &[G],
    m: &[M],
    v: &[W],
    k: &StepConstants,
) -> u64 {
    let lanes = p.len();
    assert!(g.len() == lanes && m.len() == lanes && v.len() == lanes);
    let plan = Plan::of::<Dynamic>(k);
    // The mask's rule even where `caution_scale` is not yet known.
    let plan = Plan {
        caution: if k.caution == Caution::PytorchOptimizer {
            CAUTION_NORMED
        } else {
            CAUTION_GRAD
        },
        ..plan
    };
    let n = V::LANES;
    let body = lanes - lanes % n;
    let mut total = 0_u64;
    // SAFETY: the caller guarantees `V`'s instruction set.
    unsafe {
        let s = Splat::<V>::new(k);
        for at in (0..body).step_by(n) {
            let x = agreement::<V, P, G, M, W, false>(p, g, m, v, at, &plan, &s);
            total += u64::from(x.count_positive(n));
        }
        if body < lanes {
            let x = agreement::<V, P, G, M, W, true>(p, g, m, v, body, &plan, &s);
            total += u64::from(x.count_positive(lanes - body));
        }
    }
    total
}

/// The caution product of the vector at `at`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn agreement<
    V: F32Vector,
    P: Storage,
    G: Storage,
    M: Storage,
    W: Storage,
    const PARTIAL: bool,
>(
    p: &[P],
    g: &[G],
    m: &[M],
    v: &[W],
    at: usize,
    plan: &Plan,
    s: &Splat<V>,
) -> V {
    // SAFETY: see the note above.
    unsafe {
        let pv = load::<V, P, PARTIAL>(&p[at..]);
        let g = effective_grad(pv, load::<V, G, PARTIAL>(&g[at..]), plan, s);
        let (mv, vv) = (
            load::<V, M, PARTIAL>(&m[at..]),
            load::<V, W, PARTIAL>(&v[at..]),
        );
        let (_, u, normed) = moment_and_direction(g, mv, vv, plan, s);
        caution_product(u, g, normed, plan)
    }
}

/// One buffer's step for a batched call: four equal-length slices and
/// their constants.
#[cfg(feature = "alloc")]
pub(crate) struct Job<'a> {
    pub(crate) p: &'a mut [f32],
    pub(crate) g: &'a [f32],
    pub(crate) m: &'a mut [f32],
    pub(crate) v: &'a mut [f32],
    pub(crate) k: &'a StepConstants,
}

/// One instruction set's entry points: the generic bodies compiled for it.
///
/// # Safety
///
/// Implementing the trait asserts that each method is sound to call once
/// the CPU is known to support the instruction set (what the kernel's
/// token in `kernel::select` proves), given the buffers' equal lengths.
pub(crate) unsafe trait Isa {
    /// The f32 step of variant `O`.
    unsafe fn step<O: Variant>(
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        k: &StepConstants,
    );
    /// Every job's f32 step, each with the [`Dynamic`] variant, in one
    /// function compiled for the instruction set.
    #[cfg(feature = "alloc")]
    unsafe fn step_each<'a>(jobs: impl Iterator<Item = Job<'a>>);
    /// The step over any storage types (the [`Dynamic`] variant).
    #[cfg(feature = "half")]
    unsafe fn step_typed<X: Params, G: Storage, M: Storage, W: Storage>(
        out: X,
        g: &[G],
        m: &mut [M],
        v: &mut [W],
        k: &StepConstants,
    );
    /// The caution count over any storage types.
    unsafe fn count<P: Storage, G: Storage, M: Storage, W: Storage>(
        p: &[P],
        g: &[G],
        m: &[M],
        v: &[W],
        k: &StepConstants,
    ) -> u64;
}

/// Implements [`Isa`] for `$isa` with the vectors `$v`, `$h`, `$q`, each
/// entry point compiled with the attributes given (the instruction set's
/// `#[target_feature]`, or none).
macro_rules! impl_isa {
    ($isa:ty, [$($attr:meta),*], $v:ty, $h:ty, $q:ty) => {
        impl $crate::kernel::generic::Vectors for $isa {
            type V = $v;
            type H = $h;
            type Q = $q;
        }
        // SAFETY: every method runs the generic bodies over this
        // instruction set's vectors only, compiled with its features.
        unsafe impl $crate::kernel::generic::Isa for $isa {
            $(#[$attr])*
            unsafe fn step<O: $crate::kernel::generic::Variant>(
                p: &mut [f32],
                g: &[f32],
                m: &mut [f32],
                v: &mut [f32],
                k: &$crate::hyper::StepConstants,
            ) {
                use $crate::kernel::generic::{step_body, Plain, Round};
                let out = Plain { p, round: Round::Nearest, first_lane: 0 };
                // SAFETY: the caller guarantees the instruction set.
                unsafe { step_body::<Self, O, _, f32, f32, f32>(out, g, m, v, k) }
            }
            #[cfg(feature = "alloc")]
            $(#[$attr])*
            unsafe fn step_each<'a>(jobs: impl Iterator<Item = $crate::kernel::generic::Job<'a>>) {
                use $crate::kernel::generic::{step_body, Dynamic, Plain, Round};
                for j in jobs {
                    let out = Plain { p: j.p, round: Round::Nearest, first_lane: 0 };
                    // SAFETY: the caller guarantees the instruction set.
                    unsafe { step_body::<Self, Dynamic, _, f32, f32, f32>(out, j.g, j.m, j.v, j.k) }
                }
            }
            #[cfg(feature = "half")]
            $(#[$attr])*
            unsafe fn step_typed<
                X: $crate::kernel::generic::Params,
                G: $crate::kernel::generic::Storage,
                M: $crate::kernel::generic::Storage,
                W: $crate::kernel::generic::Storage,
            >(
                out: X,
                g: &[G],
                m: &mut [M],
                v: &mut [W],
                k: &$crate::hyper::StepConstants,
            ) {
                use $crate::kernel::generic::{
                    step_body, Dynamic, TypedDecoupled, TypedPlain, TypedVariant,
                };
                // SAFETY: the caller guarantees the instruction set.
                unsafe {
                    match TypedVariant::of(k) {
                        TypedVariant::Plain => {
                            step_body::<Self, TypedPlain, X, G, M, W>(out, g, m, v, k)
                        }
                        TypedVariant::Decoupled => {
                            step_body::<Self, TypedDecoupled, X, G, M, W>(out, g, m, v, k)
                        }
                        TypedVariant::Dynamic => {
                            step_body::<Self, Dynamic, X, G, M, W>(out, g, m, v, k)
                        }
                    }
                }
            }
            $(#[$attr])*
            unsafe fn count<
                P: $crate::kernel::generic::Storage,
                G: $crate::kernel::generic::Storage,
                M: $crate::kernel::generic::Storage,
                W: $crate::kernel::generic::Storage,
            >(
                p: &[P],
                g: &[G],
                m: &[M],
                v: &[W],
                k: &$crate::hyper::StepConstants,
            ) -> u64 {
                // SAFETY: the caller guarantees the instruction set.
                unsafe { $crate::kernel::generic::count_body::<$v, P, G, M, W>(p, g, m, v, k) }
            }
        }
    };
}
pub(crate) use impl_isa;
