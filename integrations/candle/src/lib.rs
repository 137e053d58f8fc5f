//! The ADOPT optimizer for [candle](https://github.com/huggingface/candle):
//! [`Adopt`] implements [`candle_nn::Optimizer`] over the
//! [`adopt`] core and steps each [`Var`]'s storage in place.
//!
//! ```
//! use adopt_candle::{Adopt, Hyper};
//! use candle_core::{Device, Tensor, Var};
//! use candle_nn::Optimizer;
//!
//! let w = Var::new(&[1.0_f32, -2.0, 3.0], &Device::Cpu)?;
//! let mut opt = Adopt::new(vec![w.clone()], Hyper { lr: 0.1, ..Hyper::default() })?;
//! for _ in 0..3 {
//!     let loss = w.as_tensor().sqr()?.sum_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! let w = w.as_tensor().to_vec1::<f32>()?;
//! assert!(w[0] < 1.0 && w[1] > -2.0 && w[2] < 3.0);
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! # How a step runs
//!
//! candle hands a custom in-place op the `&mut` storage of one tensor at a
//! time ([`Tensor::inplace_op2`]), inside a closure. [`Adopt::step`] nests
//! those ops, one inside the other, so that the innermost one holds every
//! stepped Var's storage (and its gradient's) at once and makes a single
//! [`adopt::Adopt::step`] call over all of them: one parallel pass, with
//! everything validated before anything is written. The nesting is one
//! stack frame chain per Var; above [`NESTED_ON_CALLER`] Vars it runs on a
//! scoped thread with a stack sized for it.
//!
//! # What is supported
//!
//! CPU Vars of dtype f32, bf16 or f16, contiguous (as Vars always are).
//! bf16 and f16 Vars step in their own precision through the core's
//! half-precision [`Layout`] (f32 arithmetic and f32 moments, rounded to
//! nearest into the Var): bit-identical to
//! [`adopt::precision::adopt_step_half`]. A Var on another device, of
//! another dtype, or not contiguous is refused with a typed [`Error`] when
//! it is added: the optimizer never copies a Var's data to step it.
//! Gradients must be on the CPU with the Var's dtype and shape; a strided
//! gradient is made contiguous first (a copy of the gradient only).
//!
//! # Errors
//!
//! The [`Optimizer`] trait returns [`candle_core::Error`], which carries
//! only a message; the inherent methods ([`Adopt::try_new`],
//! [`Adopt::try_step`], ...) return this crate's [`Error`].

use std::cell::RefCell;
use std::fmt;

use adopt::{Dtype, Entry, GroupId, Lanes, LanesMut, Layout, ParamId};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Shape, Storage, Tensor, Var};
use candle_nn::{Optimizer, VarMap};

pub use adopt::Hyper;

/// Above this many Vars with a gradient, a step's nested in-place ops run
/// on a scoped thread with a stack sized for them instead of the caller's.
pub const NESTED_ON_CALLER: usize = 128;

/// Stack reserved per nested Var on the scoped thread.
const STACK_PER_VAR: usize = 16 * 1024;

/// What went wrong, with the Var it concerns (its name, or its position
/// and shape when it has none).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The core refused (hyperparameters, checkpoints, unknown groups).
    Core(adopt::Error),
    /// candle failed.
    Candle(candle_core::Error),
    /// The Var is not on the CPU.
    UnsupportedDevice {
        /// The Var.
        var: String,
        /// Its device.
        device: String,
    },
    /// The Var's dtype is not f32, bf16 or f16.
    UnsupportedDtype {
        /// The Var.
        var: String,
        /// Its dtype.
        dtype: DType,
    },
    /// The Var's storage is strided or offset.
    NotContiguous {
        /// The Var.
        var: String,
    },
    /// The Var was added twice (or shares its storage with another).
    DuplicateVar {
        /// The Var.
        var: String,
    },
    /// The gradient is not on the CPU.
    GradDevice {
        /// The Var.
        var: String,
        /// The gradient's device.
        device: String,
    },
    /// The gradient's dtype is not the Var's.
    GradDtype {
        /// The Var.
        var: String,
        /// The Var's dtype.
        expected: DType,
        /// The gradient's.
        found: DType,
    },
    /// The gradient's shape is not the Var's.
    GradShape {
        /// The Var.
        var: String,
        /// The Var's shape.
        expected: Shape,
        /// The gradient's.
        found: Shape,
    },
    /// The gradient shares its storage with a stepped Var.
    GradAliasesVar {
        /// The Var.
        var: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Core(e) => write!(f, "adopt: {e}"),
            Error::Candle(e) => write!(f, "candle: {e}"),
            Error::UnsupportedDevice { var, device } => write!(
                f,
                "{var} is on {device}: adopt-candle steps CPU Vars only (it never copies a Var)"
            ),
            Error::UnsupportedDtype { var, dtype } => write!(
                f,
                "{var} has dtype {dtype:?}: adopt-candle steps f32, bf16 and f16 Vars"
            ),
            Error::NotContiguous { var } => write!(f, "{var} is not contiguous"),
            Error::DuplicateVar { var } => {
                write!(f, "{var} is already stepped by this optimizer")
            }
            Error::GradDevice { var, device } => {
                write!(f, "the gradient of {var} is on {device}, not the CPU")
            }
            Error::GradDtype {
                var,
                expected,
                found,
            } => write!(
                f,
                "the gradient of {var} has dtype {found:?}, the Var {expected:?}"
            ),
            Error::GradShape {
                var,
                expected,
                found,
            } => write!(
                f,
                "the gradient of {var} has shape {found:?}, the Var {expected:?}"
            ),
            Error::GradAliasesVar { var } => {
                write!(f, "the gradient of {var} shares storage with a stepped Var")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            Error::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<adopt::Error> for Error {
    fn from(e: adopt::Error) -> Self {
        Error::Core(e)
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            e => candle_core::Error::wrap(e),
        }
    }
}

/// One Var stepped by the optimizer.
#[derive(Debug)]
struct Slot {
    var: Var,
    id: ParamId,
    name: Option<String>,
}

/// The ADOPT optimizer over candle [`Var`]s, in parameter groups with their
/// own [`Hyper`]; [`Optimizer::new`] makes one group.
///
/// ```
/// use adopt::WeightDecay;
/// use adopt_candle::{Adopt, Hyper};
/// use candle_core::{Device, Var};
/// use candle_nn::Optimizer;
///
/// let w = Var::ones((2, 2), candle_core::DType::F32, &Device::Cpu)?;
/// let b = Var::zeros(2, candle_core::DType::F32, &Device::Cpu)?;
/// // The bias in the first group; the weights decay, in a second group.
/// let mut opt = Adopt::try_new(vec![b.clone()], Hyper::default())?;
/// let decayed = opt.add_group(Hyper {
///     weight_decay: WeightDecay::decoupled(0.01),
///     ..Hyper::default()
/// })?;
/// opt.add_var(decayed, &w, Some("layer.weight"))?;
/// let loss = (w.as_tensor().sum_all()? + b.as_tensor().sum_all()?)?;
/// opt.backward_step(&loss)?;
/// let saved = opt.save()?; // the optimizer state, as the core's checkpoint
/// opt.load(&saved)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Adopt {
    core: adopt::Adopt,
    groups: Vec<GroupId>,
    slots: Vec<Slot>,
}

impl Adopt {
    /// An optimizer with one group of `hyper` stepping `vars` (unnamed).
    pub fn try_new(vars: Vec<Var>, hyper: Hyper) -> Result<Self, Error> {
        let mut opt = Self::with_group(hyper)?;
        for var in &vars {
            opt.add_var(opt.groups[0], var, None)?;
        }
        Ok(opt)
    }

    /// An optimizer with one group of `hyper` stepping every Var of
    /// `varmap`, named as there, in name order (so checkpoints can be
    /// loaded by name).
    pub fn from_varmap(varmap: &VarMap, hyper: Hyper) -> Result<Self, Error> {
        let mut opt = Self::with_group(hyper)?;
        let group = opt.groups[0];
        opt.add_varmap(group, varmap)?;
        Ok(opt)
    }

    fn with_group(hyper: Hyper) -> Result<Self, Error> {
        let mut core = adopt::Adopt::new();
        let group = core.add_group(hyper)?;
        Ok(Self {
            core,
            groups: vec![group],
            slots: Vec::new(),
        })
    }

    /// Adds a parameter group with its own hyperparameters (validated).
    pub fn add_group(&mut self, hyper: Hyper) -> Result<GroupId, Error> {
        let group = self.core.add_group(hyper)?;
        self.groups.push(group);
        Ok(group)
    }

    /// The `index`-th group (0: the one [`Optimizer::new`] made).
    pub fn group(&self, index: usize) -> Option<GroupId> {
        self.groups.get(index).copied()
    }

    /// Adds a Var to `group`, with an optional name (for checkpoints and
    /// messages). Refuses (changing nothing) a Var that is not on the CPU,
    /// not f32, bf16 or f16, not contiguous, or already added.
    pub fn add_var(
        &mut self,
        group: GroupId,
        var: &Var,
        name: Option<&str>,
    ) -> Result<ParamId, Error> {
        let label = || describe(name, self.slots.len(), var.as_tensor());
        if !var.device().is_cpu() {
            return Err(Error::UnsupportedDevice {
                var: label(),
                device: format!("{:?}", var.device().location()),
            });
        }
        let dtype = match var.dtype() {
            DType::F32 => Dtype::F32,
            DType::BF16 => Dtype::Bf16,
            DType::F16 => Dtype::F16,
            dtype => {
                return Err(Error::UnsupportedDtype {
                    var: label(),
                    dtype,
                });
            }
        };
        if var.as_tensor().layout().contiguous_offsets().is_none() {
            return Err(Error::NotContiguous { var: label() });
        }
        let key = storage_key(var.as_tensor());
        if self.slots.iter().any(|s| {
            s.var.as_tensor().id() == var.as_tensor().id()
                || (key.is_some() && storage_key(s.var.as_tensor()) == key)
        }) {
            return Err(Error::DuplicateVar { var: label() });
        }
        let layout = Layout::dense(var.elem_count()).params(dtype);
        let id = self.core.add_param(group, layout, name)?;
        self.slots.push(Slot {
            var: var.clone(),
            id,
            name: name.map(String::from),
        });
        Ok(id)
    }

    /// Adds every Var of `varmap` to `group`, named as there, in name
    /// order; on error none is added.
    pub fn add_varmap(&mut self, group: GroupId, varmap: &VarMap) -> Result<(), Error> {
        let mut named: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| Error::Candle(candle_core::Error::msg("the VarMap's lock is poisoned")))?
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let (core, slots) = (self.core.clone(), self.slots.len());
        for (name, var) in &named {
            if let Err(e) = self.add_var(group, var, Some(name)) {
                self.core = core;
                self.slots.truncate(slots);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The Vars stepped, in the order they were added.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|s| &s.var)
    }

    /// The core optimizer (hyperparameters, state, step counts).
    pub fn core(&self) -> &adopt::Adopt {
        &self.core
    }

    /// A group's hyperparameters, to change (validated at the next step).
    pub fn hyper_mut(&mut self, group: GroupId) -> Result<&mut Hyper, Error> {
        Ok(self.core.hyper_mut(group)?)
    }

    /// Replaces a group's hyperparameters (validated).
    pub fn set_hyper(&mut self, group: GroupId, hyper: Hyper) -> Result<(), Error> {
        Ok(self.core.set_hyper(group, hyper)?)
    }

    /// The optimizer state (moments and step counts of every Var) as the
    /// core's checkpoint ([`adopt::checkpoint`]).
    pub fn save(&self) -> Result<Vec<u8>, Error> {
        Ok(self.core.save()?)
    }

    /// Loads a checkpoint of [`save`](Adopt::save) made with the same
    /// groups and Vars in the same order; on error nothing changes.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.core.load(bytes)?)
    }

    /// [`load`](Adopt::load) with Vars matched by name.
    pub fn load_by_name(&mut self, bytes: &[u8]) -> Result<(), Error> {
        Ok(self.core.load_by_name(bytes)?)
    }

    /// One step of every Var with a gradient in `grads`, in place. Every
    /// gradient is checked, and the core validates everything, before any
    /// Var changes: on error nothing has.
    pub fn try_step(&mut self, grads: &GradStore) -> Result<(), Error> {
        let mut jobs: Vec<Job<'_>> = Vec::with_capacity(self.slots.len());
        for (k, slot) in self.slots.iter().enumerate() {
            let var = slot.var.as_tensor();
            let Some(grad) = grads.get(var) else {
                continue;
            };
            let label = || describe(slot.name.as_deref(), k, var);
            if !grad.device().is_cpu() {
                return Err(Error::GradDevice {
                    var: label(),
                    device: format!("{:?}", grad.device().location()),
                });
            }
            if grad.dtype() != var.dtype() {
                return Err(Error::GradDtype {
                    var: label(),
                    expected: var.dtype(),
                    found: grad.dtype(),
                });
            }
            if grad.shape() != var.shape() {
                return Err(Error::GradShape {
                    var: label(),
                    expected: var.shape().clone(),
                    found: grad.shape().clone(),
                });
            }
            let grad = if grad.layout().contiguous_offsets().is_some() {
                grad.clone()
            } else {
                grad.contiguous()?
            };
            jobs.push(Job {
                var,
                grad,
                id: slot.id,
                slot: k,
            });
        }
        // A gradient sharing a Var's storage would deadlock on its lock
        // (and alias the step's output): refuse it.
        let mut keys: Vec<usize> = jobs.iter().filter_map(|j| storage_key(j.var)).collect();
        keys.sort_unstable();
        for job in &jobs {
            if storage_key(&job.grad).is_some_and(|g| keys.binary_search(&g).is_ok()) {
                let slot = &self.slots[job.slot];
                return Err(Error::GradAliasesVar {
                    var: describe(slot.name.as_deref(), job.slot, job.var),
                });
            }
        }
        let core = &mut self.core;
        let mut finish = |entries: &mut [Entry<'_>]| core.step(entries).map_err(Error::Core);
        if jobs.len() <= NESTED_ON_CALLER {
            chain(&jobs, Vec::with_capacity(jobs.len()), &mut finish)
        } else {
            let stack = (1 << 20) + jobs.len() * STACK_PER_VAR;
            std::thread::scope(|s| {
                std::thread::Builder::new()
                    .name("adopt-candle-step".into())
                    .stack_size(stack)
                    .spawn_scoped(s, || {
                        chain(&jobs, Vec::with_capacity(jobs.len()), &mut finish)
                    })
                    .map_err(|e| Error::Candle(candle_core::Error::wrap(e)))?
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        }
    }
}

/// A Var's name, or its position and shape.
fn describe(name: Option<&str>, index: usize, var: &Tensor) -> String {
    match name {
        Some(name) => format!("Var {name:?}"),
        None => format!("Var #{index} {:?}", var.shape()),
    }
}

/// The address of a CPU tensor's f32/bf16/f16 buffer (its storage's
/// identity), or `None` for other storages and empty buffers.
fn storage_key(t: &Tensor) -> Option<usize> {
    let (storage, _) = t.storage_and_layout();
    let (addr, len) = match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => (v.as_ptr() as usize, v.len()),
        Storage::Cpu(CpuStorage::BF16(v)) => (v.as_ptr() as usize, v.len()),
        Storage::Cpu(CpuStorage::F16(v)) => (v.as_ptr() as usize, v.len()),
        _ => return None,
    };
    (len > 0).then_some(addr)
}

/// One Var to step with its gradient.
struct Job<'a> {
    var: &'a Tensor,
    grad: Tensor,
    id: ParamId,
    slot: usize,
}

type Finish<'f> = dyn FnMut(&mut [Entry<'_>]) -> Result<(), Error> + 'f;

/// Locks the first job's Var (for writing) and gradient (for reading)
/// through candle's in-place op, adds them to `entries` and recurses into
/// the rest; with no job left, steps every entry at once.
fn chain<'a>(
    jobs: &[Job<'_>],
    mut entries: Vec<Entry<'a>>,
    finish: &mut Finish<'_>,
) -> Result<(), Error> {
    let Some((job, rest)) = jobs.split_first() else {
        return finish(&mut entries);
    };
    let op = Lock {
        id: job.id,
        rest,
        entries: RefCell::new(Some(entries)),
        finish: RefCell::new(finish),
        error: RefCell::new(None),
    };
    let result = job.var.inplace_op2(&job.grad, &op);
    match op.error.into_inner() {
        Some(e) => Err(e),
        None => result.map_err(Error::Candle),
    }
}

/// The in-place op of one level of [`chain`].
struct Lock<'j, 'a, 'f, 'g> {
    id: ParamId,
    rest: &'j [Job<'j>],
    entries: RefCell<Option<Vec<Entry<'a>>>>,
    finish: RefCell<&'f mut Finish<'g>>,
    error: RefCell<Option<Error>>,
}

impl Lock<'_, '_, '_, '_> {
    fn run(
        &self,
        dst: &mut CpuStorage,
        dst_l: &candle_core::Layout,
        src: &CpuStorage,
        src_l: &candle_core::Layout,
    ) -> Result<(), Error> {
        let internal = |what: &str| Error::Candle(candle_core::Error::msg(what.to_string()));
        let (d0, d1) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| internal("adopt-candle: a Var became strided"))?;
        let (s0, s1) = src_l
            .contiguous_offsets()
            .ok_or_else(|| internal("adopt-candle: a gradient became strided"))?;
        let params: LanesMut<'_> = match dst {
            CpuStorage::F32(v) => v.get_mut(d0..d1).map(LanesMut::from),
            CpuStorage::BF16(v) => v.get_mut(d0..d1).map(LanesMut::from),
            CpuStorage::F16(v) => v.get_mut(d0..d1).map(LanesMut::from),
            _ => None,
        }
        .ok_or_else(|| internal("adopt-candle: a Var's storage changed dtype or size"))?;
        let grads: Lanes<'_> = match src {
            CpuStorage::F32(v) => v.get(s0..s1).map(Lanes::from),
            CpuStorage::BF16(v) => v.get(s0..s1).map(Lanes::from),
            CpuStorage::F16(v) => v.get(s0..s1).map(Lanes::from),
            _ => None,
        }
        .ok_or_else(|| internal("adopt-candle: a gradient's storage is not f32, bf16 or f16"))?;
        let mut entries = self
            .entries
            .borrow_mut()
            .take()
            .ok_or_else(|| internal("adopt-candle: an in-place op ran twice"))?;
        entries.push(Entry {
            id: self.id,
            params,
            grads: Some(grads.into()),
        });
        let mut finish = self.finish.borrow_mut();
        chain(self.rest, entries, &mut **finish)
    }
}

impl InplaceOp2 for Lock<'_, '_, '_, '_> {
    fn name(&self) -> &'static str {
        "adopt-step"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &candle_core::Layout,
        src: &CpuStorage,
        src_l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        self.run(dst, dst_l, src, src_l).map_err(|e| {
            let message = e.to_string();
            *self.error.borrow_mut() = Some(e);
            candle_core::Error::msg(message)
        })
    }
}

impl Optimizer for Adopt {
    type Config = Hyper;

    fn new(vars: Vec<Var>, hyper: Hyper) -> candle_core::Result<Self> {
        Ok(Self::try_new(vars, hyper)?)
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        Ok(self.try_step(grads)?)
    }

    /// The first group's learning rate.
    fn learning_rate(&self) -> f64 {
        self.groups
            .first()
            .and_then(|&g| self.core.hyper(g).ok())
            .map_or(0.0, |h| h.lr)
    }

    /// Sets every group's learning rate (validated at the next step).
    fn set_learning_rate(&mut self, lr: f64) {
        for &g in &self.groups {
            if let Ok(h) = self.core.hyper_mut(g) {
                h.lr = lr;
            }
        }
    }
}
