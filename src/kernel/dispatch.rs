//! The operations of a [`Kernel`]: one match per operation, written once
//! in [`on_isa!`], from the kernel's token (the proof, made by detection,
//! that this CPU runs its instruction set) to that instruction set's entry
//! point. A kernel whose token cannot be had runs the portable code, which
//! is bit-identical; callers check availability first and report
//! [`Error::KernelUnavailable`](crate::Error::KernelUnavailable).

use super::generic::{Isa, Variant, WithVariant, with_variant};
#[cfg(feature = "half")]
use super::generic::{Params, Storage};
use super::select::{Kernel, Token};
use crate::hyper::StepConstants;

/// Runs `$call` with `$isa` naming the entry points of the instruction set
/// whose token `$kernel` has: the portable ones where it has none. With
/// `half`, the entry points that also convert f16 (F16C on x86-64), or the
/// portable ones where the CPU lacks F16C.
///
/// `$isa` is named only inside the arm that matched its token, so each
/// `unsafe` call through it in `$call` has its instruction set proven.
macro_rules! on_isa {
    ($kernel:expr, $isa:ident => $call:expr) => {
        match $kernel.token() {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Token::Avx512F(_) => {
                type $isa = super::x86_64::Avx512F;
                $call
            }
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Token::Avx2Fma(_) => {
                type $isa = super::x86_64::Avx2Fma;
                $call
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Token::Neon(_) => {
                type $isa = super::aarch64::NeonIsa;
                $call
            }
            Token::Portable(_) | Token::Unavailable => {
                type $isa = super::portable::Portable;
                $call
            }
        }
    };
    (half $kernel:expr, $isa:ident => $call:expr) => {
        match $kernel.token() {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Token::Avx512F(t) if t.f16c() => {
                type $isa = super::x86_64::Avx512FF16c;
                $call
            }
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Token::Avx2Fma(t) if t.f16c() => {
                type $isa = super::x86_64::Avx2FmaF16c;
                $call
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Token::Neon(_) => {
                type $isa = super::aarch64::NeonIsa;
                $call
            }
            _ => {
                type $isa = super::portable::Portable;
                $call
            }
        }
    };
}

/// The f32 step of one buffer on instruction set `I`, made with the
/// variant its constants select. Built only inside [`on_isa!`].
struct Step<'a, I> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    k: &'a StepConstants,
    isa: core::marker::PhantomData<I>,
}

impl<I: Isa> WithVariant for Step<'_, I> {
    type Output = ();
    #[inline(always)]
    fn call<O: Variant>(self) {
        // SAFETY: a `Step<I>` is made only in the arm of `on_isa!` whose
        // token proves `I`'s instruction set.
        unsafe { I::step::<O>(self.p, self.g, self.m, self.v, self.k) }
    }
}

impl Kernel {
    /// Steps equal-length f32 slices with this kernel (the portable code if
    /// it is not available), specialised for the configuration `k` selects.
    #[inline]
    pub(crate) fn run(
        self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        k: &StepConstants,
    ) {
        on_isa!(self, I => with_variant(k, Step::<I> {
            p,
            g,
            m,
            v,
            k,
            isa: core::marker::PhantomData,
        }))
    }

    /// Steps every job with this kernel, in one function compiled for it.
    #[inline]
    #[cfg(feature = "alloc")]
    pub(crate) fn run_each<'a>(self, jobs: impl Iterator<Item = super::Job<'a>>) {
        // SAFETY: `on_isa!` names `I` only where its token proves it.
        on_isa!(self, I => unsafe { I::step_each(jobs) })
    }

    /// Counts the lanes of equal-length f32 slices passing the caution
    /// mask.
    pub(crate) fn count(
        self,
        p: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        k: &StepConstants,
    ) -> u64 {
        // SAFETY: `on_isa!` names `I` only where its token proves it.
        on_isa!(self, I => unsafe { I::count(p, g, m, v, k) })
    }

    /// Steps equal-length buffers of any storage types, loaded and stored
    /// in registers (see [`Params`] for where the parameters go).
    #[cfg(feature = "half")]
    #[inline]
    pub(crate) fn run_typed<X: Params, G: Storage, M: Storage, W: Storage>(
        self,
        out: X,
        g: &[G],
        m: &mut [M],
        v: &mut [W],
        k: &StepConstants,
    ) {
        // SAFETY: `on_isa!` names `I` only where its token proves it.
        on_isa!(half self, I => unsafe { I::step_typed(out, g, m, v, k) })
    }

    /// The caution count over buffers of any storage types.
    #[cfg(feature = "half")]
    pub(crate) fn count_typed<P: Storage, G: Storage, M: Storage, W: Storage>(
        self,
        p: &[P],
        g: &[G],
        m: &[M],
        v: &[W],
        k: &StepConstants,
    ) -> u64 {
        // SAFETY: `on_isa!` names `I` only where its token proves it.
        on_isa!(half self, I => unsafe { I::count(p, g, m, v, k) })
    }
}
