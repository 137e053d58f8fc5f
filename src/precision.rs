//! Half-precision buffers (feature `half`): parameters and gradients in
//! `bf16` or `f16`, optimizer state `m`, `v` in `f32` or `bf16`, and an
//! optional f32 master copy of the parameters.
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
use crate::hyper::{CautionMask, Hyper, StepConstants};
use crate::kernel::Kernel;
use crate::state::StateView;
use half::{bf16, f16};

/// Lanes converted per block (stack buffers of 4 × 512 f32).
pub const BLOCK: usize = 512;

/// A storage type for f32 lanes: `f32`, `bf16` or `f16`.
pub trait Lane: Copy + Send + Sync + 'static {
    /// Widens exactly to f32.
    fn to_f32(self) -> f32;
    /// Rounds an f32 to nearest, ties to even.
    fn from_f32(x: f32) -> Self;
    /// Rounds an f32 stochastically with 16 random bits, where the type
    /// supports it (bf16); others round to nearest.
    fn from_f32_stochastic(x: f32, _random: u16) -> Self {
        Self::from_f32(x)
    }
}

impl Lane for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(x: f32) -> Self {
        x
    }
}

// The bf16 conversions are written out (bit operations the compiler
// vectorises) rather than called from `half`, whose per-lane calls do not.
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
    fn from_f32_stochastic(x: f32, random: u16) -> Self {
        if !x.is_finite() {
            return bf16::from_f32(x);
        }
        let bits = x.to_bits().wrapping_add(random as u32);
        // A carry into the exponent rounds up to the next binade, or to inf
        // past the largest bf16, as rounding up should.
        bf16::from_bits((bits >> 16) as u16)
    }
}

impl Lane for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// How f32 results are rounded into half-precision parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rounding {
    /// To nearest, ties to even.
    #[default]
    NearestEven,
    /// Stochastic rounding of bf16 parameters (f16 and f32 round to
    /// nearest), from a counter-based generator: the random bits of a lane
    /// depend only on `(seed, step, lane index)`, so parallel chunks agree
    /// with serial and runs repeat exactly.
    Stochastic {
        /// Chooses the random stream.
        seed: u64,
    },
}

/// 16 random bits for a lane: SplitMix64 of (seed, step, lane).
fn random_bits(seed: u64, step: u64, lane: u64) -> u16 {
    let mut z =
        seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ lane.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u16
}

/// One block of the four buffers, as the chunk iterators yield it.
type BlockOf<'a, P, G, S> = ((&'a mut [P], &'a [G]), (&'a mut [S], &'a mut [S]));

/// One block: widen, step with the kernel, round back.
#[allow(clippy::too_many_arguments)]
fn step_block<P: Lane, G: Lane, S: Lane>(
    kernel: Kernel,
    p: &mut [P],
    g: &[G],
    m: &mut [S],
    v: &mut [S],
    k: &StepConstants,
    rounding: Rounding,
    first_lane: u64,
) {
    let n = p.len();
    let mut buf = [[0.0_f32; BLOCK]; 4];
    let [bp, bg, bm, bv] = &mut buf;
    bp.iter_mut()
        .zip(p.iter())
        .for_each(|(b, x)| *b = x.to_f32());
    bg.iter_mut().zip(g).for_each(|(b, x)| *b = x.to_f32());
    bm.iter_mut()
        .zip(m.iter())
        .for_each(|(b, x)| *b = x.to_f32());
    bv.iter_mut()
        .zip(v.iter())
        .for_each(|(b, x)| *b = x.to_f32());
    kernel.run(&mut bp[..n], &bg[..n], &mut bm[..n], &mut bv[..n], k);
    match rounding {
        Rounding::NearestEven => p
            .iter_mut()
            .zip(&bp[..n])
            .for_each(|(p, &x)| *p = P::from_f32(x)),
        Rounding::Stochastic { seed } => {
            for (i, (p, &x)) in p.iter_mut().zip(&bp[..n]).enumerate() {
                *p = P::from_f32_stochastic(x, random_bits(seed, k.step, first_lane + i as u64));
            }
        }
    }
    m.iter_mut()
        .zip(&bm[..n])
        .for_each(|(m, &x)| *m = S::from_f32(x));
    v.iter_mut()
        .zip(&bv[..n])
        .for_each(|(v, &x)| *v = S::from_f32(x));
}

/// One block's caution count.
fn count_block<P: Lane, G: Lane, S: Lane>(
    kernel: Kernel,
    p: &[P],
    g: &[G],
    m: &[S],
    v: &[S],
    k: &StepConstants,
) -> u64 {
    let n = p.len();
    let mut buf = [[0.0_f32; BLOCK]; 4];
    for i in 0..n {
        buf[0][i] = p[i].to_f32();
        buf[1][i] = g[i].to_f32();
        buf[2][i] = m[i].to_f32();
        buf[3][i] = v[i].to_f32();
    }
    kernel.count(&buf[0][..n], &buf[1][..n], &buf[2][..n], &buf[3][..n], k)
}

/// The step over any mix of storage types: parameters `P`, gradients `G`,
/// state `S` (`f32`, `bf16` or `f16` each), with f32 arithmetic identical to
/// [`adopt_step`](crate::adopt_step) on the widened values.
///
/// Validation (lengths, hyperparameters, step count) runs before any write;
/// on error nothing changes.
#[allow(clippy::too_many_arguments)]
pub fn adopt_step_half<P: Lane, G: Lane, S: Lane>(
    params: &mut [P],
    grads: &[G],
    exp_avg: &mut [S],
    exp_avg_sq: &mut [S],
    step: &mut u64,
    hyper: &Hyper,
    rounding: Rounding,
) -> Result<(), Error> {
    let lanes = params.len();
    for (buffer, got) in [
        (Buffer::Grads, grads.len()),
        (Buffer::ExpAvg, exp_avg.len()),
        (Buffer::ExpAvgSq, exp_avg_sq.len()),
    ] {
        if got != lanes {
            return Err(Error::LengthMismatch {
                buffer,
                expected: lanes,
                got,
            });
        }
    }
    if *step == u64::MAX {
        return Err(Error::StepOverflow);
    }
    let mut k = hyper.constants(*step)?;
    let kernel = Kernel::active();
    let blocks = || {
        params
            .chunks(BLOCK)
            .zip(grads.chunks(BLOCK))
            .zip(exp_avg.chunks(BLOCK).zip(exp_avg_sq.chunks(BLOCK)))
    };
    if hyper.cautious && k.step > 0 {
        let count = blocks()
            .map(|((p, g), (m, v))| count_block(kernel, p, g, m, v, &k))
            .sum();
        k.caution_scale = Some(
            CautionMask {
                count,
                lanes: lanes as u64,
            }
            .scale(),
        );
    }
    let run = |(i, ((p, g), (m, v))): (usize, BlockOf<'_, P, G, S>)| {
        step_block(kernel, p, g, m, v, &k, rounding, (i * BLOCK) as u64)
    };
    #[cfg(feature = "rayon")]
    if lanes >= crate::PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        params
            .par_chunks_mut(BLOCK)
            .zip(grads.par_chunks(BLOCK))
            .zip(
                exp_avg
                    .par_chunks_mut(BLOCK)
                    .zip(exp_avg_sq.par_chunks_mut(BLOCK)),
            )
            .enumerate()
            .with_min_len(32) // tasks of at least 16K lanes
            .for_each(run);
        *step += 1;
        return Ok(());
    }
    params
        .chunks_mut(BLOCK)
        .zip(grads.chunks(BLOCK))
        .zip(exp_avg.chunks_mut(BLOCK).zip(exp_avg_sq.chunks_mut(BLOCK)))
        .enumerate()
        .for_each(run);
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
    let step_before = *state.step;
    adopt_step_half(
        master,
        grads,
        state.exp_avg,
        state.exp_avg_sq,
        state.step,
        hyper,
        Rounding::NearestEven,
    )?;
    for (i, (p, &x)) in params.iter_mut().zip(master.iter()).enumerate() {
        *p = match rounding {
            Rounding::NearestEven => P::from_f32(x),
            Rounding::Stochastic { seed } => {
                P::from_f32_stochastic(x, random_bits(seed, step_before, i as u64))
            }
        };
    }
    Ok(())
}
