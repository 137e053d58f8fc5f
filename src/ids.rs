//! The names the layers pass around: the ids an [`Adopt`](crate::Adopt)
//! hands out, and the kernels (a leaf module: the error type and the
//! hyperparameters name them without depending on the optimizer or the
//! kernels; the kernels' methods are in `kernel/select.rs`).

/// A parameter buffer registered with an [`Adopt`](crate::Adopt); stable for
/// the optimizer's life and across checkpoints (ids are dense, in
/// registration order).
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// A parameter group of an [`Adopt`](crate::Adopt): a set of buffers sharing
/// one [`Hyper`](crate::Hyper).
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

/// A kernel: one instantiation of the generic step for an instruction set.
///
/// Every kernel is bit-identical to [`reference`](mod@crate::reference); they
/// differ only in speed. [`adopt_step`](crate::adopt_step) uses
/// [`Kernel::try_active`], the fastest available unless
/// [`Kernel::force`] or the `ADOPT_KERNEL` environment variable (read on
/// first use, with `std`; a kernel's [`name`](Kernel::name), in any case)
/// says otherwise. An `ADOPT_KERNEL` that names no kernel, or one this CPU
/// cannot run, is an error every step reports, never ignored.
///
/// ```
/// use adopt::Kernel;
/// println!("ADOPT kernel: {}", Kernel::active().name());
/// assert!(Kernel::Portable.is_available());
/// for kernel in Kernel::ALL.into_iter().filter(|k| k.is_available()) {
///     println!("available: {kernel:?}");
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// `wide::f32x8` with the instructions the build was compiled for
    /// (SSE2 in a default x86-64 build; an exact per-lane fma where the build
    /// has no fused multiply-add). Available everywhere.
    Portable,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2Fma,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512F,
    /// aarch64 NEON, 4 lanes.
    Neon,
}
