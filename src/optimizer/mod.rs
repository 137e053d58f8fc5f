//! [`Adopt`]: the optimizer object for many parameters of any layout, with
//! parameter groups, lazily created state and one validated, parallel step
//! over all of them (needs `alloc`).
//!
//! - `mod.rs`: the registry (groups, parameters, state access);
//! - [`layout`](Layout): how each parameter is stored;
//! - `item.rs`: what a step is handed ([`Item`], [`Entry`]);
//! - `stored.rs`: the state of each layout;
//! - `validate.rs`: checking a whole step before its first write;
//! - `schedule.rs`: running the validated step across the pool;
//! - [`checkpoint`]: saving and loading all of it.

pub mod checkpoint;
mod item;
mod layout;
mod schedule;
mod stored;
mod validate;

pub use item::{Entry, Grads, Item, StepItem};
pub use layout::{Layout, Shape};
pub use stored::{ParamState, ParamStateMut, Steps, StepsMut};

use crate::error::{Buffer, Error};
use crate::hyper::{Hyper, Scaling};
pub use crate::ids::{GroupId, ParamId};
use crate::kernel::Kernel;
use crate::state::State;
use alloc::string::String;
use alloc::vec::Vec;
use stored::Stored;
use validate::Stamps;

/// A parameter group: its hyperparameters and its initial learning rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    pub(crate) hyper: Hyper,
    /// The `lr` the group was added with (or set since): timm's
    /// corrected decay takes its `max_lr` from it when unset.
    pub(crate) initial_lr: f64,
}

impl Group {
    /// The group's hyperparameters, an unset corrected-decay `max_lr`
    /// filled in from the initial learning rate.
    pub(crate) fn resolved(&self) -> Hyper {
        self.hyper.with_initial_lr(self.initial_lr)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Param {
    pub(crate) name: Option<String>,
    pub(crate) layout: Layout,
    pub(crate) group: GroupId,
    /// Created on the first step with a gradient, as the reference does.
    pub(crate) state: Option<Stored>,
}

impl Param {
    /// The parameter's lanes (validated at registration).
    pub(crate) fn lanes(&self) -> usize {
        self.layout.lanes().unwrap_or(0)
    }
}

/// The ADOPT optimizer over many buffers, like `torch.optim` optimizers:
/// parameter groups with their own hyperparameters (changeable between steps,
/// so schedules work), per-parameter state with its own step count, created
/// lazily on the first gradient, and one [`step`](Adopt::step) over every
/// buffer that has a gradient, split across the rayon pool.
///
/// Each parameter is registered with its [`Layout`]: dense f32 (the
/// default), bf16/f16 parameters and gradients with f32 arithmetic (with or
/// without an f32 master copy), f32, bf16 or f16 moments, complex lanes, or
/// a row-sparse embedding table. One step covers any mix, validated
/// completely before its first write.
///
/// ```
/// use adopt::{Adopt, Hyper, Item, WeightDecay};
///
/// let mut opt = Adopt::new();
/// let body = opt.add_group(Hyper { lr: 1e-2, weight_decay: WeightDecay::decoupled(0.01), ..Hyper::default() })?;
/// let head = opt.add_group(Hyper { lr: 1e-3, ..Hyper::default() })?;
/// let w = opt.add_param(body, 6, Some("w"))?;
/// let b = opt.add_param(head, 2, Some("b"))?;
///
/// let (mut w_data, mut b_data) = (vec![1.0_f32; 6], vec![0.0_f32; 2]);
/// for step in 0..3 {
///     opt.hyper_mut(body)?.lr = 1e-2 / (1 + step) as f64; // a schedule
///     let w_grad = vec![0.5_f32; 6];
///     opt.step(&mut [
///         Item { id: w, params: &mut w_data, grads: Some(&w_grad) },
///         Item { id: b, params: &mut b_data, grads: None }, // no gradient: skipped
///     ])?;
/// }
/// assert_eq!(opt.state(w)?.map(|s| s.step()), Some(3));
/// assert!(opt.state(b)?.is_none());
/// assert!(w_data[0] < 1.0);
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Adopt {
    pub(crate) groups: Vec<Group>,
    pub(crate) params: Vec<Param>,
    /// The kernel this optimizer's steps use; `None`: [`Kernel::try_active`].
    pub(crate) kernel: Option<Kernel>,
    /// Duplicate detection without allocating.
    stamps: Stamps,
    /// Per-step scratch, kept to avoid allocating in steady state.
    scratch: validate::Scratch,
}

impl Adopt {
    /// An optimizer with no groups and no parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter group with its hyperparameters (validated); its
    /// `lr` becomes the group's initial learning rate
    /// ([`initial_lr`](Adopt::initial_lr)).
    pub fn add_group(&mut self, hyper: Hyper) -> Result<GroupId, Error> {
        hyper.with_initial_lr(hyper.lr).validate()?;
        self.groups.push(Group {
            hyper,
            initial_lr: hyper.lr,
        });
        Ok(GroupId(self.groups.len() as u32 - 1))
    }

    /// A group's initial learning rate: its `lr` when it was added, unless
    /// [`set_initial_lr`](Adopt::set_initial_lr) changed it. timm's
    /// corrected decay ([`DecayScaling::Corrected`](crate::DecayScaling)
    /// with `max_lr: None`) takes its peak learning rate from it, as timm
    /// does.
    pub fn initial_lr(&self, group: GroupId) -> Result<f64, Error> {
        Ok(self.groups[self.group_index(group)?].initial_lr)
    }

    /// Sets a group's initial learning rate (a finite number > 0), as
    /// PyTorch's schedulers record `initial_lr`.
    pub fn set_initial_lr(&mut self, group: GroupId, initial_lr: f64) -> Result<(), Error> {
        let i = self.group_index(group)?;
        if !(initial_lr.is_finite() && initial_lr > 0.0) {
            return Err(Error::InvalidHyper {
                param: crate::HyperParam::MaxLr,
                value: initial_lr.into(),
            });
        }
        self.groups[i].initial_lr = initial_lr;
        Ok(())
    }

    /// Registers a parameter in `group` with its [`Layout`] (a lane count
    /// for dense f32) and an optional name (for checkpoints and messages).
    ///
    /// ```
    /// use adopt::{Adopt, Error, Hyper, Layout};
    /// let mut opt = Adopt::new();
    /// let g = opt.add_group(Hyper::default())?;
    /// opt.add_param(g, 1024, Some("w"))?; // dense f32
    /// opt.add_param(g, Layout::complex(16), Some("z"))?; // 32 interleaved lanes
    /// opt.add_param(g, Layout::rows(10_000, 64), Some("entities"))?;
    /// assert!(matches!(
    ///     opt.add_param(g, Layout::rows(usize::MAX, 2), None),
    ///     Err(Error::InvalidLayout { .. })
    /// ));
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn add_param(
        &mut self,
        group: GroupId,
        layout: impl Into<Layout>,
        name: Option<&str>,
    ) -> Result<ParamId, Error> {
        self.group_index(group)?;
        let layout = layout.into();
        layout.validate()?;
        self.params.push(Param {
            name: name.map(String::from),
            layout,
            group,
            state: None,
        });
        self.stamps.grow(self.params.len());
        Ok(ParamId(self.params.len() as u32 - 1))
    }

    /// Makes this optimizer's steps use `kernel` (`None`: the process-wide
    /// choice, [`Kernel::try_active`]); other optimizers and single-buffer
    /// steps are not affected. Refuses a kernel this CPU cannot run
    /// ([`Error::KernelUnavailable`]), changing nothing. Not saved in
    /// checkpoints (it is a property of the machine, not of training).
    ///
    /// ```
    /// use adopt::{Adopt, Kernel};
    /// let mut opt = Adopt::new();
    /// opt.set_kernel(Some(Kernel::Portable))?;
    /// assert_eq!(opt.kernel(), Some(Kernel::Portable));
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn set_kernel(&mut self, kernel: Option<Kernel>) -> Result<(), Error> {
        if let Some(k) = kernel {
            crate::prepare::kernel(Some(k))?;
        }
        self.kernel = kernel;
        Ok(())
    }

    /// The kernel set by [`set_kernel`](Adopt::set_kernel), if any.
    pub fn kernel(&self) -> Option<Kernel> {
        self.kernel
    }

    /// The number of groups.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The number of registered parameters.
    pub fn param_count(&self) -> usize {
        self.params.len()
    }

    /// A group's hyperparameters.
    pub fn hyper(&self, group: GroupId) -> Result<&Hyper, Error> {
        Ok(&self.groups[self.group_index(group)?].hyper)
    }

    /// Replaces a group's hyperparameters (learning-rate schedules),
    /// validated now: on error the group keeps its old ones.
    pub fn set_hyper(&mut self, group: GroupId, hyper: Hyper) -> Result<(), Error> {
        let i = self.group_index(group)?;
        let candidate = Group {
            hyper,
            ..self.groups[i]
        };
        candidate.resolved().validate()?;
        self.groups[i] = candidate;
        Ok(())
    }

    /// A group's hyperparameters, to change between steps (learning-rate
    /// schedules). They are validated at the next step.
    pub fn hyper_mut(&mut self, group: GroupId) -> Result<&mut Hyper, Error> {
        let i = self.group_index(group)?;
        Ok(&mut self.groups[i].hyper)
    }

    /// A parameter's group, lanes and name.
    pub fn param(&self, id: ParamId) -> Result<(GroupId, usize, Option<&str>), Error> {
        let p = &self.params[self.param_index(id)?];
        Ok((p.group, p.lanes(), p.name.as_deref()))
    }

    /// A parameter's layout.
    pub fn layout(&self, id: ParamId) -> Result<Layout, Error> {
        Ok(self.params[self.param_index(id)?].layout)
    }

    /// The state of a parameter with f32 moments and no master copy (dense
    /// f32, complex, or half-precision parameters with f32 state), `None`
    /// before its first gradient. Other layouts' state is read with
    /// [`param_state`](Adopt::param_state) (this returns
    /// [`Error::LayoutMismatch`] for them).
    pub fn state(&self, id: ParamId) -> Result<Option<&State>, Error> {
        match &self.params[self.param_index(id)?].state {
            None => Ok(None),
            Some(Stored::Plain(state)) => Ok(Some(state)),
            Some(_) => Err(Error::LayoutMismatch {
                param: id,
                reason: "its state is not f32 moments alone: read it with param_state",
            }),
        }
    }

    /// The state of a parameter with f32 moments and no master copy, to
    /// read and write in place: its moments and step count (`None` before
    /// its first gradient, unless [`set_state`](Adopt::set_state) gave it
    /// one). Other layouts: [`param_state_mut`](Adopt::param_state_mut)
    /// (this returns [`Error::LayoutMismatch`] for them).
    ///
    /// A state's buffers keep their address for as long as the state
    /// lives (until [`set_state`](Adopt::set_state), a checkpoint load or
    /// the optimizer's end replaces it), so a wrapper can lend views of
    /// them to another language between steps.
    ///
    /// ```
    /// use adopt::{Adopt, Hyper, Item, State};
    /// let mut opt = Adopt::new();
    /// let g = opt.add_group(Hyper::default())?;
    /// let id = opt.add_param(g, 2, None)?;
    /// opt.set_state(id, State::new(2))?;
    /// let mut state = opt.state_mut(id)?.expect("set above");
    /// state.exp_avg_sq_mut().copy_from_slice(&[4.0, 9.0]);
    /// *state.step_mut() = 1;
    /// let mut p = [1.0_f32, 1.0];
    /// opt.step(&mut [Item { id, params: &mut p, grads: Some(&[2.0, 3.0]) }])?;
    /// assert_eq!(opt.state(id)?.map(|s| s.step()), Some(2));
    /// assert!(p[0] < 1.0); // the second step moves
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn state_mut(&mut self, id: ParamId) -> Result<Option<crate::StateView<'_>>, Error> {
        let i = self.param_index(id)?;
        match &mut self.params[i].state {
            None => Ok(None),
            Some(Stored::Plain(state)) => Ok(Some(state.view_mut())),
            Some(_) => Err(Error::LayoutMismatch {
                param: id,
                reason: "its state is not f32 moments alone: write it with param_state_mut",
            }),
        }
    }

    /// Gives a parameter with f32 moments and no master copy a state
    /// (another framework's, or one saved elsewhere), replacing any it had.
    /// Both moments must have the lanes the parameter was registered with
    /// ([`Error::LengthMismatch`] otherwise); other layouts get
    /// [`Error::LayoutMismatch`] (use [`init_state`](Adopt::init_state) and
    /// [`param_state_mut`](Adopt::param_state_mut)). On error nothing
    /// changes.
    pub fn set_state(&mut self, id: ParamId, state: State) -> Result<(), Error> {
        let i = self.param_index(id)?;
        let p = &mut self.params[i];
        if !Stored::plain_for(&p.layout) {
            return Err(Error::LayoutMismatch {
                param: id,
                reason: "its state is not f32 moments alone: use init_state and param_state_mut",
            });
        }
        let lanes = p.lanes();
        for (buffer, got) in [
            (Buffer::ExpAvg, state.exp_avg().len()),
            (Buffer::ExpAvgSq, state.exp_avg_sq().len()),
        ] {
            if got != lanes {
                return Err(Error::LengthMismatch {
                    buffer,
                    expected: lanes,
                    got,
                });
            }
        }
        p.state = Some(Stored::Plain(state));
        Ok(())
    }

    /// A parameter's state in its layout's storage, `None` before its first
    /// gradient.
    ///
    /// ```
    /// use adopt::{Adopt, Grads, Entry, Hyper, Layout, Lanes, Steps};
    /// let mut opt = Adopt::new();
    /// let g = opt.add_group(Hyper::default())?;
    /// let t = opt.add_param(g, Layout::rows(4, 2), None)?;
    /// let mut table = vec![1.0_f32; 8];
    /// let grads = Grads::Rows { rows: &[1], values: &[0.5, 0.5] };
    /// opt.step(&mut [Entry { id: t, params: (&mut table[..]).into(), grads: Some(grads) }])?;
    /// let state = opt.param_state(t)?.unwrap();
    /// assert_eq!(state.steps, Steps::Rows(&[0, 1, 0, 0]));
    /// assert!(matches!(state.exp_avg_sq, Lanes::F32(v) if v[2..4] == [0.25, 0.25]));
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn param_state(&self, id: ParamId) -> Result<Option<ParamState<'_>>, Error> {
        Ok(self.params[self.param_index(id)?]
            .state
            .as_ref()
            .map(Stored::view))
    }

    /// A parameter's state, writable in place (`None` before its first
    /// gradient): for bindings that wrap the buffers without copying, and
    /// for loading state saved by another implementation. The buffers stay
    /// where they are until the state is replaced (by
    /// [`load`](Adopt::load)) or cleared.
    pub fn param_state_mut(&mut self, id: ParamId) -> Result<Option<ParamStateMut<'_>>, Error> {
        let i = self.param_index(id)?;
        Ok(self.params[i].state.as_mut().map(Stored::view_mut))
    }

    /// A parameter's state, created fresh (zero moments, no steps taken) if
    /// it has none, as its first gradient would create it. A layout with a
    /// master copy takes it from `master` (its lanes; required), which
    /// its first gradient would take from the parameters.
    ///
    /// Refuses a missing or superfluous master, or one of the wrong length,
    /// changing nothing.
    pub fn init_state(
        &mut self,
        id: ParamId,
        master: Option<&[f32]>,
    ) -> Result<ParamStateMut<'_>, Error> {
        let i = self.param_index(id)?;
        let p = &mut self.params[i];
        if p.state.is_none() {
            let master = match (p.layout.has_master(), master) {
                (true, Some(m)) if m.len() == p.lanes() => Some(m.to_vec()),
                (true, Some(m)) => {
                    return Err(Error::LengthMismatch {
                        buffer: Buffer::Params,
                        expected: p.lanes(),
                        got: m.len(),
                    });
                }
                (true, None) => {
                    return Err(Error::LayoutMismatch {
                        param: id,
                        reason: "its layout keeps a master copy: pass its lanes",
                    });
                }
                (false, Some(_)) => {
                    return Err(Error::LayoutMismatch {
                        param: id,
                        reason: "its layout keeps no master copy",
                    });
                }
                (false, None) => None,
            };
            p.state = Some(Stored::fresh(&p.layout, master));
        }
        Ok(p.state
            .as_mut()
            .map(Stored::view_mut)
            .expect("created above"))
    }

    /// Drops a parameter's state: its next gradient starts it afresh (the
    /// first step only records `v`).
    pub fn clear_state(&mut self, id: ParamId) -> Result<(), Error> {
        let i = self.param_index(id)?;
        self.params[i].state = None;
        Ok(())
    }

    fn group_index(&self, group: GroupId) -> Result<usize, Error> {
        let i = group.0 as usize;
        if i < self.groups.len() {
            Ok(i)
        } else {
            Err(Error::UnknownGroup(group))
        }
    }

    fn param_index(&self, id: ParamId) -> Result<usize, Error> {
        validate::param_index(&self.params, id).map(|(i, _)| i)
    }

    /// One step over every item that has a gradient: [`Item`]s (dense f32)
    /// or [`Entry`]s (any layout).
    ///
    /// Everything is validated first (unknown or repeated ids, every
    /// storage type and length, every listed row, every group's
    /// hyperparameters at each parameter's own step count, or each row's),
    /// so on error no parameter, state or step count has changed. Items are
    /// stepped in parallel across the rayon pool when their lanes add up to
    /// at least [`PARALLEL_THRESHOLD`](crate::PARALLEL_THRESHOLD); the
    /// results are bit-identical to the single-buffer step of each layout
    /// ([`adopt_step`](crate::adopt_step) for dense f32).
    pub fn step<T: StepItem>(&mut self, items: &mut [T]) -> Result<(), Error> {
        self.step_scaled(items, Scaling::default())
    }

    /// [`step`](Adopt::step) with mixed-precision [`Scaling`] for all items
    /// (`inv_scale` fused into the kernel); `found_inf` skips the whole step
    /// (after validation).
    pub fn step_scaled<T: StepItem>(
        &mut self,
        items: &mut [T],
        scaling: Scaling,
    ) -> Result<(), Error> {
        T::step_scaled(self, items, scaling)
    }

    /// The body of [`step_scaled`](Adopt::step_scaled), instantiated only
    /// in this crate (for [`Item`] and [`Entry`], through the sealed
    /// trait), never in a caller's.
    pub(crate) fn step_items<T: StepItem>(
        &mut self,
        items: &mut [T],
        scaling: Scaling,
    ) -> Result<(), Error> {
        let kernel = crate::prepare::kernel(self.kernel)?;
        let plan = self.validate_waking_pool(items, scaling)?;
        if scaling.found_inf {
            return Ok(());
        }
        // The passes below touch every item again, so they run only when
        // some item needs them.
        if plan.new_states {
            self.create_states(items);
        }
        if plan.tables {
            self.plan_tables(items, scaling);
        }
        if plan.cautious {
            self.caution_counts(kernel, items);
        }
        self.run(kernel, items, plan.lanes);
        Ok(())
    }

    /// Creates the state of every parameter of the validated step that has
    /// a gradient and no state yet: plain states all first moments before
    /// the second ones ([`State::many`], so each moment's buffers of a
    /// step lie in order in memory), master copies from the parameters.
    fn create_states<T: StepItem>(&mut self, items: &[T]) {
        let mut plain: Vec<usize> = Vec::new();
        for (w, item) in self.scratch.work.iter().zip(items) {
            if w.is_skip() {
                continue;
            }
            let i = w.index as usize;
            let p = &mut self.params[i];
            if p.state.is_some() {
                continue;
            }
            if Stored::plain_for(&p.layout) {
                plain.push(i);
                continue;
            }
            let master = p.layout.has_master().then(|| item.view().0.to_f32_vec());
            p.state = Some(Stored::fresh(&p.layout, master));
        }
        let lanes = |k: usize| self.params[plain[k]].lanes();
        let states: Vec<State> = State::many(
            plain.len(),
            |k| alloc::vec![0.0; lanes(k)],
            |k| alloc::vec![0.0; lanes(k)],
            |_| 0,
        )
        .collect();
        for (&i, state) in plain.iter().zip(states) {
            self.params[i].state = Some(Stored::Plain(state));
        }
    }
}
