//! The C ABI (feature `capi`): `extern "C"` functions over raw pointers,
//! declared in `include/adopt.h`, for C, C++, Python's `ctypes` and any
//! other language with a C FFI.
//!
//! Build the libraries with
//! `cargo rustc --release --features capi --lib --crate-type cdylib` (a
//! shared library, `target/release/libadopt.so`) or `--crate-type
//! staticlib` (`target/release/libadopt.a`); the README's "Use from C /
//! Python" section walks through it.
//!
//! # Conventions
//!
//! - Every function that can fail returns an [`AdoptStatus`]:
//!   `ADOPT_STATUS_OK` (0), or a code naming the kind of error.
//!   [`adopt_last_error_message`] then describes the error in words. The
//!   message is per thread, like `errno`, and is the empty string after a
//!   call that succeeded.
//! - Nothing unwinds across the boundary: a panic inside the library (a bug)
//!   is caught and returned as `ADOPT_STATUS_PANIC`. (A build with
//!   `panic = "abort"` aborts instead.)
//! - Pointers are checked before use. A null pointer is refused with
//!   `ADOPT_STATUS_NULL_POINTER`, except with a length of 0, where it
//!   means an empty buffer. A misaligned pointer, a length too large for
//!   memory, or buffers that overlap are refused with
//!   `ADOPT_STATUS_INVALID_ARGUMENT`. What cannot be checked is each
//!   function's `# Safety` promise: a non-null pointer points to as many
//!   valid, initialised elements as its length says, and nothing else reads
//!   or writes them during the call.
//! - Everything is validated before anything is written: on any error, the
//!   buffers, the state, the step counts, the optimizer object and the
//!   out-parameters are unchanged (except `len_out` of
//!   [`adopt_optimizer_save`], which reports the size needed).
//! - bf16 values travel as their bit patterns, in `uint16_t`.
//! - Flags (`uint32_t` fields named like yes/no questions) are 0 or 1; any
//!   other value is refused, which catches most uninitialised structs.
//!
//! ```
//! use adopt::capi::{adopt_hyper_default, adopt_step_f32, AdoptStatus};
//! let mut hyper = adopt_hyper_default();
//! hyper.lr = 0.1;
//! let (mut p, g, mut m, mut v, mut step) = ([1.0_f32; 4], [0.5_f32; 4], [0.0_f32; 4], [0.0_f32; 4], 0_u64);
//! for _ in 0..2 {
//!     // SAFETY: every pointer is valid for its length, and none overlap.
//!     let status = unsafe {
//!         adopt_step_f32(p.as_mut_ptr(), 4, g.as_ptr(), 4, m.as_mut_ptr(), 4, v.as_mut_ptr(), 4, &mut step, &hyper)
//!     };
//!     assert_eq!(status, AdoptStatus::Ok);
//! }
//! assert!(p[0] < 1.0);
//! assert_eq!(step, 2);
//! ```

#![deny(clippy::undocumented_unsafe_blocks)]

use crate::error::Error;
use crate::hyper::{Caution, Clip, DecayScaling, Hyper, Scaling, WeightDecay};
use crate::optimizer::{Adopt, GroupId, Item, ParamId};
use crate::precision::{self, Rounding};
use crate::state::StateView;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ffi::{CStr, c_char};
use half::bf16;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What a C ABI call returned: `ADOPT_STATUS_OK` or the kind of error.
///
/// Each kind of `adopt::Error` has its own code; the C ABI adds codes for its
/// own checks (null pointers, bad arguments, a small buffer) and for a
/// caught panic. The numbers are stable: new codes are only ever added.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdoptStatus {
    /// Success.
    Ok = 0,
    /// A required pointer is null (or a null buffer has a nonzero length).
    NullPointer = 1,
    /// An argument is malformed: a misaligned pointer, overlapping buffers,
    /// a length too large for memory, an unknown enumeration value or flag,
    /// a name that is not UTF-8.
    InvalidArgument = 2,
    /// A buffer's length differs from the parameters' (`Error::LengthMismatch`).
    LengthMismatch = 3,
    /// A hyperparameter is out of range (`Error::InvalidHyper`).
    InvalidHyper = 4,
    /// The clip threshold at this step is negative, NaN or beyond the
    /// largest f32 (`Error::InvalidClip`).
    InvalidClip = 5,
    /// The step count cannot advance (`Error::StepOverflow`).
    StepOverflow = 6,
    /// A kernel this CPU cannot run was asked for (`Error::KernelUnavailable`).
    KernelUnavailable = 7,
    /// A parameter id the optimizer never issued (`Error::UnknownParam`).
    UnknownParam = 8,
    /// A group id the optimizer never issued (`Error::UnknownGroup`).
    UnknownGroup = 9,
    /// The same parameter appears twice in one step (`Error::DuplicateParam`).
    DuplicateParam = 10,
    /// An impossible caution mask (`Error::InvalidCautionMask`).
    InvalidCautionMask = 11,
    /// A checkpoint could not be written or read (`Error::Checkpoint`).
    Checkpoint = 12,
    /// The caller's buffer is too small for the result.
    BufferTooSmall = 13,
    /// An error this version of the C ABI has no code of its own for; the
    /// message says what it is.
    Other = 14,
    /// A panic inside the library (a bug) was caught. The buffers and the
    /// optimizer object may have been partly updated; free the object.
    Panic = 15,
    /// A hyperparameter, or a constant derived from them (such as
    /// `lr·weight_decay`), is finite but beyond the largest f32
    /// (`Error::HyperOverflow`).
    HyperOverflow = 16,
    /// `ADOPT_DECAY_CORRECTED` with `max_lr` = 0 (the group's initial
    /// learning rate) in a single step, which has no group
    /// (`Error::MaxLrUnset`).
    MaxLrUnset = 17,
    /// The `ADOPT_KERNEL` environment variable names no kernel
    /// (`Error::UnknownKernel`).
    UnknownKernel = 18,
}

impl AdoptStatus {
    /// The status for a library `Error`.
    pub fn of(error: &Error) -> AdoptStatus {
        // `Error` may gain variants (it is `non_exhaustive`): they map to
        // `Other` until they get a code of their own.
        #[allow(unreachable_patterns)]
        match error {
            Error::LengthMismatch { .. } => AdoptStatus::LengthMismatch,
            Error::InvalidHyper { .. } => AdoptStatus::InvalidHyper,
            Error::HyperOverflow { .. } => AdoptStatus::HyperOverflow,
            Error::MaxLrUnset => AdoptStatus::MaxLrUnset,
            Error::UnknownKernel { .. } => AdoptStatus::UnknownKernel,
            Error::InvalidClip { .. } => AdoptStatus::InvalidClip,
            Error::StepOverflow => AdoptStatus::StepOverflow,
            Error::KernelUnavailable(_) => AdoptStatus::KernelUnavailable,
            Error::UnknownParam(_) => AdoptStatus::UnknownParam,
            Error::UnknownGroup(_) => AdoptStatus::UnknownGroup,
            Error::DuplicateParam(_) => AdoptStatus::DuplicateParam,
            Error::InvalidCautionMask { .. } => AdoptStatus::InvalidCautionMask,
            Error::Checkpoint(_) => AdoptStatus::Checkpoint,
            _ => AdoptStatus::Other,
        }
    }
}

/// `AdoptHyper::clip`: no clipping.
pub const ADOPT_CLIP_NONE: u32 = 0;
/// `AdoptHyper::clip`: a constant threshold, `clip_scale`.
pub const ADOPT_CLIP_CONSTANT: u32 = 1;
/// `AdoptHyper::clip`: `clip_scale * t^clip_exponent` with `t` the steps
/// already taken (the default, `1.0 * t^0.25`).
pub const ADOPT_CLIP_POWER: u32 = 2;

/// `AdoptHyper::decay_scaling`: decoupled decay `p -= lr·wd·p` (the default).
pub const ADOPT_DECAY_LR: u32 = 0;
/// `AdoptHyper::decay_scaling`: decoupled decay `p -= wd·p`, not scaled by
/// the learning rate.
pub const ADOPT_DECAY_FIXED: u32 = 1;
/// `AdoptHyper::decay_scaling`: decoupled decay `p -= (lr²/max_lr)·wd·p`.
pub const ADOPT_DECAY_CORRECTED: u32 = 2;

/// `adopt_step_bf16`'s `rounding`: to nearest, ties to even.
pub const ADOPT_ROUNDING_NEAREST_EVEN: u32 = 0;
/// `adopt_step_bf16`'s `rounding`: stochastic rounding of the parameters,
/// from a counter-based generator seeded by `seed` (reproducible).
pub const ADOPT_ROUNDING_STOCHASTIC: u32 = 1;

/// `AdoptHyper::caution`: no cautious masking (the default).
pub const ADOPT_CAUTION_OFF: u32 = 0;
/// `AdoptHyper::caution`: timm's `caution` (mask `u·g > 0`, scale
/// `1/max(mean, 1e-3)`).
pub const ADOPT_CAUTION_TIMM: u32 = 1;
/// `AdoptHyper::caution`: pytorch-optimizer's `cautious` (mask `u·ĝ > 0`
/// with the normalised gradient, scale `numel/(sum + 1)`).
pub const ADOPT_CAUTION_PYTORCH_OPTIMIZER: u32 = 2;

/// The hyperparameters of a step (`adopt::Hyper` in C form). Start from
/// `adopt_hyper_default` and change the fields you need.
///
/// `size` is the struct's size as the caller's header declares it, set by
/// `adopt_hyper_default`: fields added in later versions go at the end, and
/// the library reads only the fields the caller's struct has. A `size` the
/// library does not know is refused with `ADOPT_STATUS_INVALID_ARGUMENT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdoptHyper {
    /// `sizeof(AdoptHyper)`; set by `adopt_hyper_default`.
    pub size: u32,
    /// The clip schedule: `ADOPT_CLIP_NONE`, `ADOPT_CLIP_CONSTANT` or
    /// `ADOPT_CLIP_POWER` (the default).
    pub clip: u32,
    /// Learning rate; a finite number >= 0. Default `1e-3`.
    pub lr: f64,
    /// β1, in `[0, 1)`. Default `0.9`.
    pub beta1: f64,
    /// β2, in `[0, 1)`. Default `0.9999`.
    pub beta2: f64,
    /// Floor of the denominator `max(sqrt(v), eps)`; a finite number >= 0.
    /// Default `1e-6`.
    pub eps: f64,
    /// Weight decay; a finite number >= 0. Default `0` (off).
    pub weight_decay: f64,
    /// The constant threshold (`ADOPT_CLIP_CONSTANT`) or the factor
    /// (`ADOPT_CLIP_POWER`); unused for `ADOPT_CLIP_NONE`. Default `1.0`.
    /// A custom schedule: evaluate it yourself and set an
    /// `ADOPT_CLIP_CONSTANT` threshold before each step.
    pub clip_scale: f64,
    /// The power of `t` (`ADOPT_CLIP_POWER` only). Default `0.25`.
    pub clip_exponent: f64,
    /// The schedule's peak learning rate (`ADOPT_DECAY_CORRECTED` only); a
    /// finite number > 0, or `0` (the default) for the group's initial
    /// learning rate (as timm takes it; a single step, which has no group,
    /// refuses it).
    pub max_lr: f64,
    /// Added to the step count the clip schedule is evaluated at: 0 (the
    /// default) as the reference and timm, 1 as pytorch-optimizer.
    pub clip_offset: u64,
    /// How decoupled decay is scaled: `ADOPT_DECAY_LR` (the default),
    /// `ADOPT_DECAY_FIXED` or `ADOPT_DECAY_CORRECTED`; must be
    /// `ADOPT_DECAY_LR` for L2 decay.
    pub decay_scaling: u32,
    /// 1: decoupled (AdamW-style) decay; 0 (default): L2 decay.
    pub decouple: u32,
    /// 1: ascend instead of descend. Default 0.
    pub maximize: u32,
    /// 1: Nesterov momentum (optax). Default 0.
    pub nesterov: u32,
    /// Cautious masking: `ADOPT_CAUTION_OFF` (the default),
    /// `ADOPT_CAUTION_TIMM` or `ADOPT_CAUTION_PYTORCH_OPTIMIZER`.
    pub caution: u32,
    /// 1: decoupled decay on the first step too (pytorch-optimizer's
    /// `weight_decouple`); needs `decouple` = 1. Default 0.
    pub first_step_decay: u32,
}

/// A [`Hyper`] with a [`Clip::Custom`] schedule (a Rust function) has no C
/// form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomClipError;

impl core::fmt::Display for CustomClipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a custom clip schedule (a Rust function) has no C form")
    }
}

impl core::error::Error for CustomClipError {}

impl TryFrom<&Hyper> for AdoptHyper {
    type Error = CustomClipError;

    /// The C form, or [`CustomClipError`] for a [`Clip::Custom`] schedule.
    fn try_from(h: &Hyper) -> Result<AdoptHyper, CustomClipError> {
        let (clip, clip_scale, clip_exponent) = match h.clip {
            Clip::None => (ADOPT_CLIP_NONE, 1.0, 0.25),
            Clip::Custom(_) => return Err(CustomClipError),
            Clip::Constant(c) => (ADOPT_CLIP_CONSTANT, c, 0.25),
            Clip::Power { scale, exponent } => (ADOPT_CLIP_POWER, scale, exponent),
        };
        let (weight_decay, decouple, decay_scaling, max_lr, first_step) = match h.weight_decay {
            WeightDecay::None => (0.0, false, ADOPT_DECAY_LR, 0.0, false),
            WeightDecay::L2(wd) => (wd, false, ADOPT_DECAY_LR, 0.0, false),
            WeightDecay::Decoupled {
                weight_decay,
                scaling,
                first_step,
            } => {
                let (scaling, max_lr) = match scaling {
                    DecayScaling::Lr => (ADOPT_DECAY_LR, 0.0),
                    DecayScaling::Fixed => (ADOPT_DECAY_FIXED, 0.0),
                    DecayScaling::Corrected { max_lr } => {
                        (ADOPT_DECAY_CORRECTED, max_lr.unwrap_or(0.0))
                    }
                };
                (weight_decay, true, scaling, max_lr, first_step)
            }
        };
        Ok(AdoptHyper {
            size: core::mem::size_of::<AdoptHyper>() as u32,
            clip,
            lr: h.lr,
            beta1: h.betas.0,
            beta2: h.betas.1,
            eps: h.eps,
            weight_decay,
            clip_scale,
            clip_exponent,
            max_lr,
            clip_offset: h.clip_offset,
            decay_scaling,
            decouple: decouple.into(),
            maximize: h.maximize.into(),
            nesterov: h.nesterov.into(),
            caution: match h.caution {
                Caution::Off => ADOPT_CAUTION_OFF,
                Caution::Timm => ADOPT_CAUTION_TIMM,
                Caution::PytorchOptimizer => ADOPT_CAUTION_PYTORCH_OPTIMIZER,
            },
            first_step_decay: first_step.into(),
        })
    }
}

/// A flag's value: 0 or 1, anything else refused (naming `{prefix}{name}`).
fn flag(prefix: &str, name: &str, value: u32) -> Result<bool, Fail> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Fail::invalid(format!(
            "{prefix}{name} is {value}: must be 0 or 1"
        ))),
    }
}

impl AdoptHyper {
    /// The `Hyper` these fields describe. Checks the enumeration values
    /// and flags; the numbers are checked where a `Hyper` is used.
    fn to_hyper(self) -> Result<Hyper, Fail> {
        let flag = |name: &str, value: u32| flag("hyper.", name, value);
        let clip = match self.clip {
            ADOPT_CLIP_NONE => Clip::None,
            ADOPT_CLIP_CONSTANT => Clip::Constant(self.clip_scale),
            ADOPT_CLIP_POWER => Clip::Power {
                scale: self.clip_scale,
                exponent: self.clip_exponent,
            },
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.clip is {other}: must be ADOPT_CLIP_NONE (0), ADOPT_CLIP_CONSTANT (1) or ADOPT_CLIP_POWER (2)"
                )));
            }
        };
        let scaling = match self.decay_scaling {
            ADOPT_DECAY_LR => DecayScaling::Lr,
            ADOPT_DECAY_FIXED => DecayScaling::Fixed,
            ADOPT_DECAY_CORRECTED => DecayScaling::Corrected {
                max_lr: (self.max_lr.to_bits() != 0).then_some(self.max_lr),
            },
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.decay_scaling is {other}: must be ADOPT_DECAY_LR (0), ADOPT_DECAY_FIXED (1) or ADOPT_DECAY_CORRECTED (2)"
                )));
            }
        };
        let decouple = flag("decouple", self.decouple)?;
        let first_step = flag("first_step_decay", self.first_step_decay)?;
        if !decouple && (scaling != DecayScaling::Lr || first_step) {
            return Err(Fail::invalid(
                "hyper.decay_scaling and hyper.first_step_decay apply to decoupled decay only: set hyper.decouple = 1, or leave them at their defaults".into(),
            ));
        }
        let weight_decay = match (self.weight_decay, decouple) {
            (0.0, false) => WeightDecay::None,
            (wd, false) => WeightDecay::L2(wd),
            (weight_decay, true) => WeightDecay::Decoupled {
                weight_decay,
                scaling,
                first_step,
            },
        };
        let caution = match self.caution {
            ADOPT_CAUTION_OFF => Caution::Off,
            ADOPT_CAUTION_TIMM => Caution::Timm,
            ADOPT_CAUTION_PYTORCH_OPTIMIZER => Caution::PytorchOptimizer,
            other => {
                return Err(Fail::invalid(format!(
                    "hyper.caution is {other}: must be ADOPT_CAUTION_OFF (0), ADOPT_CAUTION_TIMM (1) or ADOPT_CAUTION_PYTORCH_OPTIMIZER (2)"
                )));
            }
        };
        Ok(Hyper {
            lr: self.lr,
            betas: (self.beta1, self.beta2),
            eps: self.eps,
            weight_decay,
            maximize: flag("maximize", self.maximize)?,
            clip,
            clip_offset: self.clip_offset,
            nesterov: flag("nesterov", self.nesterov)?,
            caution,
        })
    }
}

/// A failed call: its status and message.
struct Fail {
    status: AdoptStatus,
    message: String,
}

impl Fail {
    fn invalid(message: String) -> Fail {
        Fail {
            status: AdoptStatus::InvalidArgument,
            message,
        }
    }
}

impl From<Error> for Fail {
    fn from(error: Error) -> Fail {
        Fail {
            status: AdoptStatus::of(&error),
            message: error.to_string(),
        }
    }
}

std::thread_local! {
    /// The last call's message on this thread, NUL-terminated.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records this thread's message (without interior NULs).
fn set_message(message: &str) {
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            buf.extend(message.bytes().filter(|&b| b != 0));
            buf.push(0);
        }
    });
}

/// Runs a call's body: catches panics, records the message, returns the
/// status.
fn guard(body: impl FnOnce() -> Result<(), Fail>) -> AdoptStatus {
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => (AdoptStatus::Ok, String::new()),
        Ok(Err(fail)) => (fail.status, fail.message),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            (
                AdoptStatus::Panic,
                format!("internal error (a bug in adopt, please report it): panic: {what}"),
            )
        }
    };
    set_message(&message);
    status
}

/// Checks a pointer to `len` elements of `T` before a slice is made of it:
/// null only with `len == 0`, aligned, and not larger than memory.
fn check_ptr<T>(name: &str, ptr: *const T, len: usize) -> Result<(), Fail> {
    if len == 0 {
        return Ok(());
    }
    if ptr.is_null() {
        return Err(Fail {
            status: AdoptStatus::NullPointer,
            message: format!("{name} is a null pointer (with length {len})"),
        });
    }
    if !ptr.is_aligned() {
        return Err(Fail::invalid(format!(
            "{name} ({ptr:p}) is not aligned to {} bytes",
            align_of::<T>()
        )));
    }
    if len > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(Fail::invalid(format!(
            "{name} has length {len}, more than memory can hold"
        )));
    }
    Ok(())
}

/// Checks a pointer to one `T` (an in- or out-parameter): never null.
fn check_one<T>(name: &str, ptr: *const T) -> Result<(), Fail> {
    if ptr.is_null() {
        return Err(Fail {
            status: AdoptStatus::NullPointer,
            message: format!("{name} is a null pointer"),
        });
    }
    check_ptr(name, ptr, 1)
}

/// A shared slice over a pointer that `check_ptr` accepted.
///
/// # Safety
///
/// With `len > 0`, `ptr` points to `len` initialised `T` that nothing writes
/// while the slice lives.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        &[]
    } else {
        // SAFETY: non-null, aligned and not too long (check_ptr); valid
        // and not written meanwhile (the caller).
        unsafe { core::slice::from_raw_parts(ptr, len) }
    }
}

/// A mutable slice over a pointer that `check_ptr` accepted.
///
/// # Safety
///
/// With `len > 0`, `ptr` points to `len` initialised `T` that nothing else
/// reads or writes while the slice lives.
unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize) -> &'a mut [T] {
    if len == 0 {
        &mut []
    } else {
        // SAFETY: non-null, aligned and not too long (check_ptr); valid
        // and exclusive (the caller).
        unsafe { core::slice::from_raw_parts_mut(ptr, len) }
    }
}

/// One buffer of a call, for the overlap check.
#[derive(Clone, Copy)]
struct Span<'n> {
    name: &'n str,
    /// The item index, for buffers of `adopt_optimizer_step`.
    item: Option<usize>,
    start: usize,
    end: usize,
    written: bool,
}

impl<'n> Span<'n> {
    fn new<T>(name: &'n str, ptr: *const T, len: usize, written: bool) -> Span<'n> {
        let start = ptr as usize;
        // Saturating: a span that would run past the address space still
        // overlaps everything after its start (check_ptr refuses it anyway).
        let end = start.saturating_add(len.saturating_mul(size_of::<T>()));
        Span {
            name,
            item: None,
            start,
            end,
            written,
        }
    }

    fn label(&self) -> String {
        match self.item {
            Some(i) => format!("items[{i}].{}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// Refuses any two non-empty buffers that overlap where one is written.
/// Sorts `spans` (stably, so that messages name buffers in argument order).
fn check_disjoint(spans: &mut [Span<'_>]) -> Result<(), Fail> {
    spans.sort_by_key(|s| s.start);
    // The earlier span reaching furthest, and the earlier written one.
    let mut any: Option<Span<'_>> = None;
    let mut written: Option<Span<'_>> = None;
    for s in spans.iter().filter(|s| s.end > s.start) {
        let clash = match (written, any) {
            (Some(w), _) if s.start < w.end => Some(w),
            (_, Some(a)) if s.written && s.start < a.end => Some(a),
            _ => None,
        };
        if let Some(other) = clash {
            return Err(Fail::invalid(format!(
                "{} and {} overlap",
                other.label(),
                s.label()
            )));
        }
        if any.is_none_or(|a| s.end > a.end) {
            any = Some(*s);
        }
        if s.written && written.is_none_or(|w| s.end > w.end) {
            written = Some(*s);
        }
    }
    Ok(())
}

/// Copies in the hyperparameters a pointer refers to.
///
/// # Safety
///
/// A non-null `hyper` points to an `AdoptHyper`.
unsafe fn read_hyper(hyper: *const AdoptHyper) -> Result<Hyper, Fail> {
    check_one("hyper", hyper)?;
    // SAFETY: non-null and aligned (check_one); the caller's struct starts
    // with its `size`, a u32 every version has.
    let size = unsafe { hyper.cast::<u32>().read() };
    let known = core::mem::size_of::<AdoptHyper>();
    if size as usize != known {
        return Err(Fail::invalid(format!(
            "hyper.size is {size}: this library reads an AdoptHyper of {known} bytes (initialise it with adopt_hyper_default(), and build against this library's adopt.h)"
        )));
    }
    // SAFETY: valid for the whole struct (the caller, and `size`); every
    // bit pattern of the f64, u64 and u32 fields is a valid value.
    unsafe { hyper.read() }.to_hyper()
}

/// The hyperparameters the reference implementation uses by default.
#[unsafe(no_mangle)]
pub extern "C" fn adopt_hyper_default() -> AdoptHyper {
    AdoptHyper::try_from(&Hyper::default()).expect("the default clip is a power")
}

/// The message of the last call on this thread that returned a status: a
/// NUL-terminated UTF-8 string, empty after success. Never null.
///
/// The string belongs to the library and stays valid until the next call,
/// on the same thread, of a function that returns an `AdoptStatus`; copy it
/// to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn adopt_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|cell| match cell.try_borrow() {
            Ok(buf) if !buf.is_empty() => buf.as_ptr().cast::<c_char>(),
            _ => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

/// The crate's version, a static NUL-terminated string such as `"0.1.0"`.
#[unsafe(no_mangle)]
pub extern "C" fn adopt_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the version has no NUL"),
        };
    VERSION.as_ptr()
}

/// Checks the buffers of a single step (`P` is the parameters' and
/// gradients' lane type): each pointer, then that no two overlap.
#[allow(clippy::too_many_arguments)]
fn check_step_buffers<P>(
    params: *const P,
    params_len: usize,
    grads: *const P,
    grads_len: usize,
    exp_avg: *const f32,
    exp_avg_len: usize,
    exp_avg_sq: *const f32,
    exp_avg_sq_len: usize,
    step: *const u64,
) -> Result<(), Fail> {
    check_ptr("params", params, params_len)?;
    check_ptr("grads", grads, grads_len)?;
    check_ptr("exp_avg", exp_avg, exp_avg_len)?;
    check_ptr("exp_avg_sq", exp_avg_sq, exp_avg_sq_len)?;
    check_one("step", step)?;
    check_disjoint(&mut [
        Span::new("params", params, params_len, true),
        Span::new("grads", grads, grads_len, false),
        Span::new("exp_avg", exp_avg, exp_avg_len, true),
        Span::new("exp_avg_sq", exp_avg_sq, exp_avg_sq_len, true),
        Span::new("step", step, 1, true),
    ])
}

/// One ADOPT step over f32 buffers: `params` with `grads`, updating the
/// moments `exp_avg` (m) and `exp_avg_sq` (v) and the step count `*step`
/// (steps already taken: 0, with zeroed moments, for a fresh state).
///
/// Every buffer must have `params_len` lanes
/// (`ADOPT_STATUS_LENGTH_MISMATCH` otherwise). The result is bit-identical
/// to the Rust `adopt::adopt_step`. On any error nothing is written.
///
/// # Safety
///
/// Each non-null buffer points to as many valid, initialised elements as
/// its length says; `step` and `hyper` are null or point to a valid value;
/// nothing else reads or writes these during the call. Null pointers,
/// misalignment and overlap are checked.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adopt_step_f32(
    params: *mut f32,
    params_len: usize,
    grads: *const f32,
    grads_len: usize,
    exp_avg: *mut f32,
    exp_avg_len: usize,
    exp_avg_sq: *mut f32,
    exp_avg_sq_len: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
) -> AdoptStatus {
    guard(|| {
        check_step_buffers(
            params,
            params_len,
            grads,
            grads_len,
            exp_avg,
            exp_avg_len,
            exp_avg_sq,
            exp_avg_sq_len,
            step,
        )?;
        // SAFETY: read_hyper checks the pointer; valid by the contract.
        let hyper = unsafe { read_hyper(hyper) }?;
        // SAFETY: every pointer passed check_ptr or check_one and none
        // overlap (check_step_buffers); valid and exclusive by the contract.
        let (params, grads, m, v, step) = unsafe {
            (
                slice_mut(params, params_len),
                slice(grads, grads_len),
                slice_mut(exp_avg, exp_avg_len),
                slice_mut(exp_avg_sq, exp_avg_sq_len),
                &mut *step,
            )
        };
        crate::adopt_step_view(params, grads, &mut StateView::new(m, v, step), &hyper)?;
        Ok(())
    })
}

/// One ADOPT step over bf16 parameters and gradients (as `uint16_t` bit
/// patterns) with f32 moments: each lane is widened exactly to f32, stepped
/// exactly as `adopt_step_f32` would, and rounded back to bf16 by
/// `rounding`: `ADOPT_ROUNDING_NEAREST_EVEN`, or `ADOPT_ROUNDING_STOCHASTIC`
/// with random bits that depend only on `(seed, step, lane)` (`seed` is
/// unused otherwise).
///
/// Lengths, errors and the step count are as for `adopt_step_f32`.
///
/// # Safety
///
/// As for `adopt_step_f32`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn adopt_step_bf16(
    params: *mut u16,
    params_len: usize,
    grads: *const u16,
    grads_len: usize,
    exp_avg: *mut f32,
    exp_avg_len: usize,
    exp_avg_sq: *mut f32,
    exp_avg_sq_len: usize,
    step: *mut u64,
    hyper: *const AdoptHyper,
    rounding: u32,
    seed: u64,
) -> AdoptStatus {
    guard(|| {
        check_step_buffers(
            params,
            params_len,
            grads,
            grads_len,
            exp_avg,
            exp_avg_len,
            exp_avg_sq,
            exp_avg_sq_len,
            step,
        )?;
        // SAFETY: read_hyper checks the pointer; valid by the contract.
        let hyper = unsafe { read_hyper(hyper) }?;
        let rounding = match rounding {
            ADOPT_ROUNDING_NEAREST_EVEN => Rounding::NearestEven,
            ADOPT_ROUNDING_STOCHASTIC => Rounding::Stochastic { seed },
            other => {
                return Err(Fail::invalid(format!(
                    "rounding is {other}: must be ADOPT_ROUNDING_NEAREST_EVEN (0) or ADOPT_ROUNDING_STOCHASTIC (1)"
                )));
            }
        };
        // SAFETY: every pointer passed check_ptr or check_one and none
        // overlap (check_step_buffers); valid and exclusive by the contract.
        // `bf16` is `repr(transparent)` over `u16`, so the casts keep size,
        // alignment and validity (every bit pattern is a bf16).
        let (params, grads, m, v, step) = unsafe {
            (
                slice_mut(params.cast::<bf16>(), params_len),
                slice(grads.cast::<bf16>(), grads_len),
                slice_mut(exp_avg, exp_avg_len),
                slice_mut(exp_avg_sq, exp_avg_sq_len),
                &mut *step,
            )
        };
        precision::adopt_step_half(params, grads, m, v, step, &hyper, rounding)?;
        Ok(())
    })
}

/// An optimizer over many parameter buffers (the Rust `adopt::Adopt`):
/// parameter groups with their own hyperparameters, per-parameter state
/// created on the first gradient, one step over many buffers, checkpoints.
///
/// Opaque to C: create it with `adopt_optimizer_new`, free it with
/// `adopt_optimizer_free`. It may move between threads, but only one
/// thread may use it at a time.
#[derive(Debug, Default)]
pub struct AdoptOptimizer {
    inner: Adopt,
}

/// One buffer of `adopt_optimizer_step`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdoptItem {
    /// The parameter's id, from `adopt_optimizer_add_param`.
    pub param: u32,
    /// The parameter lanes, as many as registered.
    pub params: *mut f32,
    /// The number of lanes at `params`.
    pub params_len: usize,
    /// The gradient, or NULL (with `grads_len` 0) to skip this buffer: its
    /// parameters and its step count stay as they are.
    pub grads: *const f32,
    /// The number of lanes at `grads`.
    pub grads_len: usize,
}

/// The optimizer behind a pointer, checked for null and alignment.
///
/// # Safety
///
/// A non-null `opt` came from `adopt_optimizer_new`, was not freed, and no
/// other thread uses it during the call.
unsafe fn optimizer<'a>(opt: *mut AdoptOptimizer) -> Result<&'a mut Adopt, Fail> {
    check_one("opt", opt)?;
    // SAFETY: non-null and aligned (check_one); a live, unshared optimizer
    // by the caller's contract.
    Ok(unsafe { &mut (*opt).inner })
}

/// `optimizer` for reading only.
///
/// # Safety
///
/// A non-null `opt` came from `adopt_optimizer_new`, was not freed, and no
/// other thread changes it during the call.
unsafe fn optimizer_ref<'a>(opt: *const AdoptOptimizer) -> Result<&'a Adopt, Fail> {
    check_one("opt", opt)?;
    // SAFETY: non-null and aligned (check_one); a live optimizer that
    // nothing changes meanwhile, by the caller's contract.
    Ok(unsafe { &(*opt).inner })
}

/// Writes an out-parameter that `check_one` accepted.
///
/// # Safety
///
/// `out` is valid for writes of a `T`.
unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: checked non-null and aligned; valid by the caller.
    unsafe { out.write(value) }
}

/// Creates an optimizer with no groups and no parameters; stores its
/// pointer in `*out`. Free it with `adopt_optimizer_free`.
///
/// # Safety
///
/// `out` is null or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_new(out: *mut *mut AdoptOptimizer) -> AdoptStatus {
    guard(|| {
        check_one("out", out)?;
        let opt = alloc::boxed::Box::into_raw(alloc::boxed::Box::<AdoptOptimizer>::default());
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(out, opt) };
        Ok(())
    })
}

/// Frees an optimizer from `adopt_optimizer_new`. NULL is ignored.
///
/// # Safety
///
/// `opt` is null, or came from `adopt_optimizer_new` and was not freed;
/// it is not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_free(opt: *mut AdoptOptimizer) {
    if opt.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a pointer from Box::into_raw in adopt_optimizer_new, not
        // freed before (the contract).
        drop(unsafe { alloc::boxed::Box::from_raw(opt) });
    }));
}

/// Adds a parameter group with the hyperparameters `*hyper` (validated);
/// stores its id (0, 1, 2, … in order) in `*group_out`.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `hyper`
/// and `group_out` are null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_add_group(
    opt: *mut AdoptOptimizer,
    hyper: *const AdoptHyper,
    group_out: *mut u32,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: each helper checks its pointer; valid by the contract.
        let (opt, hyper) = unsafe { (optimizer(opt)?, read_hyper(hyper)?) };
        check_one("group_out", group_out)?;
        let id = opt.add_group(hyper)?;
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(group_out, id.0) };
        Ok(())
    })
}

/// Registers a parameter buffer of `lanes` f32 in `group`, with an optional
/// NUL-terminated UTF-8 `name` (NULL for none; kept in checkpoints); stores
/// its id (0, 1, 2, … in order) in `*param_out`.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `name`
/// is null or a NUL-terminated string; `param_out` is null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_add_param(
    opt: *mut AdoptOptimizer,
    group: u32,
    lanes: usize,
    name: *const c_char,
    param_out: *mut u32,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer(opt)? };
        check_one("param_out", param_out)?;
        let name = if name.is_null() {
            None
        } else {
            // SAFETY: a non-null, NUL-terminated string (the contract).
            let bytes = unsafe { CStr::from_ptr(name) };
            Some(
                bytes
                    .to_str()
                    .map_err(|_| Fail::invalid("name is not valid UTF-8".into()))?,
            )
        };
        let id = opt.add_param(GroupId(group), lanes, name)?;
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(param_out, id.0) };
        Ok(())
    })
}

/// Replaces a group's hyperparameters (for learning-rate schedules). They
/// are validated now, and the clip schedule at each step.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `hyper`
/// is null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_set_hyper(
    opt: *mut AdoptOptimizer,
    group: u32,
    hyper: *const AdoptHyper,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: each helper checks its pointer; valid by the contract.
        let (opt, hyper) = unsafe { (optimizer(opt)?, read_hyper(hyper)?) };
        opt.set_hyper(GroupId(group), hyper)?;
        Ok(())
    })
}

/// Copies a group's hyperparameters into `*hyper_out`.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread changes;
/// `hyper_out` is null or valid for writing an `AdoptHyper`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_get_hyper(
    opt: *const AdoptOptimizer,
    group: u32,
    hyper_out: *mut AdoptHyper,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer_ref(opt)? };
        check_one("hyper_out", hyper_out)?;
        let hyper = opt.hyper(GroupId(group))?;
        let hyper = AdoptHyper::try_from(hyper).map_err(|_| Fail {
            status: AdoptStatus::Other,
            message: format!("group {group} uses a custom clip schedule, which C cannot hold"),
        })?;
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(hyper_out, hyper) };
        Ok(())
    })
}

/// Stores the number of groups and of parameters in `*groups_out` and
/// `*params_out` (after `adopt_optimizer_load`, the checkpoint's).
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; the
/// out-pointers are null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_counts(
    opt: *const AdoptOptimizer,
    groups_out: *mut usize,
    params_out: *mut usize,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer_ref(opt)? };
        check_one("groups_out", groups_out)?;
        check_one("params_out", params_out)?;
        check_disjoint(&mut [
            Span::new("groups_out", groups_out, 1, true),
            Span::new("params_out", params_out, 1, true),
        ])?;
        // SAFETY: checked above; valid by the contract.
        unsafe {
            write_out(groups_out, opt.group_count());
            write_out(params_out, opt.param_count());
        }
        Ok(())
    })
}

/// Stores the number of steps a parameter has taken in `*step_out` (0
/// before its first gradient).
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using;
/// `step_out` is null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_param_step(
    opt: *const AdoptOptimizer,
    param: u32,
    step_out: *mut u64,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer_ref(opt)? };
        check_one("step_out", step_out)?;
        let step = opt.state(ParamId(param))?.map_or(0, |s| s.step());
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(step_out, step) };
        Ok(())
    })
}

/// One step over `n_items` buffers (`items` may be NULL when `n_items` is
/// 0); items whose `grads` is NULL are skipped.
///
/// Everything is validated first (pointers, overlap, unknown or repeated
/// ids, every length, each group's hyperparameters at each parameter's own
/// step count): on error no buffer, state or step count has changed. The
/// results are bit-identical to `adopt_step_f32` on each buffer.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `items`
/// is null or points to `n_items` valid `AdoptItem`s, whose non-null
/// buffers each point to as many valid, initialised floats as their length
/// says; nothing else reads or writes them during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_step(
    opt: *mut AdoptOptimizer,
    items: *const AdoptItem,
    n_items: usize,
) -> AdoptStatus {
    // SAFETY: the caller's contract is this function's.
    unsafe { optimizer_step(opt, items, n_items, 1.0, 0) }
}

/// [`adopt_optimizer_step`] for mixed-precision training:
/// `inv_scale` (`1/scale`, finite and >= 0; 1 for none) multiplies every
/// gradient lane inside the kernel, with no extra pass, and `found_inf` = 1
/// skips the step after validation, changing nothing, not even a step count
/// (as PyTorch's `GradScaler` skips `optimizer.step()`); set it from
/// [`adopt_grads_nonfinite`].
///
/// # Safety
///
/// As [`adopt_optimizer_step`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_step_scaled(
    opt: *mut AdoptOptimizer,
    items: *const AdoptItem,
    n_items: usize,
    inv_scale: f32,
    found_inf: u32,
) -> AdoptStatus {
    // SAFETY: the caller's contract is this function's.
    unsafe { optimizer_step(opt, items, n_items, inv_scale, found_inf) }
}

/// Whether any of `len` gradient lanes is NaN or ±inf (split across the
/// rayon pool when large), into `*out` (1 or 0): the scan PyTorch's
/// `GradScaler` runs in `unscale_`, to feed `found_inf` of
/// [`adopt_optimizer_step_scaled`]. Scan the gradients as they are, still
/// scaled: the scaled step unscales them itself.
///
/// # Safety
///
/// `grads` is null (with `len` 0) or points to `len` valid, initialised
/// floats; `out` is null or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_grads_nonfinite(
    grads: *const f32,
    len: usize,
    out: *mut u32,
) -> AdoptStatus {
    guard(|| {
        check_ptr("grads", grads, len)?;
        check_one("out", out)?;
        // SAFETY: checked by check_ptr; valid by the contract.
        let found = crate::grads_nonfinite(unsafe { slice(grads, len) });
        // SAFETY: checked non-null and aligned; valid by the contract.
        unsafe { write_out(out, u32::from(found)) };
        Ok(())
    })
}

/// The body of the optimizer steps (`found_inf` a flag, 0 or 1).
///
/// # Safety
///
/// As [`adopt_optimizer_step`].
unsafe fn optimizer_step(
    opt: *mut AdoptOptimizer,
    items: *const AdoptItem,
    n_items: usize,
    inv_scale: f32,
    found_inf: u32,
) -> AdoptStatus {
    guard(|| {
        let scaling = Scaling {
            inv_scale,
            found_inf: flag("", "found_inf", found_inf)?,
        };
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer(opt)? };
        check_ptr("items", items, n_items)?;
        // SAFETY: checked by check_ptr; valid by the contract. The items
        // are copied out, so the reference ends here, before any buffer
        // is written (even one that overlaps the array).
        let raw: Vec<AdoptItem> = unsafe { slice(items, n_items) }.to_vec();
        let mut spans = Vec::with_capacity(2 * raw.len());
        for (i, item) in raw.iter().enumerate() {
            let at = |what: &str| format!("items[{i}].{what}");
            check_ptr(&at("params"), item.params, item.params_len)?;
            if item.grads.is_null() && item.grads_len != 0 {
                return Err(Fail {
                    status: AdoptStatus::NullPointer,
                    message: format!(
                        "{} is a null pointer (with length {}); to skip the item, pass NULL with length 0",
                        at("grads"),
                        item.grads_len
                    ),
                });
            }
            check_ptr(&at("grads"), item.grads, item.grads_len)?;
            spans.push(Span {
                item: Some(i),
                ..Span::new("params", item.params, item.params_len, true)
            });
            spans.push(Span {
                item: Some(i),
                ..Span::new("grads", item.grads, item.grads_len, false)
            });
        }
        check_disjoint(&mut spans)?;
        let mut steps: Vec<Item<'_>> = raw
            .iter()
            .map(|item| Item {
                id: ParamId(item.param),
                // SAFETY: checked by check_ptr, no written buffer overlaps
                // another (check_disjoint); valid and exclusive by the
                // contract.
                params: unsafe { slice_mut(item.params, item.params_len) },
                grads: (!item.grads.is_null()).then(|| {
                    // SAFETY: as for params; gradients are only read.
                    unsafe { slice(item.grads, item.grads_len) }
                }),
            })
            .collect();
        opt.step_scaled(&mut steps, scaling)?;
        Ok(())
    })
}

/// Saves the optimizer's whole state as a checkpoint (the versioned,
/// CRC-checked format of the Rust `adopt::checkpoint`) into `buf`, of
/// `cap` bytes.
///
/// `*len_out` is always set to the checkpoint's size (when the checkpoint
/// can be made). With `buf` NULL and `cap` 0, only the size is reported
/// (`ADOPT_STATUS_OK`); with `cap` too small, nothing is written to `buf`
/// and the call returns `ADOPT_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `buf`
/// is null or valid for writing `cap` bytes; `len_out` is null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_save(
    opt: *const AdoptOptimizer,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer_ref(opt)? };
        check_ptr("buf", buf, cap)?;
        check_one("len_out", len_out)?;
        check_disjoint(&mut [
            Span::new("buf", buf, cap, true),
            Span::new("len_out", len_out, 1, true),
        ])?;
        let bytes = opt.save()?;
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(len_out, bytes.len()) };
        if buf.is_null() && cap == 0 {
            return Ok(());
        }
        if cap < bytes.len() {
            return Err(Fail {
                status: AdoptStatus::BufferTooSmall,
                message: format!(
                    "the checkpoint needs {} bytes, the buffer has {cap}",
                    bytes.len()
                ),
            });
        }
        // SAFETY: checked by check_ptr; cap >= bytes.len() > 0 (a
        // checkpoint has a header), so buf is non-null; exclusive by the
        // contract.
        let out = unsafe { slice_mut(buf, cap) };
        out[..bytes.len()].copy_from_slice(&bytes);
        Ok(())
    })
}

/// Loads a checkpoint of `len` bytes (from `adopt_optimizer_save`, or the
/// Rust `Adopt::save`, any supported version) into the optimizer: every
/// group's hyperparameters and every parameter's state.
///
/// An optimizer with no groups and no parameters takes the checkpoint's
/// layout. Otherwise the checkpoint must have the optimizer's layout, by
/// position: as many groups and parameters, each parameter in the same
/// group with the same lanes, and the same name wherever both name it
/// (`ADOPT_STATUS_CHECKPOINT` otherwise, the message saying which).
/// `adopt_optimizer_load_by_name` matches parameters by name instead; to
/// take the checkpoint's layout, load it into a new optimizer. On any error
/// the optimizer is unchanged.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using; `buf`
/// is null or points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_load(
    opt: *mut AdoptOptimizer,
    buf: *const u8,
    len: usize,
) -> AdoptStatus {
    // SAFETY: the caller's contract is this function's.
    unsafe { load_with(opt, buf, len, Adopt::load) }
}

/// `adopt_optimizer_load` with parameters matched by name: each named
/// parameter receives the state saved under its name, wherever it was
/// (models whose parameters were registered in another order); unnamed ones
/// load by position. On any error the optimizer is unchanged.
///
/// # Safety
///
/// As `adopt_optimizer_load`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_load_by_name(
    opt: *mut AdoptOptimizer,
    buf: *const u8,
    len: usize,
) -> AdoptStatus {
    // SAFETY: the caller's contract is this function's.
    unsafe { load_with(opt, buf, len, Adopt::load_by_name) }
}

/// The body of the two loads.
///
/// # Safety
///
/// As `adopt_optimizer_load`.
unsafe fn load_with(
    opt: *mut AdoptOptimizer,
    buf: *const u8,
    len: usize,
    load: fn(&mut Adopt, &[u8]) -> Result<(), Error>,
) -> AdoptStatus {
    guard(|| {
        // SAFETY: optimizer checks the pointer; valid by the contract.
        let opt = unsafe { optimizer(opt)? };
        check_ptr("buf", buf, len)?;
        // SAFETY: checked by check_ptr; valid by the contract.
        let bytes = unsafe { slice(buf, len) };
        load(opt, bytes)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_reported() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, AdoptStatus::Panic);
        // SAFETY: the message is a NUL-terminated string owned by this thread.
        let message = unsafe { CStr::from_ptr(adopt_last_error_message()) };
        let message = message.to_str().unwrap();
        assert!(message.contains("panic: boom"), "{message}");
        assert_eq!(guard(|| Ok(())), AdoptStatus::Ok);
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(adopt_last_error_message()) }, c"");
    }

    #[test]
    fn overlap_is_found_between_any_written_buffer_and_any_other() {
        let span = |name, start, end, written| Span {
            name,
            item: None,
            start,
            end,
            written,
        };
        let check = |spans: &mut [Span<'_>]| check_disjoint(spans).map_err(|f| f.message);
        // Reads may overlap each other.
        assert!(check(&mut [span("a", 0, 8, false), span("b", 4, 12, false)]).is_ok());
        // Touching is not overlapping; empty spans never overlap.
        assert!(check(&mut [span("a", 0, 8, true), span("b", 8, 12, true)]).is_ok());
        assert!(check(&mut [span("a", 0, 8, true), span("b", 4, 4, true)]).is_ok());
        // A read inside a long earlier write, past a short write.
        let err = check(&mut [
            span("w", 0, 100, true),
            span("x", 10, 20, true),
            span("r", 50, 60, false),
        ])
        .unwrap_err();
        assert_eq!(err, "w and x overlap");
        let err = check(&mut [span("r", 0, 100, false), span("w", 50, 60, true)]).unwrap_err();
        assert_eq!(err, "r and w overlap");
        let err = check(&mut [
            span("r1", 0, 10, false),
            span("r2", 5, 100, false),
            span("w", 50, 60, true),
        ])
        .unwrap_err();
        assert_eq!(err, "r2 and w overlap");
    }
}
