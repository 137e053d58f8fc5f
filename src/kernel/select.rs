//! Kernel names, detection and the choice of one per process (cached in an
//! atomic), and the tokens that prove an instruction set is present.
//!
//! A token is a zero-sized value that only detection can make (memchr's
//! pattern): holding one proves the CPU runs its instruction set, so the
//! dispatch that matches on [`Kernel::token`] calls that instruction set's
//! code without an assumption left to check.

use crate::error::Error;
use core::sync::atomic::{AtomicU8, Ordering};

pub use crate::ids::Kernel;

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
        !matches!(self.token(), Token::Unavailable)
    }

    /// The proof that this CPU runs the kernel, or [`Token::Unavailable`].
    #[inline]
    pub(crate) fn token(self) -> Token {
        match self {
            Kernel::Portable => Token::Portable(PortableToken(())),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernel::Avx2Fma => Avx2FmaToken::detect().map_or(Token::Unavailable, Token::Avx2Fma),
            #[cfg(all(target_arch = "x86_64", not(miri)))]
            Kernel::Avx512F => Avx512FToken::detect().map_or(Token::Unavailable, Token::Avx512F),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
            Kernel::Neon => Token::Neon(NeonToken(())),
            #[allow(unreachable_patterns)]
            _ => Token::Unavailable,
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
}

/// What [`Kernel::token`] found: the proof of one instruction set, or that
/// this CPU (or build) cannot run the kernel.
#[derive(Clone, Copy)]
pub(crate) enum Token {
    /// The portable kernel, which runs everywhere.
    Portable(PortableToken),
    /// AVX2 and FMA.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    Avx2Fma(Avx2FmaToken),
    /// AVX-512F, AVX2 and FMA.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    Avx512F(Avx512FToken),
    /// NEON.
    #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
    Neon(NeonToken),
    /// The kernel cannot run here.
    Unavailable,
}

/// Proof of nothing: the portable kernel runs on every CPU this build runs
/// on.
#[derive(Clone, Copy)]
pub(crate) struct PortableToken(());

/// Proof that the CPU runs AVX2 and FMA: made only by [`Avx2FmaToken::detect`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[derive(Clone, Copy)]
pub(crate) struct Avx2FmaToken(());

#[cfg(all(target_arch = "x86_64", not(miri)))]
impl Avx2FmaToken {
    /// Detected at run time with `std`, from the compile-time target
    /// features without it.
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        #[cfg(feature = "std")]
        let found = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        #[cfg(not(feature = "std"))]
        let found = cfg!(all(target_feature = "avx2", target_feature = "fma"));
        found.then_some(Avx2FmaToken(()))
    }

    /// Whether the CPU also has F16C, which the kernel's f16 loads and
    /// stores use.
    #[cfg(feature = "half")]
    #[inline]
    pub(crate) fn f16c(self) -> bool {
        #[cfg(feature = "std")]
        {
            std::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(feature = "std"))]
        {
            cfg!(target_feature = "f16c")
        }
    }
}

/// Proof that the CPU runs AVX-512F, AVX2 and FMA (the kernel's tails use
/// AVX2 + FMA vectors, which every AVX-512 CPU has; checked all the same):
/// made only by [`Avx512FToken::detect`].
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[derive(Clone, Copy)]
pub(crate) struct Avx512FToken(());

#[cfg(all(target_arch = "x86_64", not(miri)))]
impl Avx512FToken {
    /// Detected at run time with `std`, from the compile-time target
    /// features without it.
    #[inline]
    pub(crate) fn detect() -> Option<Self> {
        let avx2 = Avx2FmaToken::detect().is_some();
        #[cfg(feature = "std")]
        let found = avx2 && std::is_x86_feature_detected!("avx512f");
        #[cfg(not(feature = "std"))]
        let found = avx2 && cfg!(target_feature = "avx512f");
        found.then_some(Avx512FToken(()))
    }

    /// Whether the CPU also has F16C (see [`Avx2FmaToken::f16c`]).
    #[cfg(feature = "half")]
    #[inline]
    pub(crate) fn f16c(self) -> bool {
        Avx2FmaToken(()).f16c()
    }
}

/// Proof that the CPU runs NEON: the aarch64 baseline this build was
/// compiled for (`target_feature = "neon"`).
#[cfg(all(target_arch = "aarch64", target_feature = "neon", not(miri)))]
#[derive(Clone, Copy)]
pub(crate) struct NeonToken(());
