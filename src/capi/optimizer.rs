//! The optimizer object over raw pointers.

use super::hyper::{flag, read_hyper};
use super::{
    ADOPT_ROUNDING_NEAREST_EVEN, ADOPT_ROUNDING_STOCHASTIC, AdoptHyper, AdoptStatus, Fail, Field,
    Span, check_disjoint, check_one, check_ptr, guard, slice, slice_mut, write_out,
};
use crate::error::Error;
use crate::hyper::Scaling;
use crate::lanes::{Dtype, Lanes, LanesMut, Rounding};
use crate::optimizer::{Adopt, Entry, Grads, GroupId, Layout, ParamId, Shape, Steps};
use alloc::format;
use alloc::vec::Vec;
use core::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

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
    /// Per-step scratch, reused so a steady-state step allocates nothing:
    /// the overlap check's spans.
    spans: Vec<Span<'static>>,
    /// Per-step scratch: the step's entries. Empty between calls (its
    /// lifetime is a placeholder: entries borrow only during a call).
    entries: Vec<Entry<'static>>,
}

/// `AdoptLayout::params`, `grads`, `exp_avg`, `exp_avg_sq` and
/// `AdoptEntry::params_dtype`, `grads_dtype`: f32 lanes.
pub const ADOPT_DTYPE_F32: u32 = 0;
/// As [`ADOPT_DTYPE_F32`]: bfloat16 lanes (as their bits, `uint16_t`).
pub const ADOPT_DTYPE_BF16: u32 = 1;
/// As [`ADOPT_DTYPE_F32`]: IEEE float16 lanes (as their bits, `uint16_t`).
pub const ADOPT_DTYPE_F16: u32 = 2;

/// `AdoptLayout::shape`: a dense buffer of `len` lanes.
pub const ADOPT_SHAPE_DENSE: u32 = 0;
/// `AdoptLayout::shape`: `len` complex values as `2 × len` interleaved f32
/// lanes.
pub const ADOPT_SHAPE_COMPLEX: u32 = 1;
/// `AdoptLayout::shape`: a row-sparse table of `len` rows of `dim` f32
/// lanes, each row with its own step count.
pub const ADOPT_SHAPE_ROWS: u32 = 2;

/// How a parameter is stored (`adopt::Layout` in C form): start from
/// `adopt_layout_dense`, `adopt_layout_complex` or `adopt_layout_rows` and
/// change the storage fields. `size` is the struct's size as the caller's
/// header declares it (set by those functions).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdoptLayout {
    /// `sizeof(AdoptLayout)`.
    pub size: u32,
    /// `ADOPT_SHAPE_DENSE`, `ADOPT_SHAPE_COMPLEX` or `ADOPT_SHAPE_ROWS`.
    pub shape: u32,
    /// Lanes (dense), complex elements, or rows (tables).
    pub len: u64,
    /// Lanes per row (tables); 0 otherwise.
    pub dim: u64,
    /// The parameters' storage type (`ADOPT_DTYPE_*`); tables and complex
    /// parameters are f32.
    pub params: u32,
    /// The gradients' storage type.
    pub grads: u32,
    /// The first moment's storage: f32, bf16 or f16.
    pub exp_avg: u32,
    /// The second moment's storage: f32 or bf16.
    pub exp_avg_sq: u32,
    /// 1: the optimizer keeps an f32 master copy of half-precision
    /// parameters. Default 0.
    pub master: u32,
    /// `ADOPT_ROUNDING_NEAREST_EVEN` (default) or
    /// `ADOPT_ROUNDING_STOCHASTIC` (bf16 parameters), with `seed`.
    pub rounding: u32,
    /// The stochastic rounding's seed (0 otherwise).
    pub seed: u64,
}

impl From<Layout> for AdoptLayout {
    fn from(layout: Layout) -> AdoptLayout {
        let (shape, len, dim) = match layout.shape() {
            Shape::Dense { lanes } => (ADOPT_SHAPE_DENSE, lanes, 0),
            Shape::Complex { elements } => (ADOPT_SHAPE_COMPLEX, elements, 0),
            Shape::Rows { rows, dim } => (ADOPT_SHAPE_ROWS, rows, dim),
        };
        let (exp_avg, exp_avg_sq) = layout.state_dtypes();
        let (rounding, seed) = match layout.rounding_mode() {
            Rounding::NearestEven => (ADOPT_ROUNDING_NEAREST_EVEN, 0),
            Rounding::Stochastic { seed } => (ADOPT_ROUNDING_STOCHASTIC, seed),
        };
        AdoptLayout {
            size: size_of::<AdoptLayout>() as u32,
            shape,
            len: len as u64,
            dim: dim as u64,
            params: dtype_code(layout.params_dtype()),
            grads: dtype_code(layout.grads_dtype()),
            exp_avg: dtype_code(exp_avg),
            exp_avg_sq: dtype_code(exp_avg_sq),
            master: layout.has_master().into(),
            rounding,
            seed,
        }
    }
}

fn dtype_code(d: Dtype) -> u32 {
    match d {
        Dtype::F32 => ADOPT_DTYPE_F32,
        Dtype::Bf16 => ADOPT_DTYPE_BF16,
        Dtype::F16 => ADOPT_DTYPE_F16,
    }
}

/// The storage type a code names, or a message naming `what`.
fn dtype(what: impl core::fmt::Display, code: u32) -> Result<Dtype, Fail> {
    match code {
        ADOPT_DTYPE_F32 => Ok(Dtype::F32),
        ADOPT_DTYPE_BF16 => Ok(Dtype::Bf16),
        ADOPT_DTYPE_F16 => Ok(Dtype::F16),
        other => Err(Fail::invalid(format!(
            "{what} is {other}: must be ADOPT_DTYPE_F32 (0), ADOPT_DTYPE_BF16 (1) or ADOPT_DTYPE_F16 (2)"
        ))),
    }
}

impl AdoptLayout {
    /// The `Layout` these fields describe (checked when registered).
    fn to_layout(self) -> Result<Layout, Fail> {
        let len = usize::try_from(self.len)
            .map_err(|_| Fail::invalid(format!("layout.len {} exceeds size_t", self.len)))?;
        let dim = usize::try_from(self.dim)
            .map_err(|_| Fail::invalid(format!("layout.dim {} exceeds size_t", self.dim)))?;
        let shape = match self.shape {
            ADOPT_SHAPE_DENSE => Layout::dense(len),
            ADOPT_SHAPE_COMPLEX => Layout::complex(len),
            ADOPT_SHAPE_ROWS => Layout::rows(len, dim),
            other => {
                return Err(Fail::invalid(format!(
                    "layout.shape is {other}: must be ADOPT_SHAPE_DENSE (0), ADOPT_SHAPE_COMPLEX (1) or ADOPT_SHAPE_ROWS (2)"
                )));
            }
        };
        if self.shape != ADOPT_SHAPE_ROWS && self.dim != 0 {
            return Err(Fail::invalid(
                "layout.dim is for ADOPT_SHAPE_ROWS only: leave it 0".into(),
            ));
        }
        let rounding = match (self.rounding, self.seed) {
            (ADOPT_ROUNDING_NEAREST_EVEN, 0) => Rounding::NearestEven,
            (ADOPT_ROUNDING_NEAREST_EVEN, _) => {
                return Err(Fail::invalid(
                    "layout.seed is for ADOPT_ROUNDING_STOCHASTIC only: leave it 0".into(),
                ));
            }
            (ADOPT_ROUNDING_STOCHASTIC, seed) => Rounding::Stochastic { seed },
            (other, _) => {
                return Err(Fail::invalid(format!(
                    "layout.rounding is {other}: must be ADOPT_ROUNDING_NEAREST_EVEN (0) or ADOPT_ROUNDING_STOCHASTIC (1)"
                )));
            }
        };
        Ok(shape
            .params(dtype("layout.params", self.params)?)
            .grads(dtype("layout.grads", self.grads)?)
            .exp_avg(dtype("layout.exp_avg", self.exp_avg)?)
            .exp_avg_sq(dtype("layout.exp_avg_sq", self.exp_avg_sq)?)
            .master(flag("layout.", "master", self.master)?)
            .rounding(rounding))
    }
}

/// A dense f32 layout of `lanes` lanes (f32 state, no master copy).
#[unsafe(no_mangle)]
pub extern "C" fn adopt_layout_dense(lanes: usize) -> AdoptLayout {
    Layout::dense(lanes).into()
}

/// A layout of `elements` complex values (`2 × elements` interleaved f32
/// lanes).
#[unsafe(no_mangle)]
pub extern "C" fn adopt_layout_complex(elements: usize) -> AdoptLayout {
    Layout::complex(elements).into()
}

/// A row-sparse table of `rows × dim` f32 lanes.
#[unsafe(no_mangle)]
pub extern "C" fn adopt_layout_rows(rows: usize, dim: usize) -> AdoptLayout {
    Layout::rows(rows, dim).into()
}

/// `AdoptEntry::grads_kind`: no gradient this step (the parameter and its
/// step counts stay as they are).
pub const ADOPT_GRADS_NONE: u32 = 0;
/// `AdoptEntry::grads_kind`: one gradient lane per parameter lane, of
/// `grads_dtype` (for a table: every row steps).
pub const ADOPT_GRADS_DENSE: u32 = 1;
/// `AdoptEntry::grads_kind`: a table's listed rows (`rows`, `rows_len`),
/// one block of `dim` f32 lanes each at `grads` (`grads_len` = `rows_len ×
/// dim`); rows may repeat (their blocks are summed).
pub const ADOPT_GRADS_ROWS: u32 = 2;

/// One buffer of `adopt_optimizer_step_entries`: any layout.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AdoptEntry {
    /// The parameter's id.
    pub param: u32,
    /// The parameters' storage type (`ADOPT_DTYPE_*`), as registered.
    pub params_dtype: u32,
    /// The parameter lanes (f32, or bf16/f16 bits).
    pub params: *mut core::ffi::c_void,
    /// The number of lanes at `params`.
    pub params_len: usize,
    /// `ADOPT_GRADS_NONE`, `ADOPT_GRADS_DENSE` or `ADOPT_GRADS_ROWS`.
    pub grads_kind: u32,
    /// The gradients' storage type (`ADOPT_DTYPE_*`; f32 for listed rows).
    pub grads_dtype: u32,
    /// The gradient lanes (NULL with length 0 for none).
    pub grads: *const core::ffi::c_void,
    /// The number of lanes at `grads`.
    pub grads_len: usize,
    /// The listed rows (`ADOPT_GRADS_ROWS`; NULL otherwise).
    pub rows: *const u32,
    /// The number of listed rows.
    pub rows_len: usize,
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
        // SAFETY: null or NUL-terminated (the contract).
        let name = unsafe { read_name(name)? };
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
        let step = match opt.param_state(ParamId(param))?.map(|s| s.steps) {
            None => 0,
            Some(Steps::Dense(step)) => step,
            Some(Steps::Rows(_)) => {
                return Err(Error::LayoutMismatch {
                    param: ParamId(param),
                    reason: "a row-sparse table has a step count per row",
                }
                .into());
            }
        };
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
/// [`adopt_grads_nonfinite`](super::adopt_grads_nonfinite).
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

/// A gradient as one entry describes it: its kind, storage type, pointer
/// and length, and the listed rows.
#[derive(Clone, Copy)]
struct RawGrads {
    kind: u32,
    dtype: u32,
    ptr: *const core::ffi::c_void,
    len: usize,
    rows: *const u32,
    rows_len: usize,
}

impl From<&AdoptItem> for AdoptEntry {
    fn from(item: &AdoptItem) -> AdoptEntry {
        AdoptEntry {
            param: item.param,
            params_dtype: ADOPT_DTYPE_F32,
            params: item.params.cast(),
            params_len: item.params_len,
            grads_kind: if item.grads.is_null() && item.grads_len == 0 {
                ADOPT_GRADS_NONE
            } else {
                ADOPT_GRADS_DENSE
            },
            grads_dtype: ADOPT_DTYPE_F32,
            grads: item.grads.cast(),
            grads_len: item.grads_len,
            rows: core::ptr::null(),
            rows_len: 0,
        }
    }
}

/// Checks one entry's pointers (null only with length 0, aligned for its
/// storage type, not larger than memory) and records its spans.
fn check_entry(
    array: &'static str,
    i: usize,
    e: &AdoptEntry,
    spans: &mut Vec<Span<'static>>,
) -> Result<(), Fail> {
    let at = |name| Field {
        array,
        index: i,
        name,
    };
    let lane_ptr = |name, code, ptr: *const core::ffi::c_void, len| -> Result<usize, Fail> {
        let d = dtype(at(name), code)?;
        match d {
            Dtype::F32 => check_ptr(at(name), ptr.cast::<f32>(), len)?,
            _ => check_ptr(at(name), ptr.cast::<u16>(), len)?,
        }
        Ok(d.size())
    };
    let size = lane_ptr(
        "params",
        e.params_dtype,
        e.params.cast_const(),
        e.params_len,
    )?;
    spans.push(Span {
        item: Some(i),
        ..Span::new("params", e.params.cast::<u8>(), e.params_len * size, true)
    });
    match e.grads_kind {
        ADOPT_GRADS_NONE => {
            if !e.grads.is_null() || e.grads_len != 0 || !e.rows.is_null() || e.rows_len != 0 {
                return Err(Fail::invalid(format!(
                    "{} is ADOPT_GRADS_NONE: leave grads, grads_len, rows and rows_len NULL and 0",
                    at("grads_kind")
                )));
            }
        }
        ADOPT_GRADS_DENSE | ADOPT_GRADS_ROWS => {
            if e.grads.is_null() && e.grads_len != 0 {
                return Err(Fail {
                    status: AdoptStatus::NullPointer,
                    message: format!(
                        "{} is a null pointer (with length {}); to skip the item, pass NULL with length 0",
                        at("grads"),
                        e.grads_len
                    ),
                });
            }
            let size = lane_ptr("grads", e.grads_dtype, e.grads, e.grads_len)?;
            spans.push(Span {
                item: Some(i),
                ..Span::new("grads", e.grads.cast::<u8>(), e.grads_len * size, false)
            });
            if e.grads_kind == ADOPT_GRADS_ROWS {
                check_ptr(at("rows"), e.rows, e.rows_len)?;
                spans.push(Span {
                    item: Some(i),
                    ..Span::new("rows", e.rows, e.rows_len, false)
                });
            } else if !e.rows.is_null() || e.rows_len != 0 {
                return Err(Fail::invalid(format!(
                    "{} is ADOPT_GRADS_DENSE: leave rows and rows_len NULL and 0",
                    at("grads_kind")
                )));
            }
        }
        other => {
            return Err(Fail::invalid(format!(
                "{} is {other}: must be ADOPT_GRADS_NONE (0), ADOPT_GRADS_DENSE (1) or ADOPT_GRADS_ROWS (2)",
                at("grads_kind")
            )));
        }
    }
    Ok(())
}

/// The step item of a checked entry.
///
/// # Safety
///
/// `check_entry` accepted `e`, and its buffers are valid for the call and
/// do not overlap where one is written (`check_disjoint`).
unsafe fn entry<'a>(e: &AdoptEntry) -> Result<Entry<'a>, Fail> {
    // SAFETY (every slice below): checked by check_entry and
    // check_disjoint; valid and exclusive by the caller's contract; bf16
    // and f16 are `repr(transparent)` over `u16`, so every bit pattern is
    // one.
    let params = match e.params_dtype {
        // SAFETY: see above.
        ADOPT_DTYPE_F32 => LanesMut::F32(unsafe { slice_mut(e.params.cast(), e.params_len) }),
        // SAFETY: see above.
        ADOPT_DTYPE_BF16 => LanesMut::Bf16(unsafe { slice_mut(e.params.cast(), e.params_len) }),
        // SAFETY: see above.
        _ => LanesMut::F16(unsafe { slice_mut(e.params.cast(), e.params_len) }),
    };
    let raw = RawGrads {
        kind: e.grads_kind,
        dtype: e.grads_dtype,
        ptr: e.grads,
        len: e.grads_len,
        rows: e.rows,
        rows_len: e.rows_len,
    };
    let dense = || match raw.dtype {
        // SAFETY: as above; gradients are only read.
        ADOPT_DTYPE_F32 => Lanes::F32(unsafe { slice(raw.ptr.cast(), raw.len) }),
        // SAFETY: as above; gradients are only read.
        ADOPT_DTYPE_BF16 => Lanes::Bf16(unsafe { slice(raw.ptr.cast(), raw.len) }),
        // SAFETY: as above; gradients are only read.
        _ => Lanes::F16(unsafe { slice(raw.ptr.cast(), raw.len) }),
    };
    let grads = match raw.kind {
        ADOPT_GRADS_NONE => None,
        ADOPT_GRADS_DENSE => Some(Grads::Dense(dense())),
        _ => {
            let Lanes::F32(values) = dense() else {
                return Err(Fail {
                    status: AdoptStatus::DtypeMismatch,
                    message: format!(
                        "parameter id {}: listed rows' gradients are float32, not {}",
                        e.param,
                        dtype("grads_dtype", raw.dtype).map_or("?", Dtype::name)
                    ),
                });
            };
            Some(Grads::Rows {
                // SAFETY: as above; rows are only read.
                rows: unsafe { slice(raw.rows, raw.rows_len) },
                values,
            })
        }
    };
    Ok(Entry {
        id: ParamId(e.param),
        params,
        grads,
    })
}

/// The body of the optimizer's steps: `n` entries, entry `i` read by
/// `get(i)` from an array of `n` elements at `array` (named `name`), with
/// `scaling`. Allocates nothing in steady state (the spans and entries are
/// the optimizer's reused scratch).
///
/// # Safety
///
/// `opt` is null or a live optimizer no other thread uses; the array and
/// every buffer its entries name are valid as the step functions' contract
/// says.
unsafe fn step_entries<T>(
    opt: *mut AdoptOptimizer,
    name: &'static str,
    array: *const T,
    n: usize,
    get: impl Fn(&T) -> AdoptEntry,
    inv_scale: f32,
    found_inf: u32,
) -> AdoptStatus {
    guard(|| {
        let scaling = Scaling {
            inv_scale,
            found_inf: flag("", "found_inf", found_inf)?,
        };
        check_one("opt", opt)?;
        // SAFETY: non-null and aligned (check_one); live and unshared by
        // the caller's contract.
        let outer = unsafe { &mut *opt };
        check_ptr(name, array, n)?;
        // SAFETY: checked by check_ptr; valid by the contract. The array
        // joins the overlap check, so no written buffer overlaps it while
        // this slice lives.
        let raw = unsafe { slice(array, n) };
        let spans = &mut outer.spans;
        spans.clear();
        spans.push(Span::new(name, array, n, false));
        for (i, item) in raw.iter().enumerate() {
            check_entry(name, i, &get(item), spans)?;
        }
        check_disjoint(spans)?;
        let mut entries: Vec<Entry<'_>> = core::mem::take(&mut outer.entries);
        let result = (|| {
            for item in raw {
                // SAFETY: checked above (check_entry, check_disjoint).
                entries.push(unsafe { entry(&get(item))? });
            }
            outer.inner.step_scaled(&mut entries, scaling)?;
            Ok(())
        })();
        entries.clear();
        // SAFETY: an empty `Vec` holds no entry, so its lifetime parameter
        // constrains nothing: keeping the allocation for the next call is
        // sound.
        outer.entries =
            unsafe { core::mem::transmute::<Vec<Entry<'_>>, Vec<Entry<'static>>>(entries) };
        result
    })
}

/// One step over `n_entries` entries of any layout (`entries` may be NULL
/// when `n_entries` is 0), with `inv_scale` and `found_inf` as
/// [`adopt_optimizer_step_scaled`].
///
/// Everything is validated first (pointers and their alignment for each
/// storage type, overlap, unknown or repeated ids, storage types, lengths,
/// listed rows, each group's hyperparameters at each parameter's own step
/// count): on error no buffer, state or step count has changed. The
/// results are bit-identical to the Rust `Adopt::step` of the same
/// entries.
///
/// # Safety
///
/// `opt` is null or a live optimizer that no other thread is using;
/// `entries` is null or points to `n_entries` valid `AdoptEntry`s, whose
/// non-null buffers each point to as many valid, initialised lanes of
/// their storage type as their length says; nothing else reads or writes
/// them during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_step_entries(
    opt: *mut AdoptOptimizer,
    entries: *const AdoptEntry,
    n_entries: usize,
    inv_scale: f32,
    found_inf: u32,
) -> AdoptStatus {
    // SAFETY: the caller's contract is this function's.
    unsafe {
        step_entries(
            opt,
            "entries",
            entries,
            n_entries,
            |e| *e,
            inv_scale,
            found_inf,
        )
    }
}

/// The body of `adopt_optimizer_step` and `adopt_optimizer_step_scaled`.
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
    // SAFETY: the caller's contract is this function's.
    unsafe {
        step_entries(
            opt,
            "items",
            items,
            n_items,
            |item| AdoptEntry::from(item),
            inv_scale,
            found_inf,
        )
    }
}

/// Registers a parameter of any [`AdoptLayout`] in `group`, with an
/// optional NUL-terminated UTF-8 `name`; stores its id in `*param_out`.
///
/// # Safety
///
/// As `adopt_optimizer_add_param`; `layout` is null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn adopt_optimizer_add_param_layout(
    opt: *mut AdoptOptimizer,
    group: u32,
    layout: *const AdoptLayout,
    name: *const c_char,
    param_out: *mut u32,
) -> AdoptStatus {
    guard(|| {
        check_one("layout", layout)?;
        // SAFETY: non-null and aligned (check_one); the struct starts with
        // its `size`, a u32 every version has.
        let size = unsafe { layout.cast::<u32>().read() };
        let known = size_of::<AdoptLayout>();
        if size as usize != known {
            return Err(Fail::invalid(format!(
                "layout.size is {size}: this library reads an AdoptLayout of {known} bytes (initialise it with adopt_layout_dense(), and build against this library's adopt.h)"
            )));
        }
        // SAFETY: valid by the contract and `size`; every bit pattern of
        // its integer fields is a valid value.
        let layout = unsafe { layout.read() }.to_layout()?;
        // SAFETY: each helper checks its pointer; valid by the contract.
        let (opt, name) = unsafe { (optimizer(opt)?, read_name(name)?) };
        check_one("param_out", param_out)?;
        let id = opt.add_param(GroupId(group), layout, name)?;
        // SAFETY: checked above; valid by the contract.
        unsafe { write_out(param_out, id.0) };
        Ok(())
    })
}

/// A C string argument: NULL for none, else UTF-8.
///
/// # Safety
///
/// `name` is null or NUL-terminated.
unsafe fn read_name<'a>(name: *const c_char) -> Result<Option<&'a str>, Fail> {
    if name.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null, NUL-terminated string (the contract).
    let bytes = unsafe { CStr::from_ptr(name) };
    bytes
        .to_str()
        .map(Some)
        .map_err(|_| Fail::invalid("name is not valid UTF-8".into()))
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
