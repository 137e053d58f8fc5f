//! [`Adopt`]: the optimizer object for many parameter buffers, with
//! parameter groups, lazily created state and one parallel step over all of
//! them (needs `alloc`).

use crate::error::{Buffer, Error};
use crate::hyper::{Caution, Hyper, Scaling, StepConstants};
use crate::kernel::{Job, Kernel};
use crate::state::{State, StateView};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A parameter buffer registered with an [`Adopt`]; stable for the
/// optimizer's life and across checkpoints (ids are dense, in registration
/// order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// A parameter group of an [`Adopt`]: a set of buffers sharing one [`Hyper`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

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
    pub(crate) lanes: usize,
    pub(crate) group: GroupId,
    /// Created on the first step with a gradient, as the reference does.
    pub(crate) state: Option<State>,
}

/// One buffer handed to [`Adopt::step`]: the engine owns the parameters and
/// gradients; `grads: None` skips the buffer (the reference skips
/// `grad is None`).
#[derive(Debug)]
pub struct Item<'a> {
    /// Which registered parameter this is.
    pub id: ParamId,
    /// The parameter lanes, as many as registered.
    pub params: &'a mut [f32],
    /// The gradient, or `None` to leave this buffer (and its step count)
    /// alone this step.
    pub grads: Option<&'a [f32]>,
}

/// The ADOPT optimizer over many buffers, like `torch.optim` optimizers:
/// parameter groups with their own hyperparameters (changeable between steps,
/// so schedules work), per-parameter state with its own step count, created
/// lazily on the first gradient, and one [`step`](Adopt::step) over every
/// buffer that has a gradient, split across the rayon pool.
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
    /// Duplicate detection without allocating.
    stamps: Stamps,
    /// Per-step scratch, kept to avoid allocating in steady state: one
    /// [`Work`] per item of the current step.
    work: Vec<Work>,
    /// Per-step scratch: the distinct constants of the current step.
    constants: Vec<StepConstants>,
    /// Per-step scratch: the constants found by the second half of a
    /// parallel validation, before they join `constants`.
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    right_constants: Vec<StepConstants>,
}

/// A stamp per parameter: the last validation pass that saw it. Atomic
/// (loads and stores only: plain moves on common CPUs) so the two halves of
/// a parallel validation can stamp at once without a data race.
#[derive(Debug, Default)]
struct Stamps {
    marks: Vec<AtomicU32>,
    /// The last stamp handed out.
    last: u32,
}

impl Clone for Stamps {
    fn clone(&self) -> Self {
        Stamps {
            marks: self
                .marks
                .iter()
                .map(|m| AtomicU32::new(m.load(Relaxed)))
                .collect(),
            last: self.last,
        }
    }
}

impl Stamps {
    /// A stamp no parameter carries yet. When the counter would wrap, every
    /// mark is cleared first, so a stale mark never matches.
    fn fresh(&mut self) -> u32 {
        if self.last == u32::MAX {
            for mark in &mut self.marks {
                *mark.get_mut() = 0;
            }
            self.last = 0;
        }
        self.last += 1;
        self.last
    }

    /// Marks parameter `index` with `stamp`; returns whether it carried that
    /// stamp already.
    #[inline(always)]
    fn mark(&self, index: usize, stamp: u32) -> bool {
        let mark = &self.marks[index];
        if mark.load(Relaxed) == stamp {
            return true;
        }
        mark.store(stamp, Relaxed);
        false
    }
}

/// What one item of a step needs once validation has passed.
#[derive(Clone, Copy, Debug, Default)]
struct Work {
    /// The parameter's index.
    index: u32,
    /// Its constants' slot in `Adopt::constants`, or [`Work::SKIP`] for an
    /// item without a gradient.
    constants: u32,
    /// The lanes of the step's earlier items with gradients (where this
    /// item starts in the step's lanes), for splitting it across threads.
    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    start: usize,
}

impl Work {
    const SKIP: u32 = u32::MAX;
}

/// What a validated step has to do beyond the kernel calls.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    /// Lanes to step, summed over the items with gradients.
    lanes: usize,
    /// Some item with a gradient has no state yet.
    new_states: bool,
    /// Some item with a gradient is in a group with cautious masking.
    cautious: bool,
}

/// The optimizer's parameters as a raw pointer, shared by the tasks of one
/// step, each of which touches a different parameter.
#[derive(Clone, Copy)]
struct ParamsPtr(*mut Param);

impl ParamsPtr {
    /// The parameter at `index`.
    ///
    /// # Safety
    /// `index` must be in bounds of the parameters the pointer was taken
    /// from, which must outlive `'a`, and no other reference to that
    /// parameter may exist during `'a`.
    unsafe fn get<'a>(self, index: usize) -> &'a mut Param {
        // SAFETY: guaranteed by the caller.
        unsafe { &mut *self.0.add(index) }
    }
}

// SAFETY: a `ParamsPtr` is only dereferenced at indices that `validate` (or
// `validate_halves`) proved distinct (duplicate ids are refused), so no two
// threads touch the same `Param`, and `Param` itself is `Send`.
unsafe impl Send for ParamsPtr {}
// SAFETY: as above: shared access only hands out disjoint elements.
unsafe impl Sync for ParamsPtr {}

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

    /// Registers a parameter buffer of `lanes` f32 in `group`, with an
    /// optional name (for checkpoints and messages).
    pub fn add_param(
        &mut self,
        group: GroupId,
        lanes: usize,
        name: Option<&str>,
    ) -> Result<ParamId, Error> {
        self.group_index(group)?;
        self.params.push(Param {
            name: name.map(String::from),
            lanes,
            group,
            state: None,
        });
        self.stamps.marks.push(AtomicU32::new(0));
        Ok(ParamId(self.params.len() as u32 - 1))
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
        Ok((p.group, p.lanes, p.name.as_deref()))
    }

    /// A parameter's state, `None` before its first gradient.
    pub fn state(&self, id: ParamId) -> Result<Option<&State>, Error> {
        Ok(self.params[self.param_index(id)?].state.as_ref())
    }

    /// A parameter's state, to read and write in place: its moments and
    /// step count (`None` before its first gradient, unless
    /// [`set_state`](Adopt::set_state) gave it one).
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
    pub fn state_mut(&mut self, id: ParamId) -> Result<Option<StateView<'_>>, Error> {
        let i = self.param_index(id)?;
        Ok(self.params[i].state.as_mut().map(State::view_mut))
    }

    /// Gives a parameter a state (another framework's, or one saved
    /// elsewhere), replacing any it had. Both moments must have the lanes
    /// the parameter was registered with ([`Error::LengthMismatch`]
    /// otherwise, and nothing changes).
    pub fn set_state(&mut self, id: ParamId, state: State) -> Result<(), Error> {
        let i = self.param_index(id)?;
        let lanes = self.params[i].lanes;
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
        self.params[i].state = Some(state);
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
        param_index(&self.params, id).map(|(i, _)| i)
    }

    /// One step over every item that has a gradient.
    ///
    /// Everything is validated first (unknown or repeated ids, every length,
    /// every group's hyperparameters at each parameter's own step count), so
    /// on error no parameter, state or step count has changed. Items are
    /// stepped in parallel across the rayon pool when their lanes add up to
    /// at least [`PARALLEL_THRESHOLD`](crate::PARALLEL_THRESHOLD); the
    /// results are bit-identical to [`adopt_step`](crate::adopt_step) on each
    /// buffer.
    pub fn step(&mut self, items: &mut [Item<'_>]) -> Result<(), Error> {
        self.step_scaled(items, Scaling::default())
    }

    /// [`step`](Adopt::step) with mixed-precision [`Scaling`] for all items;
    /// `found_inf` skips the whole step (after validation).
    pub fn step_scaled(&mut self, items: &mut [Item<'_>], scaling: Scaling) -> Result<(), Error> {
        let kernel = Kernel::try_active()?;
        let Plan {
            lanes,
            new_states,
            cautious,
        } = self.validate_waking_pool(items, scaling)?;
        if scaling.found_inf {
            return Ok(());
        }
        // The passes below touch every item again, so they run only when
        // some item needs them.
        if new_states {
            self.create_states();
        }
        // Cautious groups: each tensor's own mask count (a read-only pass),
        // into constants of its own.
        if cautious {
            for (w, item) in self.work.iter_mut().zip(items.iter()) {
                if w.constants == Work::SKIP {
                    continue;
                }
                let p = &self.params[w.index as usize];
                let k = self.constants[w.constants as usize];
                if k.caution != Caution::Off && k.step > 0 {
                    let state = p.state.as_ref().expect("state created above");
                    let (m, v) = (state.exp_avg(), state.exp_avg_sq());
                    let grads = item.grads.expect("items with work have gradients");
                    let count = crate::parallel::count(kernel, item.params, grads, m, v, &k);
                    let mask = crate::CautionMask {
                        count,
                        lanes: item.params.len() as u64,
                    };
                    self.constants.push(StepConstants {
                        caution_scale: Some(mask.scale(k.caution)),
                        ..k
                    });
                    w.constants = self.constants.len() as u32 - 1;
                }
            }
        }
        self.run(kernel, items, lanes);
        Ok(())
    }

    /// Creates the state of every parameter of the validated step that has
    /// a gradient and no state yet, all first moments before the second
    /// ones ([`State::many`]).
    fn create_states(&mut self) {
        let new: Vec<usize> = self
            .work
            .iter()
            .filter(|w| w.constants != Work::SKIP)
            .map(|w| w.index as usize)
            .filter(|&i| self.params[i].state.is_none())
            .collect();
        let lanes = |i: usize| self.params[new[i]].lanes;
        let states = State::many(
            new.len(),
            |i| alloc::vec![0.0; lanes(i)],
            |i| alloc::vec![0.0; lanes(i)],
            |_| 0,
        );
        let states: Vec<State> = states.collect();
        for (&i, state) in new.iter().zip(states) {
            self.params[i].state = Some(state);
        }
    }

    /// [`validate`](Self::validate), on many items in parallel: on a step
    /// of at least [`PARALLEL_VALIDATION_ITEMS`] items, two halves are
    /// checked at once on the rayon pool (which also wakes the pool for the
    /// step); from [`WAKE_POOL_ITEMS`] a no-op task wakes the pool while
    /// this thread validates: a sleeping worker takes tens of microseconds
    /// to wake on a virtual machine, which is then overlapped with
    /// validation instead of delaying the parallel section. `rayon::join`
    /// allocates nothing.
    fn validate_waking_pool(
        &mut self,
        items: &[Item<'_>],
        scaling: Scaling,
    ) -> Result<Plan, Error> {
        #[cfg(feature = "rayon")]
        if items.len() >= WAKE_POOL_ITEMS && rayon::current_num_threads() > 1 {
            if items.len() >= PARALLEL_VALIDATION_ITEMS {
                return self.validate_halves(items, scaling);
            }
            return rayon::join(|| self.validate(items, scaling), || ()).0;
        }
        self.validate(items, scaling)
    }

    /// Checks every item and fills the step's scratch (`work`, `constants`);
    /// returns what the step has to do. Writes nothing but the scratch and
    /// the duplicate stamps.
    fn validate(&mut self, items: &[Item<'_>], scaling: Scaling) -> Result<Plan, Error> {
        scaling.validate()?;
        let stamp = self.stamps.fresh();
        self.constants.clear();
        self.work.resize(items.len(), Work::default());
        let (plan, _) = check(
            &self.params,
            &self.groups,
            &self.stamps,
            stamp,
            items,
            &mut self.work,
            &mut self.constants,
            scaling,
        )?;
        Ok(plan)
    }

    /// [`validate`](Self::validate) with the two halves of the items checked
    /// at once on the rayon pool, with the same result (the same error, for
    /// the same first invalid item).
    ///
    /// Each half stamps its parameters with its own stamp, which finds
    /// duplicates within the half. A parameter in both halves would be
    /// missed, but it cannot be there when the halves' index ranges are
    /// disjoint (items listed in registration order, the usual case);
    /// otherwise a serial pass with a fresh stamp looks for duplicates over
    /// all items. If either half fails, the serial validation runs again to
    /// report the error the first invalid item gets.
    #[cfg(feature = "rayon")]
    fn validate_halves(&mut self, items: &[Item<'_>], scaling: Scaling) -> Result<Plan, Error> {
        scaling.validate()?;
        let (left_stamp, right_stamp) = (self.stamps.fresh(), self.stamps.fresh());
        self.constants.clear();
        self.right_constants.clear();
        self.work.resize(items.len(), Work::default());
        let mid = items.len() / 2;
        let (left_items, right_items) = items.split_at(mid);
        let (left_work, right_work) = self.work.split_at_mut(mid);
        let (params, groups, stamps) = (&self.params[..], &self.groups[..], &self.stamps);
        let (constants, right_constants) = (&mut self.constants, &mut self.right_constants);
        let (left, right) = rayon::join(
            || {
                check(
                    params, groups, stamps, left_stamp, left_items, left_work, constants, scaling,
                )
            },
            || {
                check(
                    params,
                    groups,
                    stamps,
                    right_stamp,
                    right_items,
                    right_work,
                    right_constants,
                    scaling,
                )
            },
        );
        let (Ok((left, left_range)), Ok((right, right_range))) = (left, right) else {
            return self.validate(items, scaling);
        };
        if left_range.0 <= right_range.1 && right_range.0 <= left_range.1 {
            let stamp = self.stamps.fresh();
            for item in items {
                if self.stamps.mark(item.id.0 as usize, stamp) {
                    return Err(Error::DuplicateParam(item.id));
                }
            }
        }
        // The right half's constants follow the left's, and its lanes too.
        let offset = self.constants.len() as u32;
        for w in &mut self.work[mid..] {
            if w.constants != Work::SKIP {
                w.constants += offset;
            }
            w.start += left.lanes;
        }
        self.constants.extend_from_slice(&self.right_constants);
        Ok(Plan {
            lanes: left.lanes + right.lanes,
            new_states: left.new_states || right.new_states,
            cautious: left.cautious || right.cautious,
        })
    }

    /// Runs the kernel over the validated items, in parallel when large;
    /// each job advances its parameter's step count.
    fn run(&mut self, kernel: Kernel, items: &mut [Item<'_>], lanes: usize) {
        #[cfg(feature = "rayon")]
        if lanes >= crate::PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
            let params = ParamsPtr(self.params.as_mut_ptr());
            let constants = &self.constants[..];
            let threads = rayon::current_num_threads();
            // SAFETY: see `jobs`; `split` partitions the items.
            unsafe {
                split(
                    kernel, params, constants, items, &self.work, threads, 0, lanes,
                )
            };
            return;
        }
        let _ = lanes;
        let params = ParamsPtr(self.params.as_mut_ptr());
        let constants = &self.constants[..];
        // Serial: one call into the kernel for all items, so small buffers
        // pay no per-buffer dispatch.
        // SAFETY: see `jobs`.
        kernel.run_each(unsafe { jobs(params, constants, items, &self.work) });
    }
}

/// Steps `items` (lanes `start..end` of the step) as `parts` contiguous
/// runs of about equal lanes, one per pool thread: the first run on this
/// thread, the rest by `rayon::join` halving, so each thread keeps stepping
/// the same buffers from one step to the next (they stay in its cache) and
/// each run is one kernel call. An item large enough to split is split
/// across the pool itself.
///
/// # Safety
///
/// As [`jobs`].
#[cfg(feature = "rayon")]
#[allow(clippy::too_many_arguments)]
unsafe fn split(
    kernel: Kernel,
    params: ParamsPtr,
    constants: &[StepConstants],
    items: &mut [Item<'_>],
    work: &[Work],
    parts: usize,
    start: usize,
    end: usize,
) {
    if parts > 1 && items.len() > 1 {
        let left = parts / 2;
        let target = start + (end - start) / parts * left;
        let mid = work
            .partition_point(|w| w.start < target)
            .clamp(1, items.len() - 1);
        let middle = work[mid].start;
        let (left_items, right_items) = items.split_at_mut(mid);
        let (left_work, right_work) = work.split_at(mid);
        rayon::join(
            // SAFETY: the two halves partition the items (the caller's
            // contract holds for each).
            || unsafe {
                split(
                    kernel, params, constants, left_items, left_work, left, start, middle,
                )
            },
            // SAFETY: as above.
            || unsafe {
                split(
                    kernel,
                    params,
                    constants,
                    right_items,
                    right_work,
                    parts - left,
                    middle,
                    end,
                )
            },
        );
        return;
    }
    // Runs of small items go to the kernel in one call each; an item large
    // enough to split is split across the pool. (Kept apart: a filter in
    // the batched loop that could call into the pool made that loop's code
    // slower, 85 against 57 µs for 2,000 buffers of 100 lanes.)
    let mut begin = 0;
    for i in 0..items.len() {
        if work[i].constants == Work::SKIP || items[i].params.len() < crate::PARALLEL_THRESHOLD {
            continue;
        }
        // SAFETY (both calls): guaranteed by the caller, for sub-slices.
        let small = unsafe { jobs(params, constants, &mut items[begin..i], &work[begin..i]) };
        kernel.run_each(small);
        let big = unsafe { jobs(params, constants, &mut items[i..=i], &work[i..=i]) };
        for job in big {
            crate::parallel::run(kernel, job.p, job.g, job.m, job.v, job.k);
        }
        begin = i + 1;
    }
    // SAFETY: as above.
    let rest = unsafe { jobs(params, constants, &mut items[begin..], &work[begin..]) };
    kernel.run_each(rest);
}

/// Items in a step from which validation overlaps waking the pool.
#[cfg(feature = "rayon")]
const WAKE_POOL_ITEMS: usize = 256;

/// Items in a step from which its two halves are validated at once.
#[cfg(feature = "rayon")]
const PARALLEL_VALIDATION_ITEMS: usize = 4096;

/// The index and record of the parameter `id` names, or
/// [`Error::UnknownParam`].
fn param_index(params: &[Param], id: ParamId) -> Result<(usize, &Param), Error> {
    let i = id.0 as usize;
    params.get(i).map(|p| (i, p)).ok_or(Error::UnknownParam(id))
}

/// Checks `items` against the parameters' records: item `i`'s [`Work`]
/// goes to `work[i]` (lane starts counted from this call's first item,
/// constants indices into `constants`, to which each distinct group and
/// step count's constants are pushed), and each parameter is stamped with
/// `stamp`, refusing one that already carries it. Returns what the items
/// need and the least and greatest parameter index they name (`usize::MAX`
/// and 0 for no items), or the first invalid item's error.
#[allow(clippy::too_many_arguments)]
fn check(
    params: &[Param],
    groups: &[Group],
    stamps: &Stamps,
    stamp: u32,
    items: &[Item<'_>],
    work: &mut [Work],
    constants: &mut Vec<StepConstants>,
    scaling: Scaling,
) -> Result<(Plan, (usize, usize)), Error> {
    let mut plan = Plan::default();
    let (mut least, mut greatest) = (usize::MAX, 0);
    // Items of one group at one step count share constants: derive them
    // once (the clip schedule's `pow` is the costly part).
    let mut last: Option<(GroupId, u64)> = None;
    for (item, w) in items.iter().zip(work) {
        let (index, p) = param_index(params, item.id)?;
        if stamps.mark(index, stamp) {
            return Err(Error::DuplicateParam(item.id));
        }
        (least, greatest) = (least.min(index), greatest.max(index));
        if item.params.len() != p.lanes {
            return Err(Error::LengthMismatch {
                buffer: Buffer::Params,
                expected: p.lanes,
                got: item.params.len(),
            });
        }
        let Some(grads) = item.grads else {
            *w = Work {
                index: index as u32,
                constants: Work::SKIP,
                start: plan.lanes,
            };
            continue;
        };
        if grads.len() != p.lanes {
            return Err(Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: p.lanes,
                got: grads.len(),
            });
        }
        let step = match &p.state {
            Some(state) => state.step(),
            None => {
                plan.new_states = true;
                0
            }
        };
        if last != Some((p.group, step)) {
            if step == u64::MAX {
                return Err(Error::StepOverflow);
            }
            let hyper = groups[p.group.0 as usize].resolved();
            plan.cautious |= hyper.caution != Caution::Off;
            let mut k = hyper.constants(step)?;
            k.inv_scale = scaling.inv_scale;
            constants.push(k);
            last = Some((p.group, step));
        }
        *w = Work {
            index: index as u32,
            constants: constants.len() as u32 - 1,
            start: plan.lanes,
        };
        plan.lanes += p.lanes;
    }
    Ok((plan, (least, greatest)))
}

/// The kernel jobs of validated items (those with gradients); each advances
/// its parameter's step count as it is produced.
///
/// # Safety
///
/// `work` is `validate`'s (or `validate_halves`') for these `items` (so
/// every index is in bounds of `params` and distinct from every other
/// item's: repeated ids are refused, across halves too, and every stepped
/// item has state); no other reference to these parameters exists while the
/// jobs live.
unsafe fn jobs<'a>(
    params: ParamsPtr,
    constants: &'a [StepConstants],
    items: &'a mut [Item<'_>],
    work: &'a [Work],
) -> impl Iterator<Item = Job<'a>> {
    items.iter_mut().zip(work).filter_map(move |(item, w)| {
        if w.constants == Work::SKIP {
            return None;
        }
        let grads = item.grads.expect("items with work have gradients");
        // SAFETY: guaranteed by the caller: the only reference to this
        // `Param` while the step runs.
        let param = unsafe { params.get(w.index as usize) };
        let s = param
            .state
            .as_mut()
            .expect("state created before the kernel runs")
            .view_mut();
        *s.step += 1;
        Some(Job {
            p: &mut *item.params,
            g: grads,
            m: s.exp_avg,
            v: s.exp_avg_sq,
            k: &constants[w.constants as usize],
        })
    })
}
