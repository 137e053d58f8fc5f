//! Running a validated step: runs of small dense f32 items through the
//! kernel in one call each, every other item on its own (split across the
//! pool when large), the items themselves split into one contiguous run of
//! about equal lanes per pool thread.

use super::item::{Grads, StepItem};
use super::stored::{StepsMut, Stored};
use super::validate::{Kind, Work};
use super::{Adopt, Param};
use crate::hyper::StepConstants;
use crate::kernel::{Job, Kernel};
use crate::lanes::{Lanes, LanesMut};
use crate::sparse::{self, RowGrads};

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

// SAFETY: a `ParamsPtr` is only dereferenced at indices that validation
// proved distinct (duplicate ids are refused, across the halves of a
// parallel validation too), so no two threads touch the same `Param`, and
// `Param` itself is `Send`.
unsafe impl Send for ParamsPtr {}
// SAFETY: as above: shared access only hands out disjoint elements.
unsafe impl Sync for ParamsPtr {}

/// What every task of a step shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    kernel: Kernel,
    params: ParamsPtr,
    constants: &'a [StepConstants],
    tables: &'a [sparse::Plan],
}

impl Adopt {
    /// Runs the kernels over the validated items, in parallel when large;
    /// each item advances its parameter's step counts.
    pub(crate) fn run<T: StepItem>(&mut self, kernel: Kernel, items: &mut [T], lanes: usize) {
        let ctx = Ctx {
            kernel,
            params: ParamsPtr(self.params.as_mut_ptr()),
            constants: &self.scratch.constants,
            tables: &self.scratch.tables,
        };
        let work = &self.scratch.work[..];
        if crate::parallel::worth_splitting(lanes) {
            // SAFETY: `work` is validation's for these items (see `jobs`);
            // `split` partitions them.
            unsafe { split(ctx, items, work, crate::parallel::threads(), 0, lanes) };
        } else {
            // SAFETY: as above.
            unsafe { run_part(ctx, items, work) };
        }
    }
}

/// Steps `items` (lanes `start..end` of the step) as `parts` contiguous
/// runs of about equal lanes, one per pool thread: the first run on this
/// thread, the rest by fork/join halving, so each thread keeps stepping the
/// same buffers from one step to the next (they stay in its cache).
///
/// # Safety
///
/// As [`jobs`].
unsafe fn split<T: StepItem>(
    ctx: Ctx<'_>,
    items: &mut [T],
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
        crate::parallel::join(
            // SAFETY: the two halves partition the items (the caller's
            // contract holds for each).
            || unsafe { split(ctx, left_items, left_work, left, start, middle) },
            // SAFETY: as above.
            || unsafe { split(ctx, right_items, right_work, parts - left, middle, end) },
        );
        return;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { run_part(ctx, items, work) }
}

/// Steps a contiguous run of items: consecutive small dense f32 items go to
/// the kernel in one call (no per-buffer dispatch), every other item on its
/// own, split across the pool when large. (Kept apart: a filter in the
/// batched loop that could call into the pool made that loop's code slower;
/// see BENCHMARKS.md.)
///
/// # Safety
///
/// As [`jobs`].
unsafe fn run_part<T: StepItem>(ctx: Ctx<'_>, items: &mut [T], work: &[Work]) {
    let mut begin = 0;
    for i in 0..items.len() {
        let w = work[i];
        if w.is_skip() || (w.kind == Kind::Plain && w.lanes < crate::PARALLEL_THRESHOLD) {
            continue;
        }
        // SAFETY (both calls): guaranteed by the caller, for sub-slices.
        let batch = unsafe { jobs(ctx, &mut items[begin..i], &work[begin..i]) };
        ctx.kernel.run_each(batch);
        // SAFETY: as above, for this item alone.
        unsafe { step_one(ctx, &mut items[i], w) };
        begin = i + 1;
    }
    // SAFETY: as above.
    let rest = unsafe { jobs(ctx, &mut items[begin..], &work[begin..]) };
    ctx.kernel.run_each(rest);
}

/// The kernel jobs of the validated plain items among `items` (the others
/// are stepped by [`step_one`]); each advances its parameter's step count
/// as it is produced.
///
/// # Safety
///
/// `work` is validation's for these `items` (so every index is in bounds of
/// the parameters and distinct from every other item's: repeated ids are
/// refused, across halves too, and every stepped item has state); no other
/// reference to these parameters exists while the jobs live.
unsafe fn jobs<'a, T: StepItem>(
    ctx: Ctx<'a>,
    items: &'a mut [T],
    work: &'a [Work],
) -> impl Iterator<Item = Job<'a>> {
    items.iter_mut().zip(work).filter_map(move |(item, w)| {
        if w.is_skip() || w.kind != Kind::Plain {
            return None;
        }
        // SAFETY: guaranteed by the caller: the only reference to this
        // `Param` while the step runs.
        let param = unsafe { ctx.params.get(w.index as usize) };
        let (LanesMut::F32(p), Some(Grads::Dense(Lanes::F32(g)))) = item.split() else {
            unreachable!("validated: a plain item has f32 parameters and gradients");
        };
        let Some(Stored::Plain(state)) = param.state.as_mut() else {
            unreachable!("validated: a plain item has f32 state");
        };
        let s = state.view_mut();
        *s.step += 1;
        Some(Job {
            p,
            g,
            m: s.exp_avg,
            v: s.exp_avg_sq,
            k: &ctx.constants[w.constants as usize],
        })
    })
}

/// Steps one validated item that is not batched: a large plain one, a
/// half-precision one, or a table.
///
/// # Safety
///
/// As [`jobs`], for this item.
unsafe fn step_one<T: StepItem>(ctx: Ctx<'_>, item: &mut T, w: Work) {
    // SAFETY: guaranteed by the caller.
    let param = unsafe { ctx.params.get(w.index as usize) };
    #[cfg_attr(not(feature = "half"), allow(unused_variables))]
    let rounding = param.layout.rounding_mode();
    let state = param
        .state
        .as_mut()
        .expect("state created before the kernel runs");
    let (p, grads) = item.split();
    let grads = grads.expect("items with work have gradients");
    match (w.kind, state, grads) {
        (Kind::Rows, Stored::Rows(state), grads) => {
            #[allow(irrefutable_let_patterns)] // only f32 lanes without `half`
            let LanesMut::F32(table) = p else {
                unreachable!("validated: tables are f32");
            };
            let grads = match grads {
                Grads::Rows { rows, values } => RowGrads::Listed { rows, values },
                Grads::Dense(Lanes::F32(values)) => RowGrads::Dense(values),
                #[allow(unreachable_patterns)] // only f32 lanes without `half`
                Grads::Dense(_) => unreachable!("validated: table gradients are f32"),
            };
            sparse::execute(
                ctx.kernel,
                table,
                grads,
                state,
                &ctx.tables[w.constants as usize],
            );
        }
        (_, state, Grads::Dense(g)) => {
            let k = &ctx.constants[w.constants as usize];
            let s = state.view_mut();
            let StepsMut::Dense(step) = s.steps else {
                unreachable!("validated: a dense item has one step count");
            };
            match (p, g, s.exp_avg, s.exp_avg_sq, s.master) {
                (LanesMut::F32(p), Lanes::F32(g), LanesMut::F32(m), LanesMut::F32(v), None) => {
                    crate::parallel::run(ctx.kernel, p, g, m, v, k)
                }
                #[cfg(feature = "half")]
                (p, g, m, v, None) => {
                    crate::precision::step_lanes(ctx.kernel, p, g, m, v, k, rounding)
                }
                #[cfg(feature = "half")]
                (p, g, m, v, Some(master)) => {
                    crate::precision::step_master_lanes(ctx.kernel, master, p, g, m, v, k, rounding)
                }
                #[cfg(not(feature = "half"))]
                _ => unreachable!("only f32 layouts exist without the half feature"),
            }
            *step += 1;
        }
        _ => unreachable!("validated: the item's gradient fits its layout"),
    }
}
