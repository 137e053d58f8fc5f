//! `adopt_rs._core`: the native half of the Python package `adopt-rs`.
//!
//! Two entry points over the `adopt` crate's public API:
//!
//! - [`numpy_step`]: one step over NumPy arrays in place (`adopt_rs.adopt_step`).
//! - [`Engine`]: an [`Adopt`] optimizer whose parameters are torch tensors
//!   (`adopt_rs.torch.ADOPT`). One call of [`Engine::step`] reads every
//!   parameter's gradient, checks that nothing the optimizer relies on has
//!   changed, and runs one validated `Adopt::step_scaled` over all of them
//!   with the GIL released. Each parameter is registered with its core
//!   `Layout`: f32 (complex as f32 lanes), bf16/f16 parameters and
//!   gradients (f32 arithmetic, round to nearest even), f32 or bf16
//!   moments, or a row-sparse embedding table (a step count per row; its
//!   sparse gradients arrive as listed rows and their values). The moments live in the `Adopt` state and are
//!   lent to Python as NumPy arrays ([`Engine::arrays`]), which the Python
//!   side wraps in torch tensors: no copy per step.
//!
//! The Python layer (`adopt_rs/torch.py`) validates tensors (device, dtype,
//! layout, contiguity, memory overlap) before it registers them here; every
//! step re-checks what could have changed since (data pointers, gradients'
//! dtype, layout, size and contiguity, the state's tensors) and hands back
//! the parameters that need the Python layer's attention instead of
//! stepping, so that a refused step changes nothing.

use adopt::{
    Adopt, Caution, Clip, DecayScaling, Dtype, Entry, Error, Grads, GroupId, Hyper, Item, Kernel,
    Lanes, LanesMut, Layout, ParamId, Scaling, Shape, State, StateView, StepOptions, Steps,
    StepsMut, WeightDecay, adopt_step_ext,
};
use half::{bf16, f16};
use numpy::ndarray::ArrayView1;
use numpy::{
    PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3::{PyTraverseError, create_exception, intern};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

create_exception!(
    _core,
    AdoptError,
    PyValueError,
    "An input the adopt core refused (a hyperparameter out of range, a clip \
     threshold that is negative or NaN, ...). The message says what; nothing \
     was changed."
);

/// A core error as a Python exception, its message prefixed by `context`.
fn core_error(context: &str, error: Error) -> PyErr {
    if context.is_empty() {
        AdoptError::new_err(error.to_string())
    } else {
        AdoptError::new_err(format!("{context}: {error}"))
    }
}

/// The hyperparameters of a group, as the Python layer passes them (a
/// dict, keys as below). The clip schedule is not among them: the Python
/// callable is evaluated at each step.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct HyperArgs {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decouple: bool,
    /// `"lr"`, `"fixed"` or `"corrected"`.
    decay_scaling: String,
    max_lr: Option<f64>,
    first_step_decay: bool,
    maximize: bool,
    nesterov: bool,
    /// `"off"`, `"timm"` or `"pytorch_optimizer"`.
    caution: String,
    clip_offset: u64,
}

impl HyperArgs {
    /// The core's `Hyper`, with `Clip::None` (each step sets the clip).
    fn to_hyper(&self) -> PyResult<Hyper> {
        let scaling = match self.decay_scaling.as_str() {
            "lr" => DecayScaling::Lr,
            "fixed" => DecayScaling::Fixed,
            "corrected" => DecayScaling::Corrected {
                max_lr: self.max_lr,
            },
            other => {
                return Err(PyValueError::new_err(format!(
                    "decay_scaling is {other:?}: must be 'lr', 'fixed' or 'corrected'"
                )));
            }
        };
        let caution = match self.caution.as_str() {
            "off" => Caution::Off,
            "timm" => Caution::Timm,
            "pytorch_optimizer" => Caution::PytorchOptimizer,
            other => {
                return Err(PyValueError::new_err(format!(
                    "caution is {other:?}: must be 'off', 'timm' or 'pytorch_optimizer'"
                )));
            }
        };
        if !self.decouple && (scaling != DecayScaling::Lr || self.first_step_decay) {
            return Err(PyValueError::new_err(
                "decay_scaling and first_step_decay apply to decoupled decay only: pass decouple=True",
            ));
        }
        let weight_decay = match (self.weight_decay, self.decouple) {
            (0.0, false) => WeightDecay::None,
            (wd, false) => WeightDecay::L2(wd),
            (weight_decay, true) => WeightDecay::Decoupled {
                weight_decay,
                scaling,
                first_step: self.first_step_decay,
            },
        };
        Ok(Hyper {
            lr: self.lr,
            betas: (self.beta1, self.beta2),
            eps: self.eps,
            weight_decay,
            maximize: self.maximize,
            clip: Clip::None,
            clip_offset: self.clip_offset,
            nesterov: self.nesterov,
            caution,
        })
    }
}

/// A float as Python's `repr` writes the usual ones (`nan`, `inf`, `-1.0`).
fn py_float(value: f64) -> String {
    if value.is_nan() {
        "nan".into()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{value:?}")
    }
}

/// A clip threshold a Python schedule returned: a number >= 0, `inf` for
/// no clipping.
fn check_threshold(at: u64, value: f64) -> PyResult<f64> {
    if value.is_nan() || value < 0.0 {
        return Err(PyValueError::new_err(format!(
            "clip_lambda({at}.0) returned {}: a clip threshold must be a number >= 0 (inf for none)",
            py_float(value)
        )));
    }
    Ok(value)
}

/// `clip_lambda(at)` as a float, validated.
fn evaluate_clip(clip_lambda: &Bound<'_, PyAny>, at: u64) -> PyResult<f64> {
    let value: f64 = clip_lambda.call1((at as f64,))?.extract().map_err(|e| {
        PyTypeError::new_err(format!("clip_lambda({at}.0) must return a number: {e}"))
    })?;
    check_threshold(at, value)
}

/// The thresholds of the step being taken, for groups whose parameters
/// are at different step counts: `Clip::Custom` takes a plain function,
/// which reads them here. Only the step holding a [`TableUser`] fills
/// it; the step (and the validation threads it may start) only read it.
static CLIP_TABLE: Mutex<Vec<(u64, f64)>> = Mutex::new(Vec::new());
/// Set for the whole of a step that uses [`CLIP_TABLE`] ([`TableUser`]).
static CLIP_TABLE_BUSY: AtomicBool = AtomicBool::new(false);

/// The right to fill [`CLIP_TABLE`] and step with it, until dropped.
struct TableUser;

impl TableUser {
    /// Waits (with the GIL released, since the step holding the table may
    /// need the GIL to finish) until no other step uses the table.
    fn acquire(py: Python<'_>) -> TableUser {
        while CLIP_TABLE_BUSY
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            py.detach(std::thread::yield_now);
        }
        TableUser
    }
}

impl Drop for TableUser {
    fn drop(&mut self) {
        CLIP_TABLE_BUSY.store(false, Ordering::Release);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The schedule of a group with several step counts in one step: the
/// threshold evaluated for this step count, NaN (which the core refuses)
/// for one that was not evaluated, which cannot happen.
fn table_clip(at: u64) -> f64 {
    lock(&CLIP_TABLE)
        .iter()
        .find(|(key, _)| *key == at)
        .map_or(f64::NAN, |(_, value)| *value)
}

/// How a registered torch parameter is stored and stepped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// float32 lanes.
    F32,
    /// complex64 elements as interleaved float32 lanes.
    Complex,
    /// bfloat16 parameters and gradients, f32 arithmetic.
    Bf16,
    /// float16 parameters and gradients, f32 arithmetic.
    F16,
    /// A float32 embedding table of `rows × dim` (the core's row-sparse
    /// layout): a step count per row, gradients dense or listed rows.
    Table { rows: usize, dim: usize },
}

impl Kind {
    /// Bytes per lane of the parameter and of a dense gradient.
    fn lane_bytes(self) -> usize {
        match self {
            Kind::Bf16 | Kind::F16 => 2,
            _ => 4,
        }
    }

    /// The step counts of the state's `step` tensor (one, or one per row).
    fn counts(self) -> usize {
        match self {
            Kind::Table { rows, .. } => rows,
            _ => 1,
        }
    }
}

/// What the engine knows of one registered torch parameter.
struct Rec {
    group: usize,
    /// The position in its group's `params` list.
    index: usize,
    kind: Kind,
    /// Lanes of the parameter: `numel`, twice that for complex parameters.
    lanes: usize,
    numel: usize,
    /// The dtype object every step's dense gradient must have (the
    /// parameter's).
    dtype: Py<PyAny>,
    /// The parameter tensor (`None` after the garbage collector cleared it).
    param: Option<Py<PyAny>>,
    /// `param.data` when `p_ptr` was read: it keeps that storage alive, so
    /// no other tensor can be allocated at `p_ptr` while the record lives,
    /// and an unchanged data pointer means unchanged memory.
    data: Option<Py<PyAny>>,
    p_ptr: usize,
    /// The tensors the optimizer put in `state[param]`: a step goes ahead
    /// only while `state` still holds these very objects.
    exp_avg: Option<Py<PyAny>>,
    exp_avg_sq: Option<Py<PyAny>>,
    step: Option<Py<PyAny>>,
    /// `step.data` when `step_ptr` was read: keeps that storage alive (even
    /// if `step.data` is replaced).
    step_data: Option<Py<PyAny>>,
    /// The float32 storage of `step` (`kind.counts()` values), which each
    /// step reads (a value written there from Python is taken over) and
    /// writes, for the counts it uses.
    step_ptr: usize,
}

/// The gradient of one parameter of the step being taken.
#[derive(Clone, Copy)]
enum WorkGrad {
    /// A dense gradient of the parameter's dtype and lanes at this address.
    Dense(usize),
    /// A table's listed rows: `nnz` int32 row indices (each checked to be
    /// in range) at `rows`, `nnz × dim` float32 values at `values`.
    Rows {
        rows: usize,
        nnz: usize,
        values: usize,
    },
}

/// One parameter of the step being taken.
struct Work {
    id: u32,
    kind: Kind,
    p: usize,
    grad: WorkGrad,
    lanes: usize,
}

impl Work {
    /// Calls `f` with the index of each step count this step uses: the
    /// parameter's one, or the rows of a table the gradient touches (listed
    /// rows as listed, repeats included).
    fn for_counts(&self, mut f: impl FnMut(usize)) {
        match (self.kind, self.grad) {
            (Kind::Table { .. }, WorkGrad::Rows { rows, nnz, .. }) => {
                if nnz > 0 {
                    // SAFETY: `nnz` int32 at `rows`, kept alive by the
                    // step's `keep` and checked to be in range.
                    let rows = unsafe { std::slice::from_raw_parts(rows as *const u32, nnz) };
                    rows.iter().for_each(|&r| f(r as usize));
                }
            }
            (Kind::Table { rows, .. }, WorkGrad::Dense(_)) => (0..rows).for_each(f),
            _ => f(0),
        }
    }
}

/// A parameter's step counts in the core's state.
fn core_counts(opt: &mut Adopt, id: u32) -> Option<StepsMut<'_>> {
    opt.param_state_mut(ParamId(id))
        .ok()
        .flatten()
        .map(|s| s.steps)
}

/// Step count `slot` of `steps`.
fn count_at<'s>(steps: &'s mut StepsMut<'_>, slot: usize) -> &'s mut u64 {
    match steps {
        StepsMut::Dense(c) => c,
        StepsMut::Rows(rows) => &mut rows[slot],
    }
}

/// An `Adopt` optimizer over torch tensors (see the module docs).
#[pyclass(module = "adopt_rs._core")]
pub struct Engine {
    opt: Adopt,
    recs: Vec<Rec>,
    /// Parameter ids per group, in the group's order.
    groups: Vec<Vec<u32>>,
    strided: Py<PyAny>,
    work: Vec<Work>,
}

/// What [`Engine::step`] returns instead of stepping: the parameter lists
/// differ from the registered ones (`true`), or these parameters need the
/// Python layer's attention.
type Attention = Option<(bool, Vec<u32>)>;

impl Engine {
    /// The label of a parameter in messages.
    fn label(&self, id: u32) -> String {
        let r = &self.recs[id as usize];
        format!("param_groups[{}]['params'][{}]", r.group, r.index)
    }

    /// Memory shared between one parameter's buffer and another parameter
    /// or gradient of the step (the step writes parameters).
    fn check_overlap(&self) -> PyResult<()> {
        let mut spans: Vec<(usize, usize, bool, u32)> = Vec::with_capacity(2 * self.work.len());
        for w in self.work.iter().filter(|w| w.lanes > 0) {
            let bytes = w.kind.lane_bytes() * w.lanes;
            spans.push((w.p, w.p + bytes, true, w.id));
            match (w.grad, w.kind) {
                (WorkGrad::Dense(g), _) => spans.push((g, g + bytes, false, w.id)),
                (WorkGrad::Rows { rows, nnz, values }, Kind::Table { dim, .. }) if nnz > 0 => {
                    spans.push((rows, rows + 4 * nnz, false, w.id));
                    spans.push((values, values + 4 * nnz * dim, false, w.id));
                }
                _ => {}
            }
        }
        spans.sort_unstable_by_key(|s| s.0);
        let mut furthest: Option<(usize, bool, u32)> = None;
        let mut written: Option<(usize, u32)> = None;
        for &(start, end, write, id) in &spans {
            let clash = match (written, furthest) {
                (Some((w_end, w_id)), _) if start < w_end => Some((w_id, true)),
                (_, Some((a_end, a_write, a_id))) if write && start < a_end => {
                    Some((a_id, a_write))
                }
                _ => None,
            };
            if let Some((other, other_is_param)) = clash {
                let what = |id: u32, param: bool| {
                    if param {
                        self.label(id)
                    } else {
                        format!("the gradient of {}", self.label(id))
                    }
                };
                return Err(PyValueError::new_err(format!(
                    "{} and {} share memory: a step writes parameters in place, so no parameter may overlap another parameter or a gradient",
                    what(other, other_is_param),
                    what(id, write)
                )));
            }
            if furthest.is_none_or(|(a_end, _, _)| end > a_end) {
                furthest = Some((end, write, id));
            }
            if write && written.is_none_or(|(w_end, _)| end > w_end) {
                written = Some((end, id));
            }
        }
        Ok(())
    }
}

/// A float32 step count read from a state tensor: a whole number from 0
/// to 2^64 - 1.
fn step_count(value: f32) -> Option<u64> {
    (value.is_finite()
        && value >= 0.0
        && value.fract() == 0.0
        && (value as f64) < 18446744073709551616.0)
        .then_some(value as u64)
}

/// The value at index `slot` of a record's float32 `step` storage.
///
/// # Safety
///
/// `slot < kind.counts()` and the record's step tensor is alive.
unsafe fn read_step(r: &Rec, slot: usize) -> f32 {
    // SAFETY: the caller's contract; `step_ptr` is the float32 storage of
    // `kind.counts()` values the Python layer created, held by `step_data`.
    unsafe { *(r.step_ptr as *const f32).add(slot) }
}

/// A parameter's moments as 1-D NumPy arrays: float32, or int16 holding
/// bfloat16 bits.
type Moments<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// A NumPy array over `lanes` lanes of a state buffer at `ptr`, based on
/// `owner`.
///
/// # Safety
///
/// `ptr` points to `lanes` initialised lanes of `dtype` that live as long
/// as `owner`.
unsafe fn lend<'py>(
    ptr: *const u8,
    lanes: usize,
    dtype: Dtype,
    owner: Bound<'py, PyAny>,
) -> Bound<'py, PyAny> {
    // SAFETY: the caller's contract.
    unsafe {
        match dtype {
            Dtype::F32 => lend_as::<f32>(ptr, lanes, owner),
            _ => lend_as::<i16>(ptr, lanes, owner),
        }
    }
}

/// [`lend`] for lanes of type `T`.
///
/// # Safety
///
/// As [`lend`]'s, with `T` the lanes' type.
unsafe fn lend_as<'py, T: numpy::Element>(
    ptr: *const u8,
    lanes: usize,
    owner: Bound<'py, PyAny>,
) -> Bound<'py, PyAny> {
    // An empty view needs an aligned, non-null pointer only.
    let p = if lanes == 0 {
        std::ptr::NonNull::<T>::dangling().as_ptr().cast_const()
    } else {
        ptr.cast::<T>()
    };
    // SAFETY: the caller's contract.
    unsafe { PyArray1::borrow_from_array(&ArrayView1::from_shape_ptr(lanes, p), owner).into_any() }
}

/// The address and dtype of a state buffer.
fn buffer(lanes: &mut LanesMut<'_>) -> (*const u8, Dtype) {
    match lanes {
        LanesMut::F32(x) => (x.as_ptr().cast(), Dtype::F32),
        LanesMut::Bf16(x) => (x.as_ptr().cast(), Dtype::Bf16),
        LanesMut::F16(x) => (x.as_ptr().cast(), Dtype::F16),
        _ => (std::ptr::null(), Dtype::F32),
    }
}

#[pymethods]
impl Engine {
    /// An engine with no groups. `strided` is torch's `torch.strided`,
    /// against which gradients are checked.
    #[new]
    fn new(strided: Py<PyAny>) -> Self {
        Engine {
            opt: Adopt::new(),
            recs: Vec::new(),
            groups: Vec::new(),
            strided,
            work: Vec::new(),
        }
    }

    /// Adds a group; returns its index.
    fn add_group(&mut self, hyper: HyperArgs) -> PyResult<usize> {
        let context = format!("param_groups[{}]", self.groups.len());
        let id = self
            .opt
            .add_group(hyper.to_hyper()?)
            .map_err(|e| core_error(&context, e))?;
        self.groups.push(Vec::new());
        Ok(id.0 as usize)
    }

    /// Replaces a group's hyperparameters (validated now; on error the
    /// group keeps its old ones) and, when given, its initial learning
    /// rate (from which corrected decay without `max_lr` takes its peak).
    #[pyo3(signature = (group, hyper, initial_lr=None))]
    fn set_group(
        &mut self,
        group: usize,
        hyper: HyperArgs,
        initial_lr: Option<f64>,
    ) -> PyResult<()> {
        let context = format!("param_groups[{group}]");
        let id = GroupId(group as u32);
        let hyper = hyper.to_hyper()?;
        let previous = self
            .opt
            .initial_lr(id)
            .map_err(|e| core_error(&context, e))?;
        if let Some(initial_lr) = initial_lr {
            self.opt
                .set_initial_lr(id, initial_lr)
                .map_err(|e| core_error(&format!("{context} (initial_lr)"), e))?;
        }
        if let Err(e) = self.opt.set_hyper(id, hyper) {
            // Keep the group as it was.
            let _ = self.opt.set_initial_lr(id, previous);
            return Err(core_error(&context, e));
        }
        Ok(())
    }

    /// Registers a parameter the Python layer has validated: a contiguous
    /// CPU tensor of `numel` elements at `data_ptr` whose dtype is `dtype`
    /// (torch's object), stepped as `kind` (`"float32"`, `"complex64"`,
    /// `"bfloat16"`, `"float16"`, or `"table"`: a float32 embedding table
    /// of rows of `dim` elements), its moments stored as `moments`
    /// (`"float32"` or `"bfloat16"`). Returns its id.
    #[pyo3(signature = (group, param, numel, kind, dtype, data_ptr, moments, dim=0))]
    #[allow(clippy::too_many_arguments)]
    fn add_param(
        &mut self,
        py: Python<'_>,
        group: usize,
        param: Py<PyAny>,
        numel: usize,
        kind: &str,
        dtype: Py<PyAny>,
        data_ptr: usize,
        moments: &str,
        dim: usize,
    ) -> PyResult<u32> {
        let context = format!("param_groups[{group}]");
        let kind = match kind {
            "float32" => Kind::F32,
            "complex64" => Kind::Complex,
            "bfloat16" => Kind::Bf16,
            "float16" => Kind::F16,
            "table" if dim > 0 && numel.is_multiple_of(dim) && (numel / dim) as u64 <= 1 << 32 => {
                Kind::Table {
                    rows: numel / dim,
                    dim,
                }
            }
            other => {
                return Err(PyValueError::new_err(format!(
                    "{context}: cannot register a {other} parameter of {numel} elements (rows of {dim})"
                )));
            }
        };
        let layout = match kind {
            Kind::F32 => Layout::dense(numel),
            Kind::Complex => Layout::complex(numel),
            Kind::Bf16 => Layout::dense(numel).params(Dtype::Bf16),
            Kind::F16 => Layout::dense(numel).params(Dtype::F16),
            Kind::Table { rows, dim } => Layout::rows(rows, dim),
        };
        let layout = match moments {
            "float32" => layout,
            "bfloat16" => layout.exp_avg(Dtype::Bf16).exp_avg_sq(Dtype::Bf16),
            other => {
                return Err(PyValueError::new_err(format!(
                    "{context}: moments must be float32 or bfloat16, not {other}"
                )));
            }
        };
        let lanes = layout.lanes().unwrap_or(0);
        let id = self
            .opt
            .add_param(GroupId(group as u32), layout, None)
            .map_err(|e| core_error(&context, e))?;
        let data = param.bind(py).getattr(intern!(py, "data"))?.unbind();
        self.recs.push(Rec {
            group,
            index: self.groups[group].len(),
            kind,
            lanes,
            numel,
            dtype,
            param: Some(param),
            data: Some(data),
            p_ptr: data_ptr,
            exp_avg: None,
            exp_avg_sq: None,
            step: None,
            step_data: None,
            step_ptr: 0,
        });
        self.groups[group].push(id.0);
        Ok(id.0)
    }

    /// Records a parameter's new data (its `.data` was replaced by a
    /// validated tensor of the same size, at `data_ptr`).
    fn update_param(&mut self, py: Python<'_>, id: u32, data_ptr: usize) -> PyResult<()> {
        let r = &mut self.recs[id as usize];
        let param = r
            .param
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the engine was cleared"))?;
        r.data = Some(param.bind(py).getattr(intern!(py, "data"))?.unbind());
        r.p_ptr = data_ptr;
        Ok(())
    }

    /// Gives each of `ids` a zero state where it has none, the f32 states'
    /// first moments allocated before the second ones (so each moment's
    /// buffers lie in order in memory, as `Adopt` lays out the states it
    /// creates).
    fn prepare_states(&mut self, ids: Vec<u32>) -> PyResult<()> {
        let new: Vec<u32> = ids
            .into_iter()
            .filter(|&id| matches!(self.opt.param_state(ParamId(id)), Ok(None)))
            .collect();
        let plain = |opt: &Adopt, id: u32| {
            opt.layout(ParamId(id)).is_ok_and(|l| {
                !matches!(l.shape(), Shape::Rows { .. })
                    && l.state_dtypes() == (Dtype::F32, Dtype::F32)
            })
        };
        let (plain_ids, other): (Vec<u32>, Vec<u32>) =
            new.into_iter().partition(|&id| plain(&self.opt, id));
        let firsts: Vec<Vec<f32>> = plain_ids
            .iter()
            .map(|&id| vec![0.0; self.recs[id as usize].lanes])
            .collect();
        let seconds: Vec<Vec<f32>> = plain_ids
            .iter()
            .map(|&id| vec![0.0; self.recs[id as usize].lanes])
            .collect();
        for ((id, m), v) in plain_ids.into_iter().zip(firsts).zip(seconds) {
            self.opt
                .set_state(ParamId(id), State::from_parts(m, v, 0))
                .map_err(|e| core_error("", e))?;
        }
        for id in other {
            self.opt
                .init_state(ParamId(id), None)
                .map_err(|e| core_error("", e))?;
        }
        Ok(())
    }

    /// A parameter's moments as 1-D NumPy arrays over the engine's own
    /// buffers (writable, no copy; float32, or int16 holding bfloat16
    /// bits), which keep the engine alive. The parameter must have a state
    /// ([`prepare_states`](Engine::prepare_states)).
    fn arrays<'py>(slf: Bound<'py, Self>, id: u32) -> PyResult<Moments<'py>> {
        let (m, v, lanes) = {
            let mut this = slf.borrow_mut();
            let lanes = this.recs[id as usize].lanes;
            let mut state = this
                .opt
                .param_state_mut(ParamId(id))
                .map_err(|e| core_error("", e))?
                .ok_or_else(|| PyValueError::new_err("the parameter has no state yet"))?;
            (
                buffer(&mut state.exp_avg),
                buffer(&mut state.exp_avg_sq),
                lanes,
            )
        };
        // SAFETY: the buffers are `lanes` initialised lanes owned by the
        // engine's `Adopt`, which never replaces a state it lent (the
        // engine creates states only for parameters without one), so they
        // stay valid while the engine, the arrays' base, is alive.
        unsafe {
            let m = lend(m.0, lanes, m.1, slf.clone().into_any());
            let v = lend(v.0, lanes, v.1, slf.into_any());
            Ok((m, v))
        }
    }

    /// Records the tensors the Python layer put in `state[param]` (views of
    /// [`arrays`](Engine::arrays), and `step`, a contiguous float32 tensor
    /// of one step count, or one per row of a table, that it created and
    /// checked), and takes the step counts from `step`.
    fn bind(
        &mut self,
        py: Python<'_>,
        id: u32,
        exp_avg: Py<PyAny>,
        exp_avg_sq: Py<PyAny>,
        step: Py<PyAny>,
    ) -> PyResult<()> {
        let kind = self.recs[id as usize].kind;
        let step_data = step.bind(py).getattr(intern!(py, "data"))?;
        let numel: usize = step_data.call_method0(intern!(py, "numel"))?.extract()?;
        if numel != kind.counts() {
            return Err(PyValueError::new_err(format!(
                "the step tensor of {} has {numel} counts, not {}",
                self.label(id),
                kind.counts()
            )));
        }
        let step_ptr: usize = step_data.call_method0(intern!(py, "data_ptr"))?.extract()?;
        // SAFETY: a float32 tensor of `numel` values (the Python layer
        // created it), alive while `step_data` is.
        let values: &[f32] = if numel == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(step_ptr as *const f32, numel) }
        };
        let counts: Vec<u64> = values
            .iter()
            .map(|&x| step_count(x))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "the step counts of {} must be whole numbers >= 0",
                    self.label(id)
                ))
            })?;
        let mut steps = core_counts(&mut self.opt, id)
            .ok_or_else(|| PyValueError::new_err("the parameter has no state yet"))?;
        for (slot, &c) in counts.iter().enumerate() {
            *count_at(&mut steps, slot) = c;
        }
        let r = &mut self.recs[id as usize];
        r.exp_avg = Some(exp_avg);
        r.exp_avg_sq = Some(exp_avg_sq);
        r.step = Some(step);
        r.step_data = Some(step_data.unbind());
        r.step_ptr = step_ptr;
        Ok(())
    }

    /// A parameter's registered size (elements), data pointer and kind (as
    /// [`add_param`](Engine::add_param) takes it).
    fn param_info(&self, id: u32) -> (usize, usize, &'static str) {
        let r = &self.recs[id as usize];
        let kind = match r.kind {
            Kind::F32 => "float32",
            Kind::Complex => "complex64",
            Kind::Bf16 => "bfloat16",
            Kind::F16 => "float16",
            Kind::Table { .. } => "table",
        };
        (r.numel, r.p_ptr, kind)
    }

    /// The step counts of a parameter (one, or one per row of a table;
    /// `None` without state).
    fn step_count(&self, id: u32) -> PyResult<Option<Vec<u64>>> {
        Ok(self
            .opt
            .param_state(ParamId(id))
            .map_err(|e| core_error("", e))?
            .map(|s| match s.steps {
                Steps::Dense(c) => vec![c],
                Steps::Rows(rows) => rows.to_vec(),
            }))
    }

    /// The number of registered parameters.
    fn param_count(&self) -> usize {
        self.recs.len()
    }

    /// One step over every parameter of `param_groups` (torch's list of
    /// group dicts) that has a gradient, with `state` torch's per-parameter
    /// state dict, `clip_lambda` the clip schedule (`None` for no
    /// clipping), GradScaler's `inv_scale` and `found_inf`, and `sparse`
    /// the row-sparse gradients of tables, which the Python layer checked:
    /// `{id: (rows, values, rows_ptr, nnz, values_ptr)}`, `rows` a
    /// contiguous int32 tensor of `nnz` row indices in range, `values` a
    /// contiguous float32 tensor of `nnz × dim` values.
    ///
    /// Returns `None` after stepping, or, having changed nothing: `(True,
    /// [])` when the groups' parameter lists are not the registered ones,
    /// `(False, ids)` for parameters whose tensors, gradient or state
    /// changed in a way the Python layer must look at (first step, state
    /// replaced, `.data` replaced, sparse or odd gradient, step count not a
    /// whole number). Errors (a core refusal, a clip schedule that failed,
    /// memory overlap) also change nothing.
    #[pyo3(signature = (param_groups, state, clip_lambda, inv_scale, found_inf, sparse=None))]
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        py: Python<'_>,
        param_groups: &Bound<'_, PyList>,
        state: &Bound<'_, PyDict>,
        clip_lambda: Option<Bound<'_, PyAny>>,
        inv_scale: f32,
        found_inf: bool,
        sparse: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Attention> {
        if param_groups.len() != self.groups.len() {
            return Ok(Some((true, Vec::new())));
        }
        let mut attention = Vec::new();
        // Gradients (and contiguous copies) stay referenced until the step
        // is over: another thread may drop `p.grad` while the GIL is free.
        let mut keep: Vec<Bound<'_, PyAny>> = Vec::new();
        self.work.clear();
        let (k_params, k_grad, k_ptr, k_numel, k_layout, k_dtype, k_contig) = (
            intern!(py, "params"),
            intern!(py, "grad"),
            intern!(py, "data_ptr"),
            intern!(py, "numel"),
            intern!(py, "layout"),
            intern!(py, "dtype"),
            intern!(py, "is_contiguous"),
        );
        let (k_m, k_v, k_step) = (
            intern!(py, "exp_avg"),
            intern!(py, "exp_avg_sq"),
            intern!(py, "step"),
        );
        for (gi, group) in param_groups.iter().enumerate() {
            let params = group.get_item(k_params)?;
            let Ok(params) = params.cast::<PyList>() else {
                return Ok(Some((true, Vec::new())));
            };
            let ids = &self.groups[gi];
            if params.len() != ids.len() {
                return Ok(Some((true, Vec::new())));
            }
            for (p, &id) in params.iter().zip(ids) {
                let r = &self.recs[id as usize];
                if !r.param.as_ref().is_some_and(|rp| p.is(rp)) {
                    return Ok(Some((true, Vec::new())));
                }
                let g = p.getattr(k_grad)?;
                if g.is_none() {
                    continue;
                }
                // The record holds the storage it registered (`data`): the
                // same pointer is the same memory, of the registered size.
                let p_ptr: usize = p.call_method0(k_ptr)?.extract()?;
                if p_ptr != r.p_ptr {
                    attention.push(id);
                    continue;
                }
                // torch keeps a gradient on its parameter's device (its
                // setter and `set_data` refuse another), not its dtype or
                // size (`grad.data = ...` may change them): those are
                // checked.
                let listed = match (r.kind, sparse) {
                    (Kind::Table { .. }, Some(sparse)) => sparse.get_item(id)?,
                    _ => None,
                };
                let grad = if let Some(listed) = listed {
                    let (rows, values, rows_ptr, nnz, values_ptr): (
                        Bound<'_, PyAny>,
                        Bound<'_, PyAny>,
                        usize,
                        usize,
                        usize,
                    ) = listed.extract()?;
                    keep.push(rows);
                    keep.push(values);
                    WorkGrad::Rows {
                        rows: rows_ptr,
                        nnz,
                        values: values_ptr,
                    }
                } else {
                    if !g.getattr(k_layout)?.is(&self.strided)
                        || !g.getattr(k_dtype)?.is(&r.dtype)
                        || g.call_method0(k_numel)?.extract::<usize>()? != r.numel
                    {
                        attention.push(id);
                        continue;
                    }
                    let g = if g.call_method0(k_contig)?.is_truthy()? {
                        g
                    } else {
                        g.call_method0(intern!(py, "contiguous"))?
                    };
                    let g_ptr: usize = g.call_method0(k_ptr)?.extract()?;
                    keep.push(g);
                    WorkGrad::Dense(g_ptr)
                };
                let ours = |st: &Bound<'_, PyDict>,
                            key: &Bound<'_, pyo3::types::PyString>,
                            mine: &Option<Py<PyAny>>|
                 -> PyResult<bool> {
                    Ok(match (st.get_item(key)?, mine) {
                        (Some(v), Some(m)) => v.is(m),
                        _ => false,
                    })
                };
                let bound = match state.get_item(&p)? {
                    Some(st) => match st.cast::<PyDict>() {
                        Ok(st) => {
                            ours(st, k_m, &r.exp_avg)?
                                && ours(st, k_v, &r.exp_avg_sq)?
                                && ours(st, k_step, &r.step)?
                        }
                        Err(_) => false,
                    },
                    None => false,
                };
                let w = Work {
                    id,
                    kind: r.kind,
                    p: p_ptr,
                    grad,
                    lanes: r.lanes,
                };
                let mut whole = bound;
                if bound {
                    let counts = r.kind.counts();
                    let mut in_range = true;
                    w.for_counts(|slot| {
                        if slot >= counts {
                            in_range = false;
                        } else if whole {
                            // SAFETY: `slot` is in range; `r.step` is the
                            // tensor `state` still holds (checked above),
                            // kept alive by `r.step_data`.
                            whole = step_count(unsafe { read_step(r, slot) }).is_some();
                        }
                    });
                    if !in_range {
                        return Err(PyValueError::new_err(format!(
                            "the sparse gradient of {} lists a row out of range",
                            self.label(id)
                        )));
                    }
                }
                if !whole {
                    attention.push(id);
                    continue;
                }
                self.work.push(w);
            }
        }
        if !attention.is_empty() {
            return Ok(Some((false, attention)));
        }
        self.check_overlap()?;

        // Step counts written to the state's `step` tensors from Python are
        // taken over (restored below if the step is refused).
        let mut taken_over: Vec<(u32, usize, u64)> = Vec::new();
        for w in &self.work {
            let r = &self.recs[w.id as usize];
            let mut steps = core_counts(&mut self.opt, w.id).expect("bound parameters have state");
            w.for_counts(|slot| {
                // SAFETY: as above.
                let wanted = step_count(unsafe { read_step(r, slot) }).expect("checked above");
                let count = count_at(&mut steps, slot);
                // The tensor holds the count rounded to f32 (exact to
                // 2^24): only a different value is a change.
                if wanted as f32 != *count as f32 {
                    taken_over.push((w.id, slot, *count));
                    *count = wanted;
                }
            });
        }
        let restore = |opt: &mut Adopt, taken_over: &[(u32, usize, u64)]| {
            for &(id, slot, count) in taken_over.iter().rev() {
                if let Some(mut steps) = core_counts(opt, id) {
                    *count_at(&mut steps, slot) = count;
                }
            }
        };

        // The clip schedule: called once per group and step count, in
        // Python; a constant threshold for each group whose parameters (and
        // touched rows) are all at one step count (the usual case), a table
        // otherwise.
        let mut table: Vec<(u64, f64)> = Vec::new();
        let mut counts_of: Vec<Vec<u64>> = vec![Vec::new(); self.groups.len()];
        for w in &self.work {
            let r = &self.recs[w.id as usize];
            let counts = &mut counts_of[r.group];
            let mut steps = core_counts(&mut self.opt, w.id).expect("bound parameters have state");
            w.for_counts(|slot| {
                let count = *count_at(&mut steps, slot);
                if count > 0 && counts.last() != Some(&count) {
                    counts.push(count);
                }
            });
        }
        for counts in &mut counts_of {
            counts.sort_unstable();
            counts.dedup();
        }
        let result = (|| -> PyResult<()> {
            for (gi, counts) in counts_of.iter().enumerate() {
                if counts.is_empty() {
                    continue;
                }
                let g = GroupId(gi as u32);
                let offset = self
                    .opt
                    .hyper(g)
                    .map_err(|e| core_error("", e))?
                    .clip_offset;
                let clip = match &clip_lambda {
                    None => Clip::None,
                    Some(f) if counts.len() == 1 => {
                        Clip::Constant(evaluate_clip(f, counts[0].saturating_add(offset))?)
                    }
                    Some(f) => {
                        for &count in counts {
                            let at = count.saturating_add(offset);
                            if !table.iter().any(|(key, _)| *key == at) {
                                table.push((at, evaluate_clip(f, at)?));
                            }
                        }
                        Clip::Custom(table_clip)
                    }
                };
                self.opt.hyper_mut(g).map_err(|e| core_error("", e))?.clip = clip;
            }
            Ok(())
        })();
        if let Err(e) = result {
            restore(&mut self.opt, &taken_over);
            return Err(e);
        }
        let _table_user = if table.is_empty() {
            None
        } else {
            let user = TableUser::acquire(py);
            *lock(&CLIP_TABLE) = table;
            Some(user)
        };
        // Each group's hyperparameters at each of its step counts, checked
        // here so that a refusal names the group.
        for (gi, counts) in counts_of.iter().enumerate() {
            let g = GroupId(gi as u32);
            let (Ok(hyper), Ok(initial_lr)) = (self.opt.hyper(g), self.opt.initial_lr(g)) else {
                continue;
            };
            let hyper = hyper.with_initial_lr(initial_lr);
            for &count in counts.iter().chain(std::iter::once(&0)) {
                if let Err(e) = hyper.constants(count) {
                    restore(&mut self.opt, &taken_over);
                    return Err(core_error(&format!("param_groups[{gi}]"), e));
                }
            }
        }

        // All f32 lanes with dense gradients (the usual case): the core's
        // `Item`s, as before half precision and tables; else `Entry`s.
        let plain = self.work.iter().all(|w| {
            matches!(w.kind, Kind::F32 | Kind::Complex) && matches!(w.grad, WorkGrad::Dense(_))
        });
        let mut items: Vec<Item<'_>> = if plain {
            self.work.iter().map(item).collect()
        } else {
            Vec::new()
        };
        let mut entries: Vec<Entry<'_>> = if plain {
            Vec::new()
        } else {
            self.work.iter().map(entry).collect()
        };
        let scaling = Scaling {
            inv_scale,
            found_inf,
        };
        let (opt, recs, work) = (&mut self.opt, &self.recs, &self.work);
        let stepped = py.detach(|| {
            if plain {
                opt.step_scaled(&mut items, scaling)?;
            } else {
                opt.step_scaled(&mut entries, scaling)?;
            }
            if !found_inf {
                for w in work {
                    let r = &recs[w.id as usize];
                    let mut steps = core_counts(opt, w.id).expect("stepped parameters have state");
                    w.for_counts(|slot| {
                        let count = *count_at(&mut steps, slot);
                        // SAFETY: as above; a plain store to the step
                        // tensor, `slot` in range.
                        unsafe { *(r.step_ptr as *mut f32).add(slot) = count as f32 };
                    });
                }
            }
            Ok::<(), Error>(())
        });
        drop(items);
        drop(entries);
        drop(keep);
        if let Err(e) = stepped {
            restore(&mut self.opt, &taken_over);
            return Err(core_error("", e));
        }
        Ok(None)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.strided)?;
        for r in &self.recs {
            visit.call(&r.dtype)?;
            visit.call(&r.param)?;
            visit.call(&r.data)?;
            visit.call(&r.exp_avg)?;
            visit.call(&r.exp_avg_sq)?;
            visit.call(&r.step)?;
            visit.call(&r.step_data)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        // The records' tensors are what form cycles (state tensors are
        // views whose base is this engine). Without them no step can run:
        // the next one reports the layout as changed.
        for r in &mut self.recs {
            r.param = None;
            r.data = None;
            r.exp_avg = None;
            r.exp_avg_sq = None;
            r.step = None;
            r.step_data = None;
            r.step_ptr = 0;
        }
    }
}

/// The core's step item of one parameter of the step being taken whose
/// lanes are f32 and whose gradient is dense.
fn item<'a>(w: &Work) -> Item<'a> {
    let (n, g) = match w.grad {
        WorkGrad::Dense(g) => (w.lanes, g),
        WorkGrad::Rows { .. } => (0, 0),
    };
    if n == 0 {
        return Item {
            id: ParamId(w.id),
            params: &mut [],
            grads: Some(&[]),
        };
    }
    // SAFETY: as for [`entry`]: a contiguous f32 parameter of `lanes`
    // lanes at `p` and a checked dense gradient of as many at `g`, which
    // overlap no other parameter and stay alive until the step is over.
    unsafe {
        Item {
            id: ParamId(w.id),
            params: std::slice::from_raw_parts_mut(w.p as *mut f32, n),
            grads: Some(std::slice::from_raw_parts(g as *const f32, n)),
        }
    }
}

/// The core's step entry of one parameter of the step being taken.
fn entry<'a>(w: &Work) -> Entry<'a> {
    let n = w.lanes;
    // SAFETY: the Python layer checked that each parameter is a contiguous
    // CPU tensor of `lanes` lanes of its kind at `p` (re-checked by the
    // step: the same pointer, into the storage the record holds) and no two
    // parameters overlap; each dense gradient was checked by the step
    // (dtype, layout, size, contiguity), each listed one by the Python
    // layer (int32 rows in range, float32 values, contiguous), and none
    // overlaps a parameter (check_overlap). The step's `keep` and the
    // records hold the tensors until the step is over. Empty buffers are
    // not read from their (possibly null) pointers.
    unsafe {
        let params = match w.kind {
            Kind::Bf16 if n == 0 => LanesMut::Bf16(&mut []),
            Kind::F16 if n == 0 => LanesMut::F16(&mut []),
            _ if n == 0 => LanesMut::F32(&mut []),
            Kind::Bf16 => LanesMut::Bf16(std::slice::from_raw_parts_mut(w.p as *mut bf16, n)),
            Kind::F16 => LanesMut::F16(std::slice::from_raw_parts_mut(w.p as *mut f16, n)),
            _ => LanesMut::F32(std::slice::from_raw_parts_mut(w.p as *mut f32, n)),
        };
        let grads = match (w.grad, w.kind) {
            (WorkGrad::Rows { nnz: 0, .. }, _) => Grads::Rows {
                rows: &[],
                values: &[],
            },
            (WorkGrad::Rows { rows, nnz, values }, Kind::Table { dim, .. }) => Grads::Rows {
                rows: std::slice::from_raw_parts(rows as *const u32, nnz),
                values: std::slice::from_raw_parts(values as *const f32, nnz * dim),
            },
            (_, Kind::Bf16) if n == 0 => Grads::Dense(Lanes::Bf16(&[])),
            (_, Kind::F16) if n == 0 => Grads::Dense(Lanes::F16(&[])),
            _ if n == 0 => Grads::Dense(Lanes::F32(&[])),
            (WorkGrad::Dense(g), Kind::Bf16) => {
                Grads::Dense(Lanes::Bf16(std::slice::from_raw_parts(g as *const bf16, n)))
            }
            (WorkGrad::Dense(g), Kind::F16) => {
                Grads::Dense(Lanes::F16(std::slice::from_raw_parts(g as *const f16, n)))
            }
            (WorkGrad::Dense(g), _) => {
                Grads::Dense(Lanes::F32(std::slice::from_raw_parts(g as *const f32, n)))
            }
            // Listed rows are made for tables only; the core would refuse.
            (WorkGrad::Rows { .. }, _) => Grads::Rows {
                rows: &[],
                values: &[],
            },
        };
        Entry {
            id: ParamId(w.id),
            params,
            grads: Some(grads),
        }
    }
}

/// Checks that `obj` is a float32 NumPy array, C-contiguous, aligned and,
/// when `writable`, writeable; `name` is the argument's name in messages.
fn f32_array<'py>(
    name: &str,
    obj: &Bound<'py, PyAny>,
    writable: bool,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let py = obj.py();
    let array = obj.cast::<PyUntypedArray>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a numpy.ndarray of float32, not {}",
            obj.get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string())
        ))
    })?;
    let dtype = array.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        return Err(PyTypeError::new_err(format!(
            "{name} has dtype {}: adopt_step steps float32 arrays (native byte order)",
            dtype.str().map_or_else(|_| "?".into(), |s| s.to_string())
        )));
    }
    if !array.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} is not C-contiguous: the step works in place on contiguous memory (numpy.ascontiguousarray makes a copy, which would not be updated)"
        )));
    }
    if !array.is_aligned() {
        return Err(PyValueError::new_err(format!(
            "{name} is not aligned to 4 bytes"
        )));
    }
    // SAFETY: reads the flags of a live array object.
    let flags = unsafe { (*array.as_array_ptr()).fields.flags };
    if writable && flags & numpy::npyffi::NPY_ARRAY_WRITEABLE == 0 {
        return Err(PyValueError::new_err(format!(
            "{name} is read-only: the step writes it in place"
        )));
    }
    Ok(array.cast::<PyArrayDyn<f32>>()?.clone())
}

/// One ADOPT step over float32 NumPy arrays in place (`adopt_rs.adopt_step`
/// is the documented wrapper): `step` is the number of steps already taken;
/// returns the new count. `clip` is the threshold of this step (`None` for
/// no clipping).
#[pyfunction]
#[pyo3(signature = (params, grads, exp_avg, exp_avg_sq, step, hyper, clip, inv_scale, found_inf))]
#[allow(clippy::too_many_arguments)]
fn numpy_step(
    py: Python<'_>,
    params: &Bound<'_, PyAny>,
    grads: &Bound<'_, PyAny>,
    exp_avg: &Bound<'_, PyAny>,
    exp_avg_sq: &Bound<'_, PyAny>,
    step: u64,
    hyper: HyperArgs,
    clip: Option<f64>,
    inv_scale: f32,
    found_inf: bool,
) -> PyResult<u64> {
    let arrays = [
        f32_array("params", params, true)?,
        f32_array("grads", grads, false)?,
        f32_array("exp_avg", exp_avg, true)?,
        f32_array("exp_avg_sq", exp_avg_sq, true)?,
    ];
    let mut hyper = hyper.to_hyper()?;
    hyper.clip = match clip {
        None => Clip::None,
        Some(c) => Clip::Constant(check_threshold(step.saturating_add(hyper.clip_offset), c)?),
    };
    let overlap = |_| {
        PyValueError::new_err(
            "params, grads, exp_avg and exp_avg_sq must be four separate arrays: no two may share memory",
        )
    };
    let mut p = arrays[0].try_readwrite().map_err(overlap)?;
    let g = arrays[1].try_readonly().map_err(overlap)?;
    let mut m = arrays[2].try_readwrite().map_err(overlap)?;
    let mut v = arrays[3].try_readwrite().map_err(overlap)?;
    let (p, g, m, v) = (
        p.as_slice_mut()?,
        g.as_slice()?,
        m.as_slice_mut()?,
        v.as_slice_mut()?,
    );
    let mut count = step;
    let options = StepOptions {
        scaling: Scaling {
            inv_scale,
            found_inf,
        },
        ..StepOptions::default()
    };
    py.detach(|| {
        adopt_step_ext(
            p,
            g,
            &mut StateView::new(m, v, &mut count),
            &hyper,
            &options,
        )
    })
    .map_err(|e| core_error("", e))?;
    Ok(count)
}

/// The SIMD kernel the core steps with on this CPU (`avx512f`, `avx2+fma`,
/// `neon` or `portable`), or the error that `ADOPT_KERNEL` names none.
#[pyfunction]
fn kernel() -> PyResult<String> {
    Kernel::try_active()
        .map(|k| k.name().to_string())
        .map_err(|e| core_error("", e))
}

/// The data pointer and f32 lanes of a contiguous float32 CPU tensor
/// (benchmarks only).
fn f32_tensor(t: &Bound<'_, PyAny>, what: &str) -> PyResult<(usize, usize)> {
    let py = t.py();
    let ok = t
        .getattr(intern!(py, "dtype"))?
        .str()?
        .extract::<String>()?
        == "torch.float32"
        && t.getattr(intern!(py, "is_cpu"))?.is_truthy()?
        && t.call_method0(intern!(py, "is_contiguous"))?.is_truthy()?;
    if !ok {
        return Err(PyTypeError::new_err(format!(
            "{what} must be contiguous float32 CPU tensors"
        )));
    }
    Ok((
        t.call_method0(intern!(py, "data_ptr"))?.extract()?,
        t.call_method0(intern!(py, "numel"))?.extract()?,
    ))
}

/// For benchmarks: the core's `Adopt::step` (one group, torch-adopt's
/// defaults at `lr`) over given parameter and gradient tensors, in place,
/// with the GIL released and no Python in the loop. The optimizer and its
/// state are this object's own and persist from call to call, as an
/// optimizer's do.
#[pyclass(module = "adopt_rs._core")]
struct BenchAdopt {
    opt: Adopt,
    ids: Vec<ParamId>,
    /// (parameter, gradient, lanes) per tensor.
    buffers: Vec<(usize, usize, usize)>,
    /// The tensors, kept alive while their pointers are used.
    #[allow(dead_code)]
    tensors: Vec<Py<PyAny>>,
}

#[pymethods]
impl BenchAdopt {
    #[new]
    fn new(params: Vec<Bound<'_, PyAny>>, grads: Vec<Bound<'_, PyAny>>, lr: f64) -> PyResult<Self> {
        if params.len() != grads.len() {
            return Err(PyValueError::new_err("one gradient per parameter"));
        }
        let mut buffers = Vec::with_capacity(params.len());
        for (p, g) in params.iter().zip(&grads) {
            let (p, lanes) = f32_tensor(p, "params")?;
            let (g, g_lanes) = f32_tensor(g, "grads")?;
            if lanes != g_lanes {
                return Err(PyValueError::new_err(
                    "each gradient has its parameter's size",
                ));
            }
            buffers.push((p, g, lanes));
        }
        let mut spans: Vec<(usize, usize)> = buffers
            .iter()
            .flat_map(|&(p, g, lanes)| [(p, p + 4 * lanes), (g, g + 4 * lanes)])
            .filter(|s| s.1 > s.0)
            .collect();
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(PyValueError::new_err("the tensors must not share memory"));
        }
        let mut opt = Adopt::new();
        let group = opt
            .add_group(Hyper {
                lr,
                ..Hyper::default()
            })
            .map_err(|e| core_error("", e))?;
        let mut ids = Vec::with_capacity(buffers.len());
        for &(_, _, lanes) in &buffers {
            ids.push(
                opt.add_param(group, lanes, None)
                    .map_err(|e| core_error("", e))?,
            );
        }
        let tensors = params.into_iter().chain(grads).map(Bound::unbind).collect();
        Ok(BenchAdopt {
            opt,
            ids,
            buffers,
            tensors,
        })
    }

    /// `steps` calls of `Adopt::step`; returns each call's seconds (the
    /// item list is built before the clock starts).
    fn step(&mut self, py: Python<'_>, steps: usize) -> PyResult<Vec<f64>> {
        let (opt, ids, buffers) = (&mut self.opt, &self.ids, &self.buffers);
        py.detach(|| {
            let mut times = Vec::with_capacity(steps);
            for _ in 0..steps {
                let mut items: Vec<Item<'_>> = buffers
                    .iter()
                    .zip(ids)
                    .map(|(&(p, g, lanes), &id)| Item {
                        id,
                        params: if lanes == 0 {
                            &mut []
                        } else {
                            // SAFETY: checked when created: contiguous
                            // float32 CPU tensors of `lanes` elements that
                            // share no memory, kept alive by `tensors`.
                            unsafe { std::slice::from_raw_parts_mut(p as *mut f32, lanes) }
                        },
                        grads: Some(if lanes == 0 {
                            &[]
                        } else {
                            // SAFETY: as above.
                            unsafe { std::slice::from_raw_parts(g as *const f32, lanes) }
                        }),
                    })
                    .collect();
                let start = std::time::Instant::now();
                opt.step(&mut items)?;
                times.push(start.elapsed().as_secs_f64());
            }
            Ok::<_, Error>(times)
        })
        .map_err(|e| core_error("", e))
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("AdoptError", m.py().get_type::<AdoptError>())?;
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(numpy_step, m)?)?;
    m.add_function(wrap_pyfunction!(kernel, m)?)?;
    m.add_class::<BenchAdopt>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
