//! The SIMD kernels: one generic step body over a small vector trait,
//! instantiated per instruction set.
//!
//! Every instantiation performs exactly the operations of
//! [`reference::update_lane`](crate::reference::update_lane), in the same
//! order, with the same roundings, so each is bit-identical to it.

#[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
mod aarch64;
mod dispatch;
pub(crate) mod portable;
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod x86_64;

pub use dispatch::Kernel;

use crate::hyper::{Caution, Decay, StepConstants};

/// The widest vector any kernel uses, in f32 lanes (AVX-512).
const MAX_LANES: usize = 16;

/// The operations the step needs from a vector of f32 lanes.
///
/// Each method must round exactly as the scalar operation of the same name in
/// [`reference`](crate::reference) does, lane by lane.
///
/// # Safety
///
/// The methods may execute instructions of one instruction set: callers must
/// only call them (and instantiate the generic step with the type) where the
/// CPU supports it, which [`Kernel::is_available`] checks.
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
    unsafe fn splat(x: f32) -> Self;
    unsafe fn sub(self, rhs: Self) -> Self;
    unsafe fn mul(self, rhs: Self) -> Self;
    unsafe fn div(self, rhs: Self) -> Self;
    /// Correctly rounded square root.
    unsafe fn sqrt(self) -> Self;
    /// `self·b + c` with one rounding.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Flips the sign bit (exact negation, also of zeros and NaN).
    unsafe fn neg(self) -> Self;
    /// `self < rhs ? rhs : self`, lane by lane (keeps NaN in `self`).
    unsafe fn max_keep_nan(self, floor: Self) -> Self;
    /// `self > hi ? hi : self`, lane by lane (keeps NaN in `self`).
    unsafe fn min_keep_nan(self, hi: Self) -> Self;
    /// `self > 0 ? then : +0.0`, lane by lane (NaN selects `+0.0`).
    unsafe fn positive_select(self, then: Self) -> Self;
    /// How many of the first `n` lanes are `> 0` (NaN does not count).
    #[inline(always)]
    unsafe fn count_positive(self, n: usize) -> u32 {
        let mut buf = [0.0_f32; MAX_LANES];
        // SAFETY: the caller's guarantee of the ISA carries over.
        unsafe { self.store(&mut buf) };
        buf[..n].iter().filter(|&&x| x > 0.0).count() as u32
    }
}

/// The step constants splatted into vectors once per call.
struct Splat<V> {
    inv_scale: V,
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

// In the functions below, every `unsafe` operation is a method of
// `F32Vector`: their callers guarantee its instruction set (the contract of
// `step_generic`), so each `unsafe` block inherits that guarantee.

impl<V: F32Vector> Splat<V> {
    #[inline(always)]
    unsafe fn new(k: &StepConstants) -> Self {
        let decay = match k.decay {
            Decay::None => 0.0,
            Decay::L2(wd) => wd,
            Decay::Decoupled(neg_lr_wd) => neg_lr_wd,
        };
        // SAFETY: see the note above.
        unsafe {
            Splat {
                inv_scale: V::splat(k.inv_scale),
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
unsafe fn load<V: F32Vector, const PARTIAL: bool>(src: &[f32]) -> V {
    // SAFETY: see the note above.
    unsafe {
        if PARTIAL {
            V::load_partial(src)
        } else {
            V::load(src)
        }
    }
}

#[inline(always)]
unsafe fn store<V: F32Vector, const PARTIAL: bool>(x: V, dst: &mut [f32]) {
    // SAFETY: see the note above.
    unsafe {
        if PARTIAL {
            x.store_partial(dst)
        } else {
            x.store(dst)
        }
    }
}

/// The gradient as the step sees it: unscaled, negated if maximising, plus
/// the L2 term.
#[inline(always)]
unsafe fn effective_grad<V: F32Vector>(p: V, grad: V, k: &StepConstants, s: &Splat<V>) -> V {
    // SAFETY: see the note above.
    unsafe {
        let grad = if k.inv_scale != 1.0 {
            grad.mul(s.inv_scale)
        } else {
            grad
        };
        let g = if k.maximize { grad.neg() } else { grad };
        match k.decay {
            Decay::L2(_) => s.decay.mul_add(p, g),
            _ => g,
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
    k: &StepConstants,
    s: &Splat<V>,
) -> (V, V, V) {
    // SAFETY: see the note above.
    unsafe {
        let denom = vv.sqrt().max_keep_nan(s.eps);
        let normed = g.div(denom).max_keep_nan(s.neg_clip).min_keep_nan(s.clip);
        // torch's two-form lerp (see `reference::lerp`).
        let start = if k.lerp_from_end { normed } else { mv };
        let mv = s.lerp_factor.mul_add(normed.sub(mv), start);
        let u = if k.nesterov {
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
unsafe fn caution_product<V: F32Vector>(u: V, g: V, normed: V, k: &StepConstants) -> V {
    // SAFETY: see the note above.
    unsafe {
        match k.caution {
            Caution::PytorchOptimizer => u.mul(normed),
            Caution::Off | Caution::Timm => u.mul(g),
        }
    }
}

/// One vector of lanes of a step after the first.
#[inline(always)]
unsafe fn update<V: F32Vector, const PARTIAL: bool>(
    p: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
    s: &Splat<V>,
) {
    // SAFETY: see the note above.
    unsafe {
        let mut pv = load::<V, PARTIAL>(p);
        let g = effective_grad(pv, load::<V, PARTIAL>(grad), k, s);
        if let Decay::Decoupled(_) = k.decay {
            pv = s.decay.mul_add(pv, pv);
        }
        let (mv, vv) = (load::<V, PARTIAL>(m), load::<V, PARTIAL>(v));
        let (mv, mut update, normed) = moment_and_direction(g, mv, vv, k, s);
        if k.caution_scale.is_some() {
            let agree = caution_product(update, g, normed, k);
            update = update.mul(agree.positive_select(s.caution_scale));
        }
        pv = s.neg_lr.mul_add(update, pv);
        let vv = s.one_minus_beta2.mul(g).mul_add(g, s.beta2.mul(vv));
        store::<V, PARTIAL>(pv, p);
        store::<V, PARTIAL>(mv, m);
        store::<V, PARTIAL>(vv, v);
    }
}

/// One vector of lanes of the first step: `v = g·g`, and `m` does not
/// move; `p` moves only with first-step decoupled decay.
#[inline(always)]
unsafe fn initialise<V: F32Vector, const PARTIAL: bool>(
    p: &mut [f32],
    grad: &[f32],
    _m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
    s: &Splat<V>,
) {
    // SAFETY: see the note above.
    unsafe {
        let pv = load::<V, PARTIAL>(p);
        let g = effective_grad(pv, load::<V, PARTIAL>(grad), k, s);
        if let Decay::Decoupled(_) = k.decay {
            store::<V, PARTIAL>(s.decay.mul_add(pv, pv), p);
        }
        store::<V, PARTIAL>(g.mul(g), v);
    }
}

type VectorFn<V> = unsafe fn(&mut [f32], &[f32], &mut [f32], &mut [f32], &StepConstants, &Splat<V>);

/// Runs `whole` over the whole vectors of the slices (the lanes past the
/// last whole vector are left alone).
#[inline(always)]
unsafe fn whole_vectors<V: F32Vector>(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
    whole: VectorFn<V>,
) {
    // SAFETY: see the note above.
    let s = unsafe { Splat::<V>::new(k) };
    let chunks = p
        .chunks_exact_mut(V::LANES)
        .zip(g.chunks_exact(V::LANES))
        .zip(m.chunks_exact_mut(V::LANES))
        .zip(v.chunks_exact_mut(V::LANES));
    for (((pc, gc), mc), vc) in chunks {
        // SAFETY: see the note above.
        unsafe { whole(pc, gc, mc, vc, k, &s) };
    }
}

/// One vector of lanes (`PARTIAL`: fewer), of the first step or a later one
/// as `k.step` says.
#[inline(always)]
unsafe fn vector<V: F32Vector, const PARTIAL: bool>(
    p: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    // SAFETY: see the note above.
    unsafe {
        let s = Splat::<V>::new(k);
        if k.step == 0 {
            initialise::<V, PARTIAL>(p, grad, m, v, k, &s);
        } else {
            update::<V, PARTIAL>(p, grad, m, v, k, &s);
        }
    }
}

/// The generic step: every kernel is this function instantiated for one
/// vector type `V`, with narrower vectors `H` and `Q` of the same
/// instruction set for the tail (ISAs without narrower vectors pass `V`
/// for both). The lanes past the last whole `V` go through one vector, the
/// narrowest of `Q`, `H` and `V` that holds them: whole if they fill it,
/// else partial, with the other lanes zero. Every lane goes through the
/// same arithmetic whichever vector holds it.
///
/// The narrow tail is for speed: a tail's cost is its vector's square root
/// and divide. Against a masked 512-bit tail, a 128-bit one cut the step of
/// 2,000 buffers of 4 lanes by 28%, of 20 lanes by 36% and of 100 lanes by
/// 4% (see BENCHMARKS.md). Two narrow vectors in place of one wider partial
/// one (10 lanes as 8 + 2) were slower.
///
/// The four slices have equal lengths (checked by the caller).
///
/// # Safety
///
/// The CPU must support the instruction sets of `V`, `H` and `Q` (see
/// [`F32Vector`]).
#[inline(always)]
pub(crate) unsafe fn step_generic<V: F32Vector, H: F32Vector, Q: F32Vector>(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    debug_assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
    let lanes = p.len();
    // SAFETY: the caller guarantees the instruction sets.
    unsafe {
        // Two loops, each calling its function directly: through a pointer
        // it would be compiled without the caller's instruction sets.
        if k.step == 0 {
            whole_vectors::<V>(p, g, m, v, k, initialise::<V, false>);
        } else {
            whole_vectors::<V>(p, g, m, v, k, update::<V, false>);
        }
        let at = lanes - lanes % V::LANES;
        let rest = lanes - at;
        if rest == 0 {
            return;
        }
        let (p, g, m, v) = (&mut p[at..], &g[at..], &mut m[at..], &mut v[at..]);
        if Q::LANES < V::LANES && rest <= Q::LANES {
            if rest == Q::LANES {
                vector::<Q, false>(p, g, m, v, k);
            } else {
                vector::<Q, true>(p, g, m, v, k);
            }
        } else if H::LANES < V::LANES && rest <= H::LANES {
            if rest == H::LANES {
                vector::<H, false>(p, g, m, v, k);
            } else {
                vector::<H, true>(p, g, m, v, k);
            }
        } else {
            vector::<V, true>(p, g, m, v, k);
        }
    }
}

/// One buffer's step for [`step_each_generic`]: four equal-length slices
/// and their constants.
#[cfg(feature = "alloc")]
pub(crate) struct Job<'a> {
    pub(crate) p: &'a mut [f32],
    pub(crate) g: &'a [f32],
    pub(crate) m: &'a mut [f32],
    pub(crate) v: &'a mut [f32],
    pub(crate) k: &'a StepConstants,
}

/// [`step_generic`] over every job, in one function compiled for `V`: many
/// small buffers then pay no per-buffer dispatch.
///
/// No software prefetch: fetching the job two ahead made 10,000 buffers of
/// 100 lanes 5% faster when each step found them evicted, but 25% slower
/// when they were in cache (see BENCHMARKS.md).
///
/// # Safety
///
/// As [`step_generic`]; every job's slices have equal lengths.
#[inline(always)]
#[cfg(feature = "alloc")]
pub(crate) unsafe fn step_each_generic<'a, V: F32Vector, H: F32Vector, Q: F32Vector>(
    jobs: impl Iterator<Item = Job<'a>>,
) {
    for j in jobs {
        // SAFETY: guaranteed by the caller.
        unsafe { step_generic::<V, H, Q>(j.p, j.g, j.m, j.v, j.k) }
    }
}

/// The number of lanes passing the caution mask (`u·g > 0`), reading the
/// four equal-length slices and writing nothing: the first pass of a
/// cautious step after the first.
///
/// # Safety
///
/// The CPU must support the instruction set of `V` (see [`F32Vector`]).
#[inline(always)]
pub(crate) unsafe fn count_generic<V: F32Vector>(
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: &StepConstants,
) -> u64 {
    debug_assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
    // SAFETY: the caller guarantees `V`'s instruction set.
    unsafe {
        let s = Splat::<V>::new(k);
        let lanes = V::LANES;
        let agree = |p: V, grad: V, m: V, v: V| {
            let g = effective_grad(p, grad, k, &s);
            let (_, u, normed) = moment_and_direction(g, m, v, k, &s);
            caution_product(u, g, normed, k)
        };
        let mut total = 0_u64;
        let chunks = p
            .chunks_exact(lanes)
            .zip(g.chunks_exact(lanes))
            .zip(m.chunks_exact(lanes))
            .zip(v.chunks_exact(lanes));
        for (((pc, gc), mc), vc) in chunks {
            total += u64::from(
                agree(V::load(pc), V::load(gc), V::load(mc), V::load(vc)).count_positive(lanes),
            );
        }
        let body = p.len() - p.len() % lanes;
        if body < p.len() {
            let x = agree(
                V::load_partial(&p[body..]),
                V::load_partial(&g[body..]),
                V::load_partial(&m[body..]),
                V::load_partial(&v[body..]),
            );
            total += u64::from(x.count_positive(p.len() - body));
        }
        total
    }
}
