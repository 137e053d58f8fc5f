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

mod hyper;
mod optimizer;
mod step;

pub use hyper::*;
pub use optimizer::*;
pub use step::*;

use crate::error::Error;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ffi::{CStr, c_char};
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
    /// A row-sparse step lists a row the table does not have
    /// (`Error::RowOutOfRange`).
    RowOutOfRange = 19,
    /// A row-sparse step's gradient is not one block per listed row
    /// (`Error::RowBlocksMismatch`).
    RowBlocksMismatch = 20,
    /// A table does not have its state's rows × dim lanes
    /// (`Error::TableMismatch`).
    TableMismatch = 21,
    /// A buffer's storage type is not the parameter's registered one
    /// (`Error::DtypeMismatch`).
    DtypeMismatch = 22,
    /// A layout the optimizer cannot step (`Error::InvalidLayout`).
    InvalidLayout = 23,
    /// An operation that does not fit the parameter's layout
    /// (`Error::LayoutMismatch`).
    LayoutMismatch = 24,
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
            Error::RowOutOfRange { .. } => AdoptStatus::RowOutOfRange,
            Error::RowBlocksMismatch { .. } => AdoptStatus::RowBlocksMismatch,
            Error::TableMismatch { .. } => AdoptStatus::TableMismatch,
            Error::DtypeMismatch { .. } => AdoptStatus::DtypeMismatch,
            Error::InvalidLayout { .. } => AdoptStatus::InvalidLayout,
            Error::LayoutMismatch { .. } => AdoptStatus::LayoutMismatch,
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
fn check_ptr<T>(name: impl core::fmt::Display, ptr: *const T, len: usize) -> Result<(), Fail> {
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
fn check_one<T>(name: impl core::fmt::Display, ptr: *const T) -> Result<(), Fail> {
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

/// A field of item `i` of an array argument (`items[3].params`), formatted
/// only when a message needs it.
#[derive(Clone, Copy, Debug)]
struct Field<'n> {
    array: &'n str,
    index: usize,
    name: &'n str,
}

impl core::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}[{}].{}", self.array, self.index, self.name)
    }
}

/// One buffer of a call, for the overlap check.
#[derive(Clone, Copy, Debug)]
struct Span<'n> {
    name: &'n str,
    /// The item index, for buffers of `adopt_optimizer_step`.
    item: Option<usize>,
    start: usize,
    end: usize,
    written: bool,
    /// The span's position in the argument list, which orders spans that
    /// start at the same address (so messages name them in argument order).
    order: usize,
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
            order: 0,
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
/// Sorts `spans` by address, then by argument order (so that messages name
/// buffers in argument order), without allocating.
fn check_disjoint(spans: &mut [Span<'_>]) -> Result<(), Fail> {
    for (i, s) in spans.iter_mut().enumerate() {
        s.order = i;
    }
    spans.sort_unstable_by_key(|s| (s.start, s.order));
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

/// Writes an out-parameter that `check_one` accepted.
///
/// # Safety
///
/// `out` is valid for writes of a `T`.
unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: checked non-null and aligned; valid by the caller.
    unsafe { out.write(value) }
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
            order: 0,
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
