//! Half-precision buffers (feature `half`): parameters and gradients in
//! `bf16` or `f16`, the first moment `m` in `f32`, `bf16` or `f16`, the
//! second moment `v` in `f32` or `bf16` (never `f16`, whose range `v = g²`
//! leaves: see [`SecondMoment`]), and an optional f32 master copy of the
//! parameters.
//!
//! Arithmetic is always f32 and identical to the f32 step: each lane is
//! loaded, widened exactly to f32, stepped by the same kernel body, and
//! rounded back to its storage type to nearest, ties to even, or (bf16
//! parameters, on request) stochastically. The kernels load and store the
//! half-precision lanes in registers (AVX2 and AVX-512: shifts for bf16,
//! `vcvtph2ps`/`vcvtps2ph` for f16; other kernels convert lane by lane), so
//! a step reads and writes each buffer once. Large buffers are split
//! across the rayon pool; results do not depend on the split.

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
use crate::kernel::generic::{self, Master, Plain, Round};
use crate::lanes::{Lanes, LanesMut};
use crate::prepare;
use crate::state::StateView;
use half::{bf16, f16};

/// Lanes per block of the conversions earlier versions staged through
/// f32 buffers; the step no longer stages anything (kept for callers that
/// named it).
#[doc(hidden)]
pub const BLOCK: usize = 512;

mod sealed {
    /// The kernels' storage types: a lane type is one the kernels load
    /// and store in registers.
    #[allow(private_bounds)]
    pub trait Sealed: crate::kernel::generic::Storage {
        /// The slice as [`Lanes`](crate::Lanes): the generic front ends
        /// hand the step to one function compiled here for every type.
        fn lanes(x: &[Self]) -> crate::Lanes<'_>;
        /// The slice as [`LanesMut`](crate::LanesMut).
        fn lanes_mut(x: &mut [Self]) -> crate::LanesMut<'_>;
    }
    macro_rules! sealed {
        ($($t:ty),*) => {$(
            impl Sealed for $t {
                fn lanes(x: &[Self]) -> crate::Lanes<'_> {
                    x.into()
                }
                fn lanes_mut(x: &mut [Self]) -> crate::LanesMut<'_> {
                    x.into()
                }
            }
        )*};
    }
    sealed!(f32, half::bf16, half::f16);
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

// The bf16 conversions are bit operations (the kernels run the same ones
// in registers).
impl Lane for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        generic::bf16_to_f32(self.to_bits())
    }
    /// To nearest, ties to even; NaN stays NaN (quieted), as `half` rounds.
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_bits(generic::bf16_nearest(x))
    }
    /// Adds 16 random bits below the bf16 mantissa and truncates: rounds up
    /// with probability equal to the discarded fraction, so the rounding is
    /// unbiased. NaN and ±inf round as to nearest; a carry into the
    /// exponent rounds up to the next binade, or to inf past the largest
    /// bf16, as rounding up should.
    #[inline(always)]
    fn from_f32_stochastic(x: f32, random: u16) -> Self {
        bf16::from_bits(generic::bf16_stochastic(x, random))
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

// Inside the crate, one typed step: `step_typed` steps one buffer of any
// storage mix with given `StepConstants` (validated, the caution scale
// already set), and `step_master_typed` the same with an f32 master copy;
// both take the index of the buffer's first lane in its whole tensor, so
// that a shard's stochastic rounding draws the bits the whole tensor's step
// would. `caution_count_typed` is the caution pre-pass over the same
// buffers. The public functions (`adopt_step_half`, `adopt_step_master`)
// are these with validation; the optimizer can call them for any layout.

/// The kernels' rounding of parameters.
fn round(rounding: Rounding) -> Round {
    match rounding {
        Rounding::NearestEven => Round::Nearest,
        Rounding::Stochastic { seed } => Round::Stochastic { seed },
    }
}

/// One step of one buffer of any storage mix, with constants `k` already
/// validated and derived (the caution scale included, see
/// [`caution_count_typed`]): parameters `P`, gradients `G` and first
/// moment `M` in `f32`, `bf16` or `f16`, second moment `V` in `f32` or
/// `bf16`, each lane widened to f32, stepped by `kernel`'s body and rounded
/// back (the parameters as `rounding` says), across the rayon pool when
/// large. `first_lane` is the index of `p[0]` in the whole tensor: a shard
/// stepped on its own draws the same stochastic-rounding bits as the whole
/// tensor's step.
///
/// The buffers have equal lengths (validated by the caller; a mismatch
/// panics). Writes every buffer; the step count is the caller's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_typed<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
    kernel: Kernel,
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    k: &StepConstants,
    rounding: Rounding,
    first_lane: u64,
) {
    let out = Plain {
        p,
        round: round(rounding),
        first_lane,
    };
    crate::parallel::run_typed(kernel, out, g, m, v, k);
}

/// [`step_typed`] with an f32 master copy: `master` is stepped in place
/// (rounded to f32, so exactly the f32 step of the widened gradients), and
/// `params` (of `master`'s length) receives every new master value rounded
/// as `rounding` says, in the same pass, on every step including the
/// first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_master_typed<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
    kernel: Kernel,
    master: &mut [f32],
    params: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    k: &StepConstants,
    rounding: Rounding,
    first_lane: u64,
) {
    let out = Master {
        master,
        copy: params,
        round: round(rounding),
        first_lane,
    };
    crate::parallel::run_typed(kernel, out, g, m, v, k);
}

/// The caution pre-pass of [`step_typed`]: how many lanes pass the mask,
/// reading the buffers only. With `k.step > 0` and cautious masking, the
/// caller sets `k.caution_scale` from it (see [`CautionMask::scale`](crate::CautionMask::scale)).
pub(crate) fn caution_count_typed<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
    kernel: Kernel,
    p: &[P],
    g: &[G],
    m: &[M],
    v: &[V],
    k: &StepConstants,
) -> u64 {
    crate::parallel::count_typed(kernel, p, g, m, v, k)
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
/// (the optimizer's layouts, and [`adopt_step_half`]'s slices), across the
/// pool when large. `v` is f32 or bf16 (layouts refuse f16, and
/// [`SecondMoment`] has no f16).
pub(crate) fn step_lanes(
    kernel: Kernel,
    p: LanesMut<'_>,
    g: Lanes<'_>,
    m: LanesMut<'_>,
    v: LanesMut<'_>,
    k: &StepConstants,
    rounding: Rounding,
) {
    with_lanes!(p, LanesMut, |p| with_lanes!(g, Lanes, |g| with_lanes!(
        m,
        LanesMut,
        |m| match v {
            LanesMut::F32(v) => step_typed(kernel, p, g, m, v, k, rounding, 0),
            LanesMut::Bf16(v) => step_typed(kernel, p, g, m, v, k, rounding, 0),
            LanesMut::F16(_) => unreachable!("an f16 second moment is refused before this"),
        }
    )))
}

/// [`step_master_typed`] over buffers whose types are known at run time:
/// the master is stepped as [`step_lanes`] would step f32 parameters and
/// the parameters rounded from it in the same pass (`k.step`, the steps
/// taken before, seeds stochastic rounding), as [`adopt_step_master`] does.
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
    with_lanes!(p, LanesMut, |p| with_lanes!(g, Lanes, |g| with_lanes!(
        m,
        LanesMut,
        |m| match v {
            LanesMut::F32(v) => step_master_typed(kernel, master, p, g, m, v, k, rounding, 0),
            LanesMut::Bf16(v) => step_master_typed(kernel, master, p, g, m, v, k, rounding, 0),
            LanesMut::F16(_) => unreachable!("an f16 second moment is refused before this"),
        }
    )))
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
            Lanes::F32(v) => caution_count_typed(kernel, p, g, m, v, k),
            Lanes::Bf16(v) => caution_count_typed(kernel, p, g, m, v, k),
            Lanes::F16(_) => unreachable!("an f16 second moment is refused before this"),
        }
    )))
}

/// Validates a half-precision step and applies its cautious pre-pass: the
/// kernel and the constants, or the error.
fn prepare_half(
    params: Lanes<'_>,
    grads: Lanes<'_>,
    exp_avg: Lanes<'_>,
    exp_avg_sq: Lanes<'_>,
    step: u64,
    hyper: &Hyper,
) -> Result<(Kernel, StepConstants), Error> {
    let kernel = prepare::kernel(None)?;
    prepare::lengths(params.len(), grads.len(), exp_avg.len(), exp_avg_sq.len())?;
    let mut k = prepare::constants(step, hyper, Scaling::default())?;
    prepare::caution(&mut k, params.len(), None, |k| {
        count_lanes(kernel, params, grads, exp_avg, exp_avg_sq, k)
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
    let (p, g) = (P::lanes_mut(params), G::lanes(grads));
    let (m, v) = (M::lanes_mut(exp_avg), V::lanes_mut(exp_avg_sq));
    step_half(p, g, m, v, step, hyper, rounding)
}

/// The body of [`adopt_step_half`], not generic: the kernels for every mix
/// of types are compiled once, in this crate, rather than again in every
/// crate that calls the generic front end.
fn step_half(
    p: LanesMut<'_>,
    g: Lanes<'_>,
    m: LanesMut<'_>,
    v: LanesMut<'_>,
    step: &mut u64,
    hyper: &Hyper,
    rounding: Rounding,
) -> Result<(), Error> {
    let (kernel, k) = prepare_half(p.as_lanes(), g, m.as_lanes(), v.as_lanes(), *step, hyper)?;
    step_lanes(kernel, p, g, m, v, &k, rounding);
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
    step_master(
        master,
        P::lanes_mut(params),
        G::lanes(grads),
        state,
        hyper,
        rounding,
    )
}

/// The body of [`adopt_step_master`], not generic (see [`step_half`]).
fn step_master(
    master: &mut [f32],
    params: LanesMut<'_>,
    grads: Lanes<'_>,
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
    let (m, v) = (&mut *state.exp_avg, &mut *state.exp_avg_sq);
    let (kernel, k) = prepare_half(
        (&*master).into(),
        grads,
        (&*m).into(),
        (&*v).into(),
        *state.step,
        hyper,
    )?;
    step_master_lanes(
        kernel,
        master,
        params,
        grads,
        m.into(),
        v.into(),
        &k,
        rounding,
    );
    *state.step += 1;
    Ok(())
}

/// The typed step on every kernel this CPU runs against a scalar model:
/// each lane widened, stepped by `reference::update_lane`, rounded back
/// (stochastically from the lane's index in the tensor where asked).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::hyper::{Caution, CautionMask, WeightDecay};
    use crate::reference;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn same<T: Lane>(a: &[T], b: &[T]) -> bool {
        a.iter().zip(b).all(|(x, y)| {
            let (x, y) = (x.to_f32(), y.to_f32());
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        })
    }

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -4.0_f32..4.0,
            1 => prop::sample::select(vec![
                f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::from_bits(1),
                f32::MIN_POSITIVE, f32::MAX, 3e30, 1e-30, 65504.0, 65520.0, 1.0, -1.0,
            ]),
            1 => any::<u32>().prop_map(f32::from_bits),
        ]
    }

    fn hyper() -> impl Strategy<Value = Hyper> {
        let d = Hyper {
            lr: 0.1,
            ..Hyper::default()
        };
        prop::sample::select(vec![
            d,
            Hyper {
                maximize: true,
                weight_decay: WeightDecay::l2(0.5),
                ..d
            },
            Hyper {
                weight_decay: WeightDecay::Decoupled {
                    weight_decay: 0.5,
                    scaling: crate::DecayScaling::Lr,
                    first_step: true,
                },
                nesterov: true,
                ..d
            },
            Hyper {
                betas: (0.3, 0.5),
                caution: Caution::Timm,
                eps: 0.0,
                ..d
            },
            Hyper {
                caution: Caution::PytorchOptimizer,
                ..d
            },
        ])
    }

    /// The model of [`step_typed`] (or, with `master`, of
    /// [`step_master_typed`]) over one buffer.
    #[allow(clippy::too_many_arguments)]
    fn model<P: Lane, G: Lane, M: Lane, V: Lane>(
        master: Option<&mut [f32]>,
        p: &mut [P],
        g: &[G],
        m: &mut [M],
        v: &mut [V],
        k: &StepConstants,
        rounding: Rounding,
        first_lane: u64,
    ) {
        let round = |x: f32, lane: usize| match rounding {
            Rounding::NearestEven => P::from_f32(x),
            Rounding::Stochastic { seed } => P::from_f32_stochastic(
                x,
                generic::random_bits(seed, k.step, first_lane + lane as u64),
            ),
        };
        let mut master = master;
        for i in 0..p.len() {
            let mut pf = match &master {
                Some(master) => master[i],
                None => p[i].to_f32(),
            };
            let (mut mf, mut vf) = (m[i].to_f32(), v[i].to_f32());
            let before = pf.to_bits();
            reference::update_lane(&mut pf, g[i].to_f32(), &mut mf, &mut vf, k);
            match &mut master {
                Some(master) => {
                    master[i] = pf;
                    p[i] = round(pf, i);
                }
                // A lane the step leaves alone keeps its storage bits.
                None if pf.to_bits() == before => {}
                None => p[i] = round(pf, i),
            }
            if k.step > 0 {
                m[i] = M::from_f32(mf);
            }
            v[i] = V::from_f32(vf);
        }
    }

    fn check<P: Lane, G: Lane, M: Lane, V: SecondMoment>(
        values: &[f32],
        hyper: &Hyper,
        step: u64,
        rounding: Rounding,
        first_lane: u64,
        with_master: bool,
    ) -> Result<(), TestCaseError> {
        let n = values.len() / 4;
        let lanes = |j: usize| values[j * n..(j + 1) * n].iter().copied();
        let p0: Vec<P> = lanes(0).map(P::from_f32).collect();
        let g: Vec<G> = lanes(1).map(G::from_f32).collect();
        let m0: Vec<M> = lanes(2).map(M::from_f32).collect();
        let v0: Vec<V> = lanes(3).map(|x| V::from_f32(x.abs())).collect();
        let master0: Vec<f32> = lanes(0).collect();
        let Ok(mut k) = hyper.constants(step) else {
            return Ok(());
        };
        for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
            if hyper.caution != Caution::Off && step > 0 {
                let count = caution_count_typed(kernel, &p0, &g, &m0, &v0, &k);
                let want = (0..n)
                    .filter(|&i| {
                        reference::caution_lane(
                            p0[i].to_f32(),
                            g[i].to_f32(),
                            m0[i].to_f32(),
                            v0[i].to_f32(),
                            &k,
                        )
                    })
                    .count() as u64;
                prop_assert_eq!(count, want, "{} caution count", kernel.name());
                k.caution_scale = Some(
                    CautionMask {
                        count,
                        lanes: n as u64,
                    }
                    .scale(hyper.caution),
                );
            }
            let (mut p, mut m, mut v, mut master) =
                (p0.clone(), m0.clone(), v0.clone(), master0.clone());
            let (mut pr, mut mr, mut vr, mut masterr) =
                (p0.clone(), m0.clone(), v0.clone(), master0.clone());
            if with_master {
                step_master_typed(
                    kernel,
                    &mut master,
                    &mut p,
                    &g,
                    &mut m,
                    &mut v,
                    &k,
                    rounding,
                    first_lane,
                );
                model(
                    Some(&mut masterr),
                    &mut pr,
                    &g,
                    &mut mr,
                    &mut vr,
                    &k,
                    rounding,
                    first_lane,
                );
                prop_assert!(same(&master, &masterr), "{} master", kernel.name());
            } else {
                step_typed(kernel, &mut p, &g, &mut m, &mut v, &k, rounding, first_lane);
                model(
                    None, &mut pr, &g, &mut mr, &mut vr, &k, rounding, first_lane,
                );
            }
            prop_assert!(
                same(&p, &pr),
                "{} {} params {:?}\n got {:?}\nwant {:?}\n g {:?}",
                kernel.name(),
                core::any::type_name::<(P, G, M, V)>(),
                k,
                p.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                pr.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
                g.iter().map(|x| x.to_f32()).collect::<Vec<_>>()
            );
            prop_assert!(same(&m, &mr), "{} exp_avg", kernel.name());
            prop_assert!(same(&v, &vr), "{} exp_avg_sq", kernel.name());
        }
        Ok(())
    }

    fn run(
        values: &[f32],
        hyper: &Hyper,
        step: u64,
        rounding: Rounding,
        first_lane: u64,
    ) -> Result<(), TestCaseError> {
        check::<bf16, bf16, bf16, bf16>(values, hyper, step, rounding, first_lane, false)?;
        check::<f16, f16, f32, f32>(values, hyper, step, rounding, first_lane, false)?;
        check::<f32, bf16, f16, bf16>(values, hyper, step, rounding, first_lane, false)?;
        check::<bf16, f32, f32, f32>(values, hyper, step, rounding, first_lane, false)?;
        check::<f32, f32, f32, f32>(values, hyper, step, rounding, first_lane, false)?;
        check::<bf16, bf16, f32, f32>(values, hyper, step, rounding, first_lane, true)?;
        check::<f16, bf16, bf16, bf16>(values, hyper, step, rounding, first_lane, true)?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 200 }))]
        #[test]
        fn typed_steps_match_the_scalar_model_on_every_kernel(
            lanes in 0_usize..70,
            values in prop::collection::vec(value(), 280),
            hyper in hyper(),
            step in prop::sample::select(vec![0_u64, 1, 7]),
            stochastic in any::<bool>(),
            // Near a change of the lane index's high half too.
            first_lane in prop::sample::select(vec![0_u64, 3, (1 << 32) - 5, (1 << 32) - 40, 1 << 40]),
        ) {
            let values = &values[..4 * lanes];
            let rounding = if stochastic { Rounding::Stochastic { seed: 42 } } else { Rounding::NearestEven };
            run(values, &hyper, step, rounding, first_lane)?;
        }
    }
}
