//! Choosing the kernel: once per process, cached in an atomic.

use crate::error::Error;
use crate::hyper::StepConstants;
use core::sync::atomic::{AtomicU8, Ordering};

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

const UNDECIDED: u8 = u8::MAX;
/// `ADOPT_KERNEL` names no kernel.
const UNKNOWN_ENV: u8 = u8::MAX - 1;
/// `ADOPT_KERNEL` names a kernel this CPU cannot run, at this index plus
/// [`UNAVAILABLE_ENV`].
const UNAVAILABLE_ENV: u8 = 0x80;

/// The active kernel's index in [`Kernel::ALL`], or [`UNDECIDED`], or why
/// `ADOPT_KERNEL` cannot be followed.
static ACTIVE: AtomicU8 = AtomicU8::new(UNDECIDED);

impl Kernel {
    /// Every kernel, in order of preference (fastest last).
    pub const ALL: [Kernel; 4] = [
        Kernel::Portable,
        Kernel::Neon,
        Kernel::Avx2Fma,
        Kernel::Avx512F,
    ];

    /// A short name for logs: `"portable"`, `"avx2+fma"`, `"avx512f"`, `"neon"`.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2Fma => "avx2+fma",
            Kernel::Avx512F => "avx512f",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU (and build) can run the kernel. Detected at run time
    /// with `std`, from the compile-time target features without it. Under
    /// Miri only the portable kernel is available.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernel::Avx2Fma => {
                #[cfg(feature = "std")]
                {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
                #[cfg(not(feature = "std"))]
                {
                    cfg!(all(target_feature = "avx2", target_feature = "fma"))
                }
            }
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernel::Avx512F => {
                #[cfg(feature = "std")]
                {
                    // Its tails use AVX2 + FMA vectors, which every AVX-512
                    // CPU has; checked all the same.
                    std::is_x86_feature_detected!("avx512f")
                        && std::is_x86_feature_detected!("avx2")
                        && std::is_x86_feature_detected!("fma")
                }
                #[cfg(not(feature = "std"))]
                {
                    cfg!(all(
                        target_feature = "avx512f",
                        target_feature = "avx2",
                        target_feature = "fma"
                    ))
                }
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Kernel::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The fastest kernel this CPU can run.
    pub fn best() -> Kernel {
        Kernel::ALL
            .into_iter()
            .rev()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Portable)
    }

    /// The kernel [`adopt_step`](crate::adopt_step) uses: the one set by
    /// [`Kernel::force`], else the one named by the `ADOPT_KERNEL`
    /// environment variable (with `std`; e.g. `ADOPT_KERNEL=portable`, names
    /// in any case), else [`Kernel::best`]. Decided on first use and cached.
    ///
    /// Returns [`Error::UnknownKernel`] if `ADOPT_KERNEL` names no kernel,
    /// and [`Error::KernelUnavailable`] if it names one this CPU cannot
    /// run: every step that uses the active kernel returns the same error,
    /// before writing anything.
    ///
    /// ```
    /// use adopt::Kernel;
    /// println!("ADOPT kernel: {}", Kernel::try_active()?.name());
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn try_active() -> Result<Kernel, Error> {
        match ACTIVE.load(Ordering::Relaxed) {
            UNDECIDED => {
                let decision = match Kernel::from_env() {
                    Ok(Some(kernel)) if kernel.is_available() => Kernel::index(kernel),
                    Ok(Some(kernel)) => UNAVAILABLE_ENV + Kernel::index(kernel),
                    Ok(None) => Kernel::index(Kernel::best()),
                    Err(_) => UNKNOWN_ENV,
                };
                ACTIVE.store(decision, Ordering::Relaxed);
                Kernel::decode(decision)
            }
            decision => Kernel::decode(decision),
        }
    }

    /// The cached decision as a kernel or the error it stands for.
    fn decode(decision: u8) -> Result<Kernel, Error> {
        // Only `from_env` with `std` finds an unknown name.
        #[cfg(feature = "std")]
        if decision == UNKNOWN_ENV {
            return Err(Kernel::from_env().err().unwrap_or(Error::UnknownKernel {
                value: std::string::String::new(),
            }));
        }
        let last = Kernel::ALL.len() - 1;
        if decision >= UNAVAILABLE_ENV {
            let i = usize::from(decision - UNAVAILABLE_ENV).min(last);
            return Err(Error::KernelUnavailable(Kernel::ALL[i]));
        }
        Ok(Kernel::ALL[usize::from(decision).min(last)])
    }

    /// [`try_active`](Kernel::try_active) for logs: the kernel steps use,
    /// or, when `ADOPT_KERNEL` cannot be followed (steps then return the
    /// error `try_active` returns), [`Kernel::best`].
    pub fn active() -> Kernel {
        Kernel::try_active().unwrap_or_else(|_| Kernel::best())
    }

    /// Makes every later step of this process use `kernel` (for example
    /// `Kernel::Portable` while debugging), or, with `None`, return to the
    /// automatic choice: `ADOPT_KERNEL` (read again) or [`Kernel::best`].
    /// Returns `false`, changing nothing, if `kernel` is not available on
    /// this CPU.
    ///
    /// ```
    /// use adopt::Kernel;
    /// assert!(Kernel::force(Some(Kernel::Portable)));
    /// assert_eq!(Kernel::active(), Kernel::Portable);
    /// Kernel::force(None);
    /// assert_eq!(Kernel::active(), Kernel::best()); // unless ADOPT_KERNEL says otherwise
    /// ```
    pub fn force(kernel: Option<Kernel>) -> bool {
        match kernel {
            Some(k) if !k.is_available() => false,
            Some(k) => {
                ACTIVE.store(Kernel::index(k), Ordering::Relaxed);
                true
            }
            None => {
                ACTIVE.store(UNDECIDED, Ordering::Relaxed);
                true
            }
        }
    }

    /// The kernel whose [`name`](Kernel::name) is `name`, in any case
    /// (surrounding whitespace ignored), available or not.
    ///
    /// ```
    /// use adopt::Kernel;
    /// assert_eq!(Kernel::from_name("Portable"), Some(Kernel::Portable));
    /// assert_eq!(Kernel::from_name("AVX2+FMA"), Some(Kernel::Avx2Fma));
    /// assert_eq!(Kernel::from_name("avx2"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Kernel> {
        let name = name.trim();
        Kernel::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(name))
    }

    fn index(kernel: Kernel) -> u8 {
        Kernel::ALL.iter().position(|&k| k == kernel).unwrap_or(0) as u8
    }

    /// The kernel `ADOPT_KERNEL` names (`None` when it is unset), or
    /// [`Error::UnknownKernel`].
    fn from_env() -> Result<Option<Kernel>, Error> {
        #[cfg(all(feature = "std", not(miri)))]
        {
            let Some(value) = std::env::var_os("ADOPT_KERNEL") else {
                return Ok(None);
            };
            let value = value.to_string_lossy();
            Kernel::from_name(&value)
                .map(Some)
                .ok_or_else(|| Error::UnknownKernel {
                    value: value.as_ref().into(),
                })
        }
        #[cfg(not(all(feature = "std", not(miri))))]
        {
            Ok(None)
        }
    }

    /// Steps equal-length slices with this kernel, which must be available.
    #[inline]
    pub(crate) fn run(
        self,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        k: &StepConstants,
    ) {
        debug_assert!(self.is_available());
        match self {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: `Avx2Fma` is only active or requested once
            // `is_available` detected avx2 + fma (checked by callers).
            Kernel::Avx2Fma => unsafe { super::x86_64::step_avx2(p, g, m, v, k) },
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as above, for avx512f, avx2 and fma.
            Kernel::Avx512F => unsafe { super::x86_64::step_avx512(p, g, m, v, k) },
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Kernel::Neon => super::aarch64::step_neon(p, g, m, v, k),
            _ => super::portable::step(p, g, m, v, k),
        }
    }
}

impl Kernel {
    /// Steps every job with this kernel, which must be available, in one
    /// function compiled for it.
    #[inline]
    #[cfg(feature = "alloc")]
    pub(crate) fn run_each<'a>(self, jobs: impl Iterator<Item = super::Job<'a>>) {
        debug_assert!(self.is_available());
        match self {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as in `run`; job lengths are checked by their callers.
            Kernel::Avx2Fma => unsafe { super::x86_64::step_each_avx2(jobs) },
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as above, for avx512f, avx2 and fma.
            Kernel::Avx512F => unsafe { super::x86_64::step_each_avx512(jobs) },
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Kernel::Neon => super::aarch64::step_each_neon(jobs),
            _ => super::portable::step_each(jobs),
        }
    }
}

impl Kernel {
    /// Runs `f` inside a function compiled for this kernel's instruction
    /// set, which must be available, so that the loops `f` inlines are
    /// vectorised for it (the portable and NEON kernels just call `f`).
    #[cfg(feature = "half")]
    #[inline]
    pub(crate) fn within<R>(self, f: impl FnOnce() -> R) -> R {
        debug_assert!(self.is_available());
        match self {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as in `run`.
            Kernel::Avx2Fma => unsafe { super::x86_64::within_avx2(f) },
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as in `run`.
            Kernel::Avx512F => unsafe { super::x86_64::within_avx512(f) },
            _ => f(),
        }
    }
}

impl Kernel {
    /// Counts the lanes passing the caution mask with this kernel, which must
    /// be available.
    pub(crate) fn count(
        self,
        p: &[f32],
        g: &[f32],
        m: &[f32],
        v: &[f32],
        k: &StepConstants,
    ) -> u64 {
        debug_assert!(self.is_available());
        match self {
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as in `run`.
            Kernel::Avx2Fma => unsafe { super::x86_64::count_avx2(p, g, m, v, k) },
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            // SAFETY: as in `run`.
            Kernel::Avx512F => unsafe { super::x86_64::count_avx512(p, g, m, v, k) },
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Kernel::Neon => super::aarch64::count_neon(p, g, m, v, k),
            _ => super::portable::count(p, g, m, v, k),
        }
    }
}
