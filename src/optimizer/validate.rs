//! Checking a whole step before its first write, and the passes between
//! validation and the kernels (new states, table plans, caution counts).

use super::item::{Grads, StepItem};
use super::stored::Stored;
use super::{Adopt, Group, Param};
use crate::error::{Buffer, Error};
use crate::hyper::{Caution, Scaling, StepConstants};
use crate::ids::{GroupId, ParamId};
use crate::kernel::Kernel;
use crate::lanes::{Dtype, Lanes};
use crate::sparse::{self, RowGrads};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// A stamp per parameter: the last validation pass that saw it. Atomic
/// (loads and stores only: plain moves on common CPUs) so the two halves of
/// a parallel validation can stamp at once without a data race.
#[derive(Debug, Default)]
pub(crate) struct Stamps {
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
    /// Room for `params` parameters.
    pub(crate) fn grow(&mut self, params: usize) {
        self.marks.resize_with(params, || AtomicU32::new(0));
    }

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

/// How an item is stepped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    /// f32 buffers and f32 state: the batched f32 kernel.
    #[default]
    Plain,
    /// Half-precision buffers, state or a master copy.
    Typed,
    /// A row-sparse table.
    Rows,
}

/// What one item of a step needs once validation has passed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Work {
    /// The parameter's index.
    pub(crate) index: u32,
    /// Its constants' slot in [`Scratch::constants`] (a table's: its plan's
    /// slot in [`Scratch::tables`]), or [`Work::SKIP`] for an item without
    /// a gradient.
    pub(crate) constants: u32,
    /// The lanes of the step's earlier items with gradients (where this
    /// item starts in the step's lanes), for splitting across threads.
    pub(crate) start: usize,
    /// The lanes this item steps.
    pub(crate) lanes: usize,
    pub(crate) kind: Kind,
}

impl Work {
    pub(crate) const SKIP: u32 = u32::MAX;

    pub(crate) fn is_skip(&self) -> bool {
        self.constants == Work::SKIP
    }
}

/// What a validated step has to do beyond the kernel calls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepPlan {
    /// Lanes to step, summed over the items with gradients.
    pub(crate) lanes: usize,
    /// Some item with a gradient has no state yet.
    pub(crate) new_states: bool,
    /// Some item with a gradient is a row-sparse table.
    pub(crate) tables: bool,
    /// Some dense item with a gradient is in a group with cautious masking.
    pub(crate) cautious: bool,
}

impl StepPlan {
    fn join(self, other: StepPlan) -> StepPlan {
        StepPlan {
            lanes: self.lanes + other.lanes,
            new_states: self.new_states || other.new_states,
            tables: self.tables || other.tables,
            cautious: self.cautious || other.cautious,
        }
    }
}

/// Per-step scratch an [`Adopt`] keeps, so a steady-state step allocates
/// nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    /// One [`Work`] per item of the current step.
    pub(crate) work: Vec<Work>,
    /// The distinct constants of the current step.
    pub(crate) constants: Vec<StepConstants>,
    /// The constants found by the second half of a parallel validation,
    /// before they join `constants`.
    right_constants: Vec<StepConstants>,
    /// One plan per row-sparse table of the step.
    pub(crate) tables: Vec<sparse::Plan>,
}

/// Items in a step from which validation overlaps waking the pool.
const WAKE_POOL_ITEMS: usize = 256;

/// Items in a step from which its two halves are validated at once.
const PARALLEL_VALIDATION_ITEMS: usize = 4096;

/// The index and record of the parameter `id` names, or
/// [`Error::UnknownParam`].
pub(crate) fn param_index(params: &[Param], id: ParamId) -> Result<(usize, &Param), Error> {
    let i = id.0 as usize;
    params.get(i).map(|p| (i, p)).ok_or(Error::UnknownParam(id))
}

/// Refuses a buffer of another storage type than registered.
fn dtype(id: ParamId, buffer: Buffer, expected: Dtype, got: Dtype) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::DtypeMismatch {
            param: id,
            buffer,
            expected,
            got,
        })
    }
}

/// A table's gradient as the sparse step takes it.
fn row_grads<'a>(id: ParamId, grads: Grads<'a>) -> Result<RowGrads<'a>, Error> {
    match grads {
        Grads::Rows { rows, values } => Ok(RowGrads::Listed { rows, values }),
        Grads::Dense(Lanes::F32(values)) => Ok(RowGrads::Dense(values)),
        #[allow(unreachable_patterns)] // only f32 lanes without `half`
        Grads::Dense(other) => Err(Error::DtypeMismatch {
            param: id,
            buffer: Buffer::Grads,
            expected: Dtype::F32,
            got: other.dtype(),
        }),
    }
}

/// Checks `items` against the parameters' records: item `i`'s [`Work`]
/// goes to `work[i]` (lane starts counted from this call's first item,
/// constants indices into `constants`, to which each distinct group and
/// step count's constants are pushed), and each parameter is stamped with
/// `stamp`, refusing one that already carries it. Returns what the items
/// need and the least and greatest parameter index they name (`usize::MAX`
/// and 0 for no items), or the first invalid item's error. Reads only.
#[allow(clippy::too_many_arguments)]
fn check<T: StepItem>(
    params: &[Param],
    groups: &[Group],
    stamps: &Stamps,
    stamp: u32,
    items: &[T],
    work: &mut [Work],
    constants: &mut Vec<StepConstants>,
    scaling: Scaling,
) -> Result<(StepPlan, (usize, usize)), Error> {
    let mut plan = StepPlan::default();
    let (mut least, mut greatest) = (usize::MAX, 0);
    // Items of one group at one step count share constants: derive them
    // once (the clip schedule's `pow` is the costly part).
    let mut last: Option<(GroupId, u64)> = None;
    for (item, w) in items.iter().zip(work) {
        let id = item.id();
        let (index, p) = param_index(params, id)?;
        if stamps.mark(index, stamp) {
            return Err(Error::DuplicateParam(id));
        }
        (least, greatest) = (least.min(index), greatest.max(index));
        let (values, grads) = item.view();
        dtype(id, Buffer::Params, p.layout.params_dtype(), values.dtype())?;
        if values.len() != p.lanes() {
            return Err(Error::LengthMismatch {
                buffer: Buffer::Params,
                expected: p.lanes(),
                got: values.len(),
            });
        }
        let Some(grads) = grads else {
            *w = Work {
                index: index as u32,
                constants: Work::SKIP,
                start: plan.lanes,
                ..Work::default()
            };
            continue;
        };
        let group = &groups[p.group.0 as usize];
        if let super::Shape::Rows { rows, dim } = p.layout.shape() {
            let grads = row_grads(id, grads)?;
            let steps = match &p.state {
                Some(Stored::Rows(state)) => Some(state.steps()),
                _ => None,
            };
            sparse::validate_rows(grads, rows, dim, steps, &group.resolved())?;
            let lanes = match grads {
                RowGrads::Listed { rows, .. } => rows.len() * dim,
                RowGrads::Dense(values) => values.len(),
            };
            plan.tables = true;
            plan.new_states |= p.state.is_none();
            *w = Work {
                index: index as u32,
                constants: 0,
                start: plan.lanes,
                lanes,
                kind: Kind::Rows,
            };
            plan.lanes += lanes;
            continue;
        }
        let Grads::Dense(grads) = grads else {
            return Err(Error::LayoutMismatch {
                param: id,
                reason: "row-listed gradients are for row-sparse tables (Layout::rows)",
            });
        };
        dtype(id, Buffer::Grads, p.layout.grads_dtype(), grads.dtype())?;
        if grads.len() != p.lanes() {
            return Err(Error::LengthMismatch {
                buffer: Buffer::Grads,
                expected: p.lanes(),
                got: grads.len(),
            });
        }
        let step = match &p.state {
            Some(Stored::Plain(state)) => state.step(),
            Some(Stored::Typed { step, .. }) => *step,
            Some(Stored::Rows(_)) | None => {
                plan.new_states = true;
                0
            }
        };
        if last != Some((p.group, step)) {
            let hyper = group.resolved();
            plan.cautious |= hyper.caution != Caution::Off;
            constants.push(crate::prepare::constants(step, &hyper, scaling)?);
            last = Some((p.group, step));
        }
        *w = Work {
            index: index as u32,
            constants: constants.len() as u32 - 1,
            start: plan.lanes,
            lanes: p.lanes(),
            kind: if p.layout.is_plain() {
                Kind::Plain
            } else {
                Kind::Typed
            },
        };
        plan.lanes += p.lanes();
    }
    Ok((plan, (least, greatest)))
}

impl Adopt {
    /// [`validate`](Self::validate), on many items in parallel: on a step
    /// of at least [`PARALLEL_VALIDATION_ITEMS`] items, two halves are
    /// checked at once on the rayon pool (which also wakes the pool for the
    /// step); from [`WAKE_POOL_ITEMS`] a no-op task wakes the pool while
    /// this thread validates: a sleeping worker takes tens of microseconds
    /// to wake on a virtual machine, which is then overlapped with
    /// validation instead of delaying the parallel section. A fork/join
    /// allocates nothing.
    pub(crate) fn validate_waking_pool<T: StepItem>(
        &mut self,
        items: &[T],
        scaling: Scaling,
    ) -> Result<StepPlan, Error> {
        if items.len() >= WAKE_POOL_ITEMS && crate::parallel::threads() > 1 {
            if items.len() >= PARALLEL_VALIDATION_ITEMS {
                return self.validate_halves(items, scaling);
            }
            return crate::parallel::join(|| self.validate(items, scaling), || ()).0;
        }
        self.validate(items, scaling)
    }

    /// Checks every item and fills the step's scratch (`work`, `constants`);
    /// returns what the step has to do. Writes nothing but the scratch and
    /// the duplicate stamps.
    fn validate<T: StepItem>(&mut self, items: &[T], scaling: Scaling) -> Result<StepPlan, Error> {
        scaling.validate()?;
        let stamp = self.stamps.fresh();
        let s = &mut self.scratch;
        s.constants.clear();
        s.work.resize(items.len(), Work::default());
        let (plan, _) = check(
            &self.params,
            &self.groups,
            &self.stamps,
            stamp,
            items,
            &mut s.work,
            &mut s.constants,
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
    fn validate_halves<T: StepItem>(
        &mut self,
        items: &[T],
        scaling: Scaling,
    ) -> Result<StepPlan, Error> {
        scaling.validate()?;
        let (left_stamp, right_stamp) = (self.stamps.fresh(), self.stamps.fresh());
        let s = &mut self.scratch;
        s.constants.clear();
        s.right_constants.clear();
        s.work.resize(items.len(), Work::default());
        let mid = items.len() / 2;
        let (left_items, right_items) = items.split_at(mid);
        let (left_work, right_work) = s.work.split_at_mut(mid);
        let (params, groups, stamps) = (&self.params[..], &self.groups[..], &self.stamps);
        let (constants, right_constants) = (&mut s.constants, &mut s.right_constants);
        let (left, right) = crate::parallel::join(
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
                if self.stamps.mark(item.id().0 as usize, stamp) {
                    return Err(Error::DuplicateParam(item.id()));
                }
            }
        }
        // The right half's constants follow the left's, and its lanes too.
        let s = &mut self.scratch;
        let offset = s.constants.len() as u32;
        for w in &mut s.work[mid..] {
            if !w.is_skip() && w.kind != Kind::Rows {
                w.constants += offset;
            }
            w.start += left.lanes;
        }
        s.constants.extend_from_slice(&s.right_constants);
        Ok(left.join(right))
    }

    /// Plans every row-sparse table of the validated step (its state
    /// exists): coalesced rows and their constants into the scratch plans,
    /// each item's `constants` naming its plan and `lanes` its touched
    /// lanes. Cannot fail: validation checked everything.
    pub(crate) fn plan_tables<T: StepItem>(&mut self, items: &[T], scaling: Scaling) {
        let Adopt {
            groups,
            params,
            scratch,
            ..
        } = self;
        let mut t = 0;
        for (w, item) in scratch.work.iter_mut().zip(items) {
            if w.is_skip() || w.kind != Kind::Rows {
                continue;
            }
            if scratch.tables.len() <= t {
                scratch.tables.push(sparse::Plan::default());
            }
            let p = &mut params[w.index as usize];
            let hyper = groups[p.group.0 as usize].resolved();
            let Some(Stored::Rows(state)) = p.state.as_mut() else {
                unreachable!("tables get their state before they are planned");
            };
            let grads = row_grads(
                item.id(),
                item.view().1.expect("items with work have gradients"),
            )
            .expect("validated");
            let plan = &mut scratch.tables[t];
            sparse::plan_into(plan, grads, state, &hyper, scaling.inv_scale);
            w.constants = t as u32;
            w.lanes = plan.lanes(state.dim());
            t += 1;
        }
    }

    /// The caution pre-pass of dense items in cautious groups after their
    /// first step: each tensor's own mask count (a read-only pass), into
    /// constants of its own.
    pub(crate) fn caution_counts<T: StepItem>(&mut self, kernel: Kernel, items: &[T]) {
        let Adopt {
            params, scratch, ..
        } = self;
        for (w, item) in scratch.work.iter_mut().zip(items) {
            if w.is_skip() || w.kind == Kind::Rows {
                continue;
            }
            let mut k = scratch.constants[w.constants as usize];
            let state = params[w.index as usize]
                .state
                .as_ref()
                .expect("state created before the caution pass")
                .view();
            let (values, grads) = item.view();
            let Some(Grads::Dense(grads)) = grads else {
                continue;
            };
            // A master copy is what is stepped, and so what is counted.
            let values = state.master.map_or(values, Lanes::F32);
            let before = k.caution_scale;
            crate::prepare::caution(&mut k, w.lanes, None, |k| {
                count(kernel, values, grads, state.exp_avg, state.exp_avg_sq, k)
            });
            if k.caution_scale != before {
                scratch.constants.push(k);
                w.constants = scratch.constants.len() as u32 - 1;
            }
        }
    }
}

/// The caution count of one dense buffer of any storage, across the pool
/// when large.
fn count(
    kernel: Kernel,
    p: Lanes<'_>,
    g: Lanes<'_>,
    m: Lanes<'_>,
    v: Lanes<'_>,
    k: &StepConstants,
) -> u64 {
    match (p, g, m, v) {
        (Lanes::F32(p), Lanes::F32(g), Lanes::F32(m), Lanes::F32(v)) => {
            crate::parallel::count(kernel, p, g, m, v, k)
        }
        #[cfg(feature = "half")]
        (p, g, m, v) => crate::precision::count_lanes(kernel, p, g, m, v, k),
    }
}
