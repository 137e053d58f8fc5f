//! Half-precision buffers (feature `half`): parameters and gradients in
//! `bf16` or `f16`, the first moment `m` in `f32`, `bf16` or `f16`, the
//! second moment `v` in `f32` or `bf16` (never `f16`, whose range `v = g²`
//! leaves: see [`SecondMoment`]), and an optional f32 master copy of the
//! parameters.
//!
//! Arithmetic is always f32 and identical to the f32 step: each lane is
//! loaded, widened exactly to f32, stepped by the same kernel, and rounded
//! back to its storage type to nearest, ties to even, or (bf16 parameters,
//! on request) stochastically. Work goes in blocks of [`BLOCK`] lanes through
//! stack buffers, split across the rayon pool for large buffers; results do
//! not depend on the split.
//!
//! Bytes moved per lane by a step (reads + writes):
//!
//! | layout | p | g | m, v | total |
//! |---|---|---|---|---|
//! | all f32 ([`adopt_step`](crate::adopt_step)) | 4+4 | 4 | 16 | 28 |
//! | bf16 p and g, f32 state | 2+2 | 2 | 16 | 22 |
//! | bf16 p, g and state | 2+2 | 2 | 8 | 14 |
//! | f32 master, bf16 p and g, bf16 state | 4+4 (+2) | 2 | 8 | 20 |
//!
//! ```
//! use adopt::precision::{adopt_step_half, Rounding};
//! use adopt::Hyper;
//! use half::bf16;
//!
//! let mut params = vec![bf16::from_f32(1.0); 16];
//! let grads = vec![bf16::from_f32(0.5); 16];
//! // Optimizer state in bf16 too: 4 bytes per lane instead of 8.
//! let (mut m, mut v, mut step) = (vec![bf16::ZERO; 16], vec![bf16::ZERO; 16], 0_u64);
//! // (With lr = 0.01 the update of 1e-3 would vanish in bf16's spacing of
//! // 2^-7 near 1.0: that is what stochastic rounding is for.)
//! let hyper = Hyper { lr: 0.1, ..Hyper::default() };
//! for _ in 0..3 {
//!     adopt_step_half(&mut params, &grads, &mut m, &mut v, &mut step, &hyper, Rounding::NearestEven)?;
//! }
//! assert!(params[0].to_f32() < 1.0);
//! assert_eq!(step, 3);
//! # Ok::<(), adopt::Error>(())
//! ```

use crate::error::{Buffer, Error};
use crate::hyper::{Hyper, Scaling, StepConstants};
use crate::kernel::Kernel;
use crate::lanes::{Lanes, LanesMut};
use crate::parallel;
use crate::prepare;
use crate::state::StateView;
use half::{bf16, f16};

/// Lanes converted per block (stack buffers of 4 × 512 f32).
#[doc(hidden)]
pub const BLOCK: usize = 512;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// A storage type for the second moment `v`: `f32` or `bf16` (sealed).
///
/// Not `f16`: `v = g²` overflows f16 for gradients above 256 (the
/// parameter then freezes at every step) and underflows below `1e-4`
/// (the step divides by `eps`), so an f16 `v` does not compile:
///
/// ```compile_fail
/// use adopt::precision::{adopt_step_half, Rounding};
/// use half::f16;
/// let (mut p, g) = (vec![1.0_f32; 4], vec![0.5_f32; 4]);
/// let (mut m, mut v, mut step) = (vec![f16::ZERO; 4], vec![f16::ZERO; 4], 0);
/// adopt_step_half(&mut p, &g, &mut m, &mut v, &mut step, &adopt::Hyper::default(), Rounding::NearestEven);
/// ```
///
/// `m` may be f16 (optax's `mu_dtype` is for the first moment only):
///
/// ```
/// use adopt::precision::{adopt_step_half, Rounding};
/// use half::f16;
/// let (mut p, g) = (vec![1.0_f32; 4], vec![0.5_f32; 4]);
/// let (mut m, mut v, mut step) = (vec![f16::ZERO; 4], vec![0.0_f32; 4], 0);
/// adopt_step_half(&mut p, &g, &mut m, &mut v, &mut step, &adopt::Hyper::default(), Rounding::NearestEven)?;
/// # Ok::<(), adopt::Error>(())
/// ```
pub trait SecondMoment: Lane {}

impl SecondMoment for f32 {}
impl SecondMoment for bf16 {}

/// A storage type for f32 lanes: `f32`, `bf16` or `f16` (sealed).
pub trait Lane: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Widens exactly to f32.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to nearest, ties to even (NaN stays NaN).
    fn from_f32(x: f32) -> Self;
    /// Rounds an f32 stochastically with 16 random bits, where the type
    /// supports it (bf16); others round to nearest.
    fn from_f32_stochastic(x: f32, _random: u16) -> Self {
        Self::from_f32(x)
    }
    /// Whether the type is `f32` itself (stepped in place, not copied).
    const IS_F32: bool = false;
    /// `src` as f32 lanes: itself for `f32`, else widened into `scratch`
    /// (of equal length).
    #[inline(always)]
    fn view<'a>(src: &'a [Self], scratch: &'a mut [f32]) -> &'a [f32] {
        Self::widen(src, scratch);
        scratch
    }
    /// `src` as mutable f32 lanes: itself for `f32`, else widened into
    /// `scratch`, to be rounded back with [`write_back`](Lane::write_back).
    #[inline(always)]
    fn view_mut<'a>(src: &'a mut [Self], scratch: &'a mut [f32]) -> &'a mut [f32] {
        Self::widen(src, scratch);
        scratch
    }
    /// Rounds the lanes a [`view_mut`](Lane::view_mut) of `dst` left in
    /// `scratch` back into `dst` (nothing to do for `f32`).
    #[inline(always)]
    fn write_back(dst: &mut [Self], scratch: &[f32]) {
        Self::narrow(scratch, dst);
    }
    /// Widens `src` into `dst` (equal lengths), lane by lane as
    /// [`to_f32`](Lane::to_f32).
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// Rounds `src` into `dst` (equal lengths), lane by lane as
    /// [`from_f32`](Lane::from_f32).
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }
}

impl Lane for f32 {
    const IS_F32: bool = true;
    #[inline(always)]
    fn view<'a>(src: &'a [Self], _scratch: &'a mut [f32]) -> &'a [f32] {
        src
    }
    #[inline(always)]
    fn view_mut<'a>(src: &'a mut [Self], _scratch: &'a mut [f32]) -> &'a mut [f32] {
        src
    }
    #[inline(always)]
    fn write_back(_dst: &mut [Self], _scratch: &[f32]) {}
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

// The bf16 conversions are written out as bit operations, which the
// compiler vectorises (inside `Kernel::within`, for the kernel's
// instruction set), rather than called per lane from `half`.
impl Lane for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    /// To nearest, ties to even; NaN stays NaN (quieted), as `half` rounds.
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        let bits = x.to_bits();
        let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
        let nan = (bits >> 16) as u16 | 0x0040;
        bf16::from_bits(if x.is_nan() { nan } else { rounded as u16 })
    }
    /// Adds 16 random bits below the bf16 mantissa and truncates: rounds up
    /// with probability equal to the discarded fraction, so the rounding is
    /// unbiased. NaN and ±inf round as to nearest.
    #[inline(always)]
    fn from_f32_stochastic(x: f32, random: u16) -> Self {
        if !x.is_finite() {
            return <bf16 as Lane>::from_f32(x);
        }
        let bits = x.to_bits().wrapping_add(random as u32);
        // A carry into the exponent rounds up to the next binade, or to inf
        // past the largest bf16, as rounding up should.
        bf16::from_bits((bits >> 16) as u16)
    }
}

// f16 goes through `half`'s slice conversions, which use the F16C
// instructions where the CPU has them (detected at run time with `std`).
impl Lane for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn widen(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
}

pub use crate::lanes::Rounding;

/// The key of a random stream: SplitMix64 of (seed, step, the high half of
/// the lane index), computed once per block.
fn stream_key(seed: u64, step: u64, lane_hi: u64) -> u32 {
    let mut z = seed
        ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ lane_hi.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// 16 random bits for a lane of a stream: a 32-bit integer hash (a
/// bijection, so distinct lanes of a stream never share an input) of the
/// low half of the lane index and the key. 32-bit multiplies vectorise.
#[inline(always)]
fn lane_bits(key: u32, lane_lo: u32) -> u16 {
    let mut x = lane_lo ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    (x >> 16) as u16
}

/// Rounds `src` into `dst` stochastically, lanes numbered from `first_lane`
/// (a multiple of [`BLOCK`]): each lane's random bits depend only on
/// `(seed, step, lane)`.
#[inline(always)]
fn round_stochastic<P: Lane>(src: &[f32], dst: &mut [P], seed: u64, step: u64, first_lane: u64) {
    for (b, (dst, src)) in dst.chunks_mut(BLOCK).zip(src.chunks(BLOCK)).enumerate() {
        // BLOCK divides 2^32, so a block never straddles a change of the
        // high half of the lane index.
        let lane = first_lane + (b * BLOCK) as u64;
        let key = stream_key(seed, step, lane >> 32);
        let lo = lane as u32;
        for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
            *d = P::from_f32_stochastic(x, lane_bits(key, lo.wrapping_add(i as u32)));
        }
    }
}

/// One block of the four buffers, as the chunk iterators yield it.
type BlockOf<'a, P, G, M, V> = ((&'a mut [P], &'a [G]), (&'a mut [M], &'a mut [V]));

/// f32 scratch for one block of each buffer.
type Scratch = [[f32; BLOCK]; 4];

/// Steps a run of consecutive blocks starting at lane `first_lane`: widen,
/// step with the kernel, round back, block by block, inside the kernel's
/// instruction set.
fn step_blocks<'a, P: Lane, G: Lane, M: Lane, V: Lane>(
    kernel: Kernel,
    blocks: impl Iterator<Item = (usize, BlockOf<'a, P, G, M, V>)>,
    k: &StepConstants,
    rounding: Rounding,
    buf: &mut Scratch,
) {
    kernel.within(
        #[inline(always)]
        || {
            for (i, ((p, g), (m, v))) in blocks {
                step_block(kernel, p, g, m, v, k, rounding, (i * BLOCK) as u64, buf);
            }
        },
    )
}

/// One block: widen, step with the kernel, round back.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn step_block<P: Lane, G: Lane, M: Lane, V: Lane>(
    kernel: Kernel,
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    k: &StepConstants,
    rounding: Rounding,
    first_lane: u64,
    buf: &mut Scratch,
) {
    let n = p.len();
    let [bp, bg, bm, bv] = buf;
    let (bp, bg, bm, bv) = (&mut bp[..n], &mut bg[..n], &mut bm[..n], &mut bv[..n]);
    kernel.run(
        P::view_mut(p, bp),
        G::view(g, bg),
        M::view_mut(m, bm),
        V::view_mut(v, bv),
        k,
    );
    match rounding {
        Rounding::Stochastic { seed } if !P::IS_F32 => {
            round_stochastic(bp, p, seed, k.step, first_lane)
        }
        _ => P::write_back(p, bp),
    }
    M::write_back(m, bm);
    V::write_back(v, bv);
}

/// The caution count over all blocks.
fn count_blocks<P: Lane, G: Lane, M: Lane, V: Lane>(
    kernel: Kernel,
    p: &[P],
    g: &[G],
    m: &[M],
    v: &[V],
    k: &StepConstants,
) -> u64 {
    let mut buf = [[0.0_f32; BLOCK]; 4];
    kernel.within(
        #[inline(always)]
        || {
            let mut count = 0;
            for (((p, g), m), v) in p
                .chunks(BLOCK)
                .zip(g.chunks(BLOCK))
                .zip(m.chunks(BLOCK))
                .zip(v.chunks(BLOCK))
            {
                let n = p.len();
                let [bp, bg, bm, bv] = &mut buf;
                count += kernel.count(
                    P::view(p, &mut bp[..n]),
                    G::view(g, &mut bg[..n]),
                    M::view(m, &mut bm[..n]),
                    V::view(v, &mut bv[..n]),
                    k,
                );
            }
            count
        },
    )
}

/// One buffer (or a chunk of one whose first lane is lane `first_lane` of
/// its tensor) of any storage mix, stepped on this thread with validated
/// constants: widen, step with the kernel, round back, block by block.
/// `first_lane` numbers the lanes for stochastic rounding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_typed<P: Lane, G: Lane, M: Lane, V: Lane>(
    kernel: Kernel,
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    k: &StepConstants,
    rounding: Rounding,
    first_lane: u64,
) {
    debug_assert!(first_lane.is_multiple_of(BLOCK as u64));
    let blocks = p
        .chunks_mut(BLOCK)
        .zip(g.chunks(BLOCK))
        .zip(m.chunks_mut(BLOCK).zip(v.chunks_mut(BLOCK)))
        .enumerate()
        .map(|(i, b)| (first_lane as usize / BLOCK + i, b));
    step_blocks(kernel, blocks, k, rounding, &mut [[0.0_f32; BLOCK]; 4]);
}

/// Calls `$body` with `$x` bound to the slice inside a [`LanesMut`] (or
/// [`Lanes`]), whatever its type.
macro_rules! with_lanes {
    ($x:expr, $kind:ident, |$v:ident| $body:expr) => {
        match $x {
            $kind::F32($v) => $body,
            $kind::Bf16($v) => $body,
            $kind::F16($v) => $body,
        }
    };
}

/// [`step_typed`] over whole buffers whose types are known at run time
/// (the optimizer's layouts), across the pool when large. `v` is f32 or
/// bf16 (layouts refuse f16).
pub(crate) fn step_lanes(
    kernel: Kernel,
    p: LanesMut<'_>,
    g: Lanes<'_>,
    m: LanesMut<'_>,
    v: LanesMut<'_>,
    k: &StepConstants,
    rounding: Rounding,
) {
    fn chunks<P: Lane, G: Lane, M: Lane, V: Lane>(
        kernel: Kernel,
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        v: &mut [V],
        k: &StepConstants,
        rounding: Rounding,
    ) {
        parallel::for_each_chunk(p, g, m, v, |first, p, g, m, v| {
            step_typed(kernel, p, g, m, v, k, rounding, first as u64)
        });
    }
    with_lanes!(p, LanesMut, |p| with_lanes!(g, Lanes, |g| with_lanes!(
        m,
        LanesMut,
        |m| match v {
            LanesMut::F32(v) => chunks(kernel, p, g, m, v, k, rounding),
            LanesMut::Bf16(v) => chunks(kernel, p, g, m, v, k, rounding),
            LanesMut::F16(_) => unreachable!("layouts refuse an f16 second moment"),
        }
    )))
}

/// The step of half-precision parameters with an f32 master copy, types
/// known at run time: the master is stepped as [`step_lanes`] would step
/// f32 parameters, then the parameters are rounded from it (`k.step`, the
/// steps taken before, seeds stochastic rounding), as
/// [`adopt_step_master`] does.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_master_lanes(
    kernel: Kernel,
    master: &mut [f32],
    p: LanesMut<'_>,
    g: Lanes<'_>,
    m: LanesMut<'_>,
    v: LanesMut<'_>,
    k: &StepConstants,
    rounding: Rounding,
) {
    step_lanes(
        kernel,
        LanesMut::F32(master),
        g,
        m,
        v,
        k,
        Rounding::NearestEven,
    );
    with_lanes!(p, LanesMut, |p| parallel::for_each_chunk_pair(
        master,
        p,
        |first, master, p| round_master(kernel, master, p, rounding, k.step, first as u64)
    ))
}

/// The caution count of buffers whose types are known at run time.
pub(crate) fn count_lanes(
    kernel: Kernel,
    p: Lanes<'_>,
    g: Lanes<'_>,
    m: Lanes<'_>,
    v: Lanes<'_>,
    k: &StepConstants,
) -> u64 {
    with_lanes!(p, Lanes, |p| with_lanes!(g, Lanes, |g| with_lanes!(
        m,
        Lanes,
        |m| match v {
            Lanes::F32(v) => count_blocks(kernel, p, g, m, v, k),
            Lanes::Bf16(v) => count_blocks(kernel, p, g, m, v, k),
            Lanes::F16(_) => unreachable!("layouts refuse an f16 second moment"),
        }
    )))
}

/// Validates a half-precision step and applies its cautious pre-pass: the
/// kernel and the constants, or the error.
fn prepare_half<P: Lane, G: Lane, M: Lane, V: Lane>(
    params: &[P],
    grads: &[G],
    exp_avg: &[M],
    exp_avg_sq: &[V],
    step: u64,
    hyper: &Hyper,
) -> Result<(Kernel, StepConstants), Error> {
    let kernel = prepare::kernel(None)?;
    prepare::lengths(params.len(), grads.len(), exp_avg.len(), exp_avg_sq.len())?;
    let mut k = prepare::constants(step, hyper, Scaling::default())?;
    prepare::caution(&mut k, params.len(), None, |k| {
        count_blocks(kernel, params, grads, exp_avg, exp_avg_sq, k)
    });
    Ok((kernel, k))
}

/// The step over any mix of storage types: parameters `P`, gradients `G`
/// and first moment `M` (`f32`, `bf16` or `f16` each), second moment `V`
/// (`f32` or `bf16`: see [`SecondMoment`]), with f32 arithmetic identical
/// to [`adopt_step`](crate::adopt_step) on the widened values.
///
/// Validation (lengths, hyperparameters, step count) runs before any write;
/// on error nothing changes.
#[allow(clippy::too_many_arguments)]
pub fn adopt_step_half<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
    params: &mut [P],
    grads: &[G],
    exp_avg: &mut [M],
    exp_avg_sq: &mut [V],
    step: &mut u64,
    hyper: &Hyper,
    rounding: Rounding,
) -> Result<(), Error> {
    let (kernel, k) = prepare_half(params, grads, exp_avg, exp_avg_sq, *step, hyper)?;
    parallel::for_each_chunk(params, grads, exp_avg, exp_avg_sq, |first, p, g, m, v| {
        step_typed(kernel, p, g, m, v, &k, rounding, first as u64)
    });
    *step += 1;
    Ok(())
}

/// The step with an f32 master copy of half-precision parameters: the
/// master is stepped exactly as [`adopt_step_view`](crate::adopt_step_view)
/// would (gradients widened to f32), then the parameters are rounded from it.
///
/// ```
/// use adopt::precision::{adopt_step_master, Rounding};
/// use adopt::{Hyper, State};
/// use half::bf16;
/// let mut master = vec![1.0_f32; 4];
/// let mut params: Vec<bf16> = master.iter().map(|&x| bf16::from_f32(x)).collect();
/// let mut state = State::new(4);
/// for _ in 0..3 {
///     adopt_step_master(&mut master, &mut params, &[bf16::from_f32(0.25); 4], &mut state.view_mut(), &Hyper::default(), Rounding::NearestEven)?;
/// }
/// assert_eq!(params[0], bf16::from_f32(master[0]));
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn adopt_step_master<P: Lane, G: Lane>(
    master: &mut [f32],
    params: &mut [P],
    grads: &[G],
    state: &mut StateView<'_>,
    hyper: &Hyper,
    rounding: Rounding,
) -> Result<(), Error> {
    if params.len() != master.len() {
        return Err(Error::LengthMismatch {
            buffer: Buffer::Params,
            expected: master.len(),
            got: params.len(),
        });
    }
    let (kernel, k) = prepare_half(
        master,
        grads,
        state.exp_avg,
        state.exp_avg_sq,
        *state.step,
        hyper,
    )?;
    parallel::for_each_chunk(
        master,
        grads,
        state.exp_avg,
        state.exp_avg_sq,
        |first, p, g, m, v| step_typed(kernel, p, g, m, v, &k, Rounding::NearestEven, first as u64),
    );
    round_master(kernel, master, params, rounding, k.step, 0);
    *state.step += 1;
    Ok(())
}

/// Rounds an f32 master copy into its half-precision parameters (`step`:
/// the steps taken before this one, for stochastic rounding).
pub(crate) fn round_master<P: Lane>(
    kernel: Kernel,
    master: &[f32],
    params: &mut [P],
    rounding: Rounding,
    step: u64,
    first_lane: u64,
) {
    match rounding {
        Rounding::NearestEven => kernel.within(
            #[inline(always)]
            || P::narrow(master, params),
        ),
        Rounding::Stochastic { seed } => kernel.within(
            #[inline(always)]
            || round_stochastic(master, params, seed, step, first_lane),
        ),
    }
}
