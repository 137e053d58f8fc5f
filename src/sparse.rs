//! Row-sparse steps for embedding tables (needs `alloc`).
//!
//! An embedding table of `rows × dim` f32 lanes, row-major, usually receives
//! gradients for a few rows per step: the rows a batch looked up. As
//! PyTorch's `SparseAdam` does for Adam, [`adopt_step_rows`] steps only the
//! listed rows, each with its own step count:
//!
//! - rows not listed are untouched: their `m` and `v` do not decay and their
//!   step count does not advance;
//! - a row's first appearance only initialises its `v = g·g` (ADOPT's first
//!   step), and its clip schedule `c(t)` follows its own count `t`;
//! - every stepped row is **bit-identical** to a dense
//!   [`adopt_step`](crate::adopt_step) of that row alone, with that row's
//!   `m`, `v` and step count (property-tested against
//!   [`reference`](mod@crate::reference));
//! - duplicate row indices are summed before the update, as PyTorch
//!   coalesces a sparse gradient.
//!
//! ```
//! use adopt::{adopt_step_rows, Hyper, SparseState};
//!
//! let (rows, dim) = (1000, 4);
//! let mut table = vec![0.5_f32; rows * dim];
//! let mut state = SparseState::new(rows, dim);
//! let hyper = Hyper { lr: 1e-2, ..Hyper::default() };
//! // A batch looked up rows 7, 42 and 7 again: one gradient block per lookup.
//! let touched = [7, 42, 7];
//! let grads = [0.1_f32; 3 * 4];
//! adopt_step_rows(&mut table, &touched, &grads, &mut state, &hyper)?; // initialises v
//! adopt_step_rows(&mut table, &touched, &grads, &mut state, &hyper)?; // moves
//! assert_eq!((state.row_step(7), state.row_step(42), state.row_step(0)), (2, 2, 0));
//! assert!(table[7 * dim] < 0.5 && table[42 * dim] < 0.5);
//! assert_eq!(table[0], 0.5); // untouched
//! # Ok::<(), adopt::Error>(())
//! ```
//!
//! # Cost
//!
//! A step reads and writes only the touched rows: per touched lane it moves
//! 28 bytes (reads p, g, m, v; writes p, m, v), plus 16 bytes per touched row
//! for its step count and 4 for its index, and the coalescing pass over the
//! row indices; each call allocates its plan, a small task per distinct
//! row. When `rows` is strictly increasing there is nothing to
//! coalesce; otherwise duplicates are found with a one-bit-per-row mark held
//! in the state (no sort unless there are duplicates, and then only of the
//! duplicated lookups). Touched rows are scattered over the table, so the
//! step is bound by memory latency rather than bandwidth: on x86-64 it
//! prefetches the rows of the next tasks while it computes. Large steps (at
//! least [`PARALLEL_THRESHOLD`](crate::PARALLEL_THRESHOLD) touched lanes)
//! are split over rows across the rayon pool, bit-identical to a serial
//! step.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::error::{Buffer, Error};
use crate::hyper::{Hyper, Scaling, StepConstants};
use crate::kernel::Kernel;

/// The optimizer state of a row-sparse table: `m` and `v` for every lane,
/// and a step count for every row (needs `alloc`).
///
/// `exp_avg` (`m`) and `exp_avg_sq` (`v`) are `rows × dim` lanes, row-major,
/// laid out like the table. A fresh state has zero moments and every row at
/// step 0.
///
/// ```
/// use adopt::SparseState;
/// let state = SparseState::new(3, 2);
/// assert_eq!((state.rows(), state.dim()), (3, 2));
/// assert_eq!(state.exp_avg().len(), 6);
/// assert_eq!(state.row_step(2), 0);
/// ```
#[derive(Clone, PartialEq)]
pub struct SparseState {
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    steps: Vec<u64>,
    dim: usize,
    /// Scratch for finding duplicate rows: one bit per row, all zero
    /// between calls (so it takes no part in equality).
    seen: Vec<u64>,
}

impl fmt::Debug for SparseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseState")
            .field("rows", &self.rows())
            .field("dim", &self.dim)
            .field("exp_avg", &self.exp_avg)
            .field("exp_avg_sq", &self.exp_avg_sq)
            .field("steps", &self.steps)
            .finish()
    }
}

impl SparseState {
    /// A fresh state for a table of `rows × dim` lanes: zero moments, every
    /// row at step 0.
    ///
    /// # Panics
    ///
    /// If `rows × dim` overflows `usize`.
    pub fn new(rows: usize, dim: usize) -> Self {
        let lanes = rows
            .checked_mul(dim)
            .expect("SparseState::new: rows × dim overflows usize");
        SparseState {
            exp_avg: vec![0.0; lanes],
            exp_avg_sq: vec![0.0; lanes],
            steps: vec![0; rows],
            dim,
            seen: vec![0; rows.div_ceil(64)],
        }
    }

    /// A state from saved parts: `exp_avg` and `exp_avg_sq` of `rows × dim`
    /// lanes, with `rows = steps.len()`.
    ///
    /// Returns [`Error::LengthMismatch`] naming the moment whose length is
    /// not `steps.len() × dim`.
    ///
    /// ```
    /// use adopt::SparseState;
    /// let state = SparseState::from_parts(vec![0.0; 6], vec![1.0; 6], vec![0, 5, 0], 2)?;
    /// assert_eq!(state.row_step(1), 5);
    /// assert!(SparseState::from_parts(vec![0.0; 5], vec![1.0; 6], vec![0; 3], 2).is_err());
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn from_parts(
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
        steps: Vec<u64>,
        dim: usize,
    ) -> Result<Self, Error> {
        let lanes = steps.len().saturating_mul(dim);
        for (buffer, got) in [
            (Buffer::ExpAvg, exp_avg.len()),
            (Buffer::ExpAvgSq, exp_avg_sq.len()),
        ] {
            if got != lanes {
                return Err(Error::LengthMismatch {
                    buffer,
                    expected: lanes,
                    got,
                });
            }
        }
        let seen = vec![0; steps.len().div_ceil(64)];
        Ok(SparseState {
            exp_avg,
            exp_avg_sq,
            steps,
            dim,
            seen,
        })
    }

    /// Takes the state apart into `(exp_avg, exp_avg_sq, steps)`; `dim` is
    /// [`dim`](Self::dim).
    pub fn into_parts(self) -> (Vec<f32>, Vec<f32>, Vec<u64>) {
        (self.exp_avg, self.exp_avg_sq, self.steps)
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.steps.len()
    }

    /// The lanes per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The first moment `m` of every lane, row-major.
    pub fn exp_avg(&self) -> &[f32] {
        &self.exp_avg
    }

    /// The second moment `v` of every lane, row-major.
    pub fn exp_avg_sq(&self) -> &[f32] {
        &self.exp_avg_sq
    }

    /// The step count of every row.
    pub fn steps(&self) -> &[u64] {
        &self.steps
    }

    /// The number of steps row `row` has taken.
    ///
    /// # Panics
    ///
    /// If `row >= self.rows()`.
    pub fn row_step(&self, row: usize) -> u64 {
        self.steps[row]
    }

    /// The first moment `m` of row `row`.
    ///
    /// # Panics
    ///
    /// If `row >= self.rows()`.
    pub fn row_exp_avg(&self, row: usize) -> &[f32] {
        &self.exp_avg[row * self.dim..][..self.dim]
    }

    /// The second moment `v` of row `row`.
    ///
    /// # Panics
    ///
    /// If `row >= self.rows()`.
    pub fn row_exp_avg_sq(&self, row: usize) -> &[f32] {
        &self.exp_avg_sq[row * self.dim..][..self.dim]
    }

    /// The moments and the step counts, writable.
    pub(crate) fn parts_mut(&mut self) -> (&mut [f32], &mut [f32], &mut [u64]) {
        (&mut self.exp_avg, &mut self.exp_avg_sq, &mut self.steps)
    }

    /// Marks `row` seen; returns whether it already was.
    fn test_and_set(&mut self, row: u32) -> bool {
        let (word, bit) = ((row / 64) as usize, 1_u64 << (row % 64));
        let was = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        was
    }

    fn is_set(&self, row: u32) -> bool {
        self.seen[(row / 64) as usize] & (1_u64 << (row % 64)) != 0
    }

    /// Clears the marks of `rows` (whole words: every bit set in them was set
    /// by one of `rows`).
    fn clear(&mut self, rows: &[u32]) {
        for &row in rows {
            self.seen[(row / 64) as usize] = 0;
        }
    }
}

/// Everything a row-sparse step can be told besides buffers and
/// hyperparameters.
///
/// ```
/// use adopt::{Kernel, Scaling, SparseOptions};
/// let options = SparseOptions { kernel: Some(Kernel::Portable), ..SparseOptions::default() };
/// assert_eq!(options.scaling, Scaling::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SparseOptions {
    /// The kernel; `None` for [`Kernel::try_active`].
    pub kernel: Option<Kernel>,
    /// Mixed-precision scaling: `inv_scale` multiplies every gradient lane
    /// (after duplicates are summed), and `found_inf` skips the step,
    /// changing nothing (inputs are still validated).
    pub scaling: Scaling,
}

/// Where a task's gradient block lives.
#[derive(Clone, Copy)]
enum Block {
    /// Block `i` of the caller's gradients (a row listed once).
    Grads(usize),
    /// Block `i` of the summed duplicates.
    Summed(usize),
}

/// One row to step: its index, its gradient and its constants.
#[derive(Clone, Copy)]
struct Task {
    row: u32,
    block: Block,
    /// Index into [`Plan::constants`].
    constants: u32,
}

/// A validated step: nothing is left that can fail. Reused from step to
/// step by the optimizer, so its vectors keep their capacity.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    /// Distinct rows, in no particular order.
    tasks: Vec<Task>,
    /// The sums of duplicated rows' blocks, `dim` lanes each.
    summed: Vec<f32>,
    /// The constants of the step counts the rows are at (a step count may
    /// appear more than once).
    constants: Vec<StepConstants>,
    /// Scratch of the coalescing pass: the lookups of repeated rows.
    lookups: Vec<(u32, usize)>,
    /// Scratch of the coalescing pass: rows seen before.
    repeated: Vec<u32>,
}

impl core::fmt::Debug for Task {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "row {}", self.row)
    }
}

impl Plan {
    /// The lanes the plan steps.
    pub(crate) fn lanes(&self, dim: usize) -> usize {
        self.tasks.len() * dim
    }
}

/// A table step's gradient: blocks for listed rows, or one dense gradient
/// for the whole table (every row steps).
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowGrads<'a> {
    /// One block of `dim` lanes per listed row, in the same order.
    Listed {
        /// Row indices, in any order, possibly repeated.
        rows: &'a [u32],
        /// The blocks.
        values: &'a [f32],
    },
    /// `rows × dim` lanes: every row, once.
    Dense(&'a [f32]),
}

impl RowGrads<'_> {
    /// The gradient lanes, as laid out by the caller.
    fn values(&self) -> &[f32] {
        match *self {
            RowGrads::Listed { values, .. } | RowGrads::Dense(values) => values,
        }
    }
}

/// The constants of a row at `step`, or why it cannot step.
fn row_constants(hyper: &Hyper, step: u64) -> Result<StepConstants, Error> {
    crate::prepare::constants(step, hyper, Scaling::default())
}

/// A small direct-mapped cache of the step counts whose constants were
/// derived: rows are usually at few distinct counts, so each count's clip
/// schedule is evaluated about once.
struct StepCache([Option<(u64, u32)>; 64]);

impl StepCache {
    fn new() -> Self {
        StepCache([None; 64])
    }

    /// The index `make` gave `step` before, or a new one from `make`.
    fn get_or(
        &mut self,
        step: u64,
        make: impl FnOnce() -> Result<u32, Error>,
    ) -> Result<u32, Error> {
        let slot = &mut self.0[step as usize % 64];
        match *slot {
            Some((cached, index)) if cached == step => Ok(index),
            _ => {
                let index = make()?;
                *slot = Some((step, index));
                Ok(index)
            }
        }
    }
}

/// Validates a table step's gradient against the state, reading only:
/// one block per listed row ([`Error::RowBlocksMismatch`]; a dense
/// gradient must have the table's lanes, [`Error::LengthMismatch`]), the
/// hyperparameters, every listed row in range ([`Error::RowOutOfRange`],
/// the first), then, for the first row in listed order that cannot step,
/// its [`Error::StepOverflow`] or [`Error::InvalidClip`].
pub(crate) fn validate(
    grads: RowGrads<'_>,
    state: &SparseState,
    hyper: &Hyper,
) -> Result<(), Error> {
    validate_rows(grads, state.rows(), state.dim, Some(&state.steps), hyper)
}

/// [`validate`] for a table of `rows × dim` lanes whose rows are at the
/// step counts `steps` (`None`: a table without state yet, every row at
/// step 0).
pub(crate) fn validate_rows(
    grads: RowGrads<'_>,
    table_rows: usize,
    dim: usize,
    steps: Option<&[u64]>,
    hyper: &Hyper,
) -> Result<(), Error> {
    let lanes = table_rows.saturating_mul(dim);
    match grads {
        RowGrads::Listed { rows, values } => {
            if rows.len().checked_mul(dim) != Some(values.len()) {
                return Err(Error::RowBlocksMismatch {
                    rows: rows.len(),
                    dim,
                    got: values.len(),
                });
            }
        }
        RowGrads::Dense(values) => {
            if values.len() != lanes {
                return Err(Error::LengthMismatch {
                    buffer: Buffer::Grads,
                    expected: lanes,
                    got: values.len(),
                });
            }
        }
    }
    hyper.validate()?;
    let Some(steps) = steps else {
        // A fresh table: every row at step 0.
        if let RowGrads::Listed { rows, .. } = grads
            && let Some(&row) = rows.iter().find(|&&r| r as usize >= table_rows)
        {
            return Err(Error::RowOutOfRange {
                row,
                rows: table_rows,
            });
        }
        return row_constants(hyper, 0).map(|_| ());
    };
    let mut cache = StepCache::new();
    let mut check = |row: usize| {
        let step = steps[row];
        cache.get_or(step, || row_constants(hyper, step).map(|_| 0))
    };
    match grads {
        RowGrads::Listed { rows, .. } => {
            if let Some(&row) = rows.iter().find(|&&r| r as usize >= table_rows) {
                return Err(Error::RowOutOfRange {
                    row,
                    rows: table_rows,
                });
            }
            for &row in rows {
                check(row as usize)?;
            }
        }
        RowGrads::Dense(_) => {
            for row in 0..table_rows {
                check(row)?;
            }
        }
    }
    Ok(())
}

/// Plans a validated step into `plan`: one task per distinct row, the
/// blocks of rows listed more than once summed in f32 in their order of
/// appearance, and the constants of each row's step count with
/// `inv_scale`. The duplicate marks it sets in the state are cleared
/// before it returns.
pub(crate) fn plan_into(
    plan: &mut Plan,
    grads: RowGrads<'_>,
    state: &mut SparseState,
    hyper: &Hyper,
    inv_scale: f32,
) {
    plan.tasks.clear();
    plan.summed.clear();
    plan.constants.clear();
    match grads {
        RowGrads::Listed { rows, values } => coalesce(plan, rows, values, state),
        RowGrads::Dense(_) => plan.tasks.extend((0..state.rows()).map(|row| Task {
            row: row as u32,
            block: Block::Grads(row),
            constants: 0,
        })),
    }
    let mut cache = StepCache::new();
    let Plan {
        tasks, constants, ..
    } = plan;
    for task in tasks.iter_mut() {
        let step = state.steps[task.row as usize];
        task.constants = cache
            .get_or(step, || {
                let mut k = row_constants(hyper, step)?;
                k.inv_scale = inv_scale;
                constants.push(k);
                Ok(constants.len() as u32 - 1)
            })
            .expect("validated");
    }
}

/// Fills `plan.tasks` and `plan.summed` for listed rows: one task per
/// distinct row; the blocks of rows listed more than once are summed in
/// f32, in their order of appearance in `rows`. Every row must be in range.
fn coalesce(plan: &mut Plan, rows: &[u32], grads: &[f32], state: &mut SparseState) {
    let dim = state.dim;
    let task = |i: usize| Task {
        row: rows[i],
        block: Block::Grads(i),
        constants: 0,
    };
    if rows.windows(2).all(|w| w[0] < w[1]) {
        plan.tasks.extend((0..rows.len()).map(task));
        return;
    }
    // Mark every row; note the ones seen before.
    let repeated = &mut plan.repeated;
    repeated.clear();
    for &row in rows {
        if state.test_and_set(row) {
            repeated.push(row);
        }
    }
    state.clear(rows);
    if repeated.is_empty() {
        plan.tasks.extend((0..rows.len()).map(task));
        return;
    }
    // Mark only the repeated rows: their lookups are gathered and summed,
    // the others step straight from the caller's blocks.
    for &row in repeated.iter() {
        state.test_and_set(row);
    }
    let lookups = &mut plan.lookups;
    lookups.clear();
    for (i, &row) in rows.iter().enumerate() {
        if state.is_set(row) {
            lookups.push((row, i));
        } else {
            plan.tasks.push(task(i));
        }
    }
    state.clear(repeated);
    // By row, then by position: each row's blocks in order of appearance.
    lookups.sort_unstable();
    for group in lookups.chunk_by(|a, b| a.0 == b.0) {
        let at = plan.summed.len();
        let block = |i: usize| &grads[i * dim..][..dim];
        plan.summed.extend_from_slice(block(group[0].1));
        for &(_, i) in &group[1..] {
            for (sum, &g) in plan.summed[at..].iter_mut().zip(block(i)) {
                *sum += g;
            }
        }
        plan.tasks.push(Task {
            row: group[0].0,
            block: Block::Summed(at / dim.max(1)),
            constants: 0,
        });
    }
}

/// Raw access to the rows of the table and the state, for stepping distinct
/// rows from several threads.
struct RowPtrs {
    params: *mut f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    steps: *mut u64,
}

// SAFETY: `RowPtrs` is only built in `execute`, from exclusive borrows held
// for the whole parallel section, and each thread dereferences it only at
// rows no other task has (the tasks' rows are distinct).
unsafe impl Sync for RowPtrs {}

/// How many tasks ahead [`execute`] prefetches rows: far enough for a row's
/// memory latency to overlap the rows before it, near enough that the
/// lines are still in cache (chosen by measurement, see BENCHMARKS.md).
const PREFETCH_AHEAD: usize = 4;

impl RowPtrs {
    /// Hints the CPU to fetch row `row` into cache (see [`prefetch`]).
    #[inline(always)]
    fn prefetch(&self, row: usize, dim: usize) {
        for base in [self.params, self.exp_avg, self.exp_avg_sq] {
            prefetch(base.wrapping_add(row * dim), dim);
        }
        prefetch(self.steps.wrapping_add(row).cast(), 1);
    }

    /// Row `row`'s parameters, `m`, `v` (each `dim` lanes) and step count.
    ///
    /// # Safety
    ///
    /// The pointers must come from live exclusive borrows of a table and
    /// state of more than `row` rows of `dim` lanes, and nothing else may
    /// access row `row` while the returned borrows live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, row: usize, dim: usize) -> (&mut [f32], &mut [f32], &mut [f32], &mut u64) {
        // SAFETY: the range `row·dim .. row·dim + dim` and `steps[row]` are
        // in bounds of their allocations, and unaliased (the caller's
        // contract).
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.params.add(row * dim), dim),
                core::slice::from_raw_parts_mut(self.exp_avg.add(row * dim), dim),
                core::slice::from_raw_parts_mut(self.exp_avg_sq.add(row * dim), dim),
                &mut *self.steps.add(row),
            )
        }
    }
}

/// Hints the CPU to fetch the cache lines of `lanes` f32 lanes from `data`
/// (no effect where the crate has no prefetch instruction). Reads nothing:
/// the addresses are only computed, with wrapping arithmetic, so any
/// pointer and length are accepted.
#[inline(always)]
fn prefetch(data: *const f32, lanes: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        const LINE: usize = 64 / core::mem::size_of::<f32>();
        let hint = |lane: usize| {
            // SAFETY: SSE, which `prefetcht0` belongs to, is part of the
            // x86-64 baseline, so every x86-64 CPU runs it; a prefetch
            // accesses no memory and accepts any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(data.wrapping_add(lane).cast()) }
        };
        for lane in (0..lanes).step_by(LINE) {
            hint(lane);
        }
        // The last lane's line, which the stride misses when `data` is
        // not line-aligned.
        if lanes > 0 {
            hint(lanes - 1);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (data, lanes);
}

/// Steps a validated plan of `grads` over `table` (`state`'s shape), across
/// the pool when large; each stepped row's step count advances.
pub(crate) fn execute(
    kernel: Kernel,
    table: &mut [f32],
    grads: RowGrads<'_>,
    state: &mut SparseState,
    plan: &Plan,
) {
    let dim = state.dim;
    let values = grads.values();
    let ptrs = RowPtrs {
        params: table.as_mut_ptr(),
        exp_avg: state.exp_avg.as_mut_ptr(),
        exp_avg_sq: state.exp_avg_sq.as_mut_ptr(),
        steps: state.steps.as_mut_ptr(),
    };
    let run = |tasks: &[Task]| {
        for (i, task) in tasks.iter().enumerate() {
            // The rows are scattered over the table: fetch a later task's
            // rows while this one computes, so their memory latency (and
            // TLB misses) overlap.
            if let Some(ahead) = tasks.get(i + PREFETCH_AHEAD) {
                ptrs.prefetch(ahead.row as usize, dim);
            }
            let g = match task.block {
                Block::Grads(i) => &values[i * dim..][..dim],
                Block::Summed(i) => &plan.summed[i * dim..][..dim],
            };
            // SAFETY: `validate` checked that every row is below
            // `state.rows()` and the caller that the table, `exp_avg` and
            // `exp_avg_sq` all have `rows × dim` lanes; `plan_into` made the
            // rows of the tasks distinct, so no two tasks (and no two
            // threads) get the same row; `ptrs` comes from exclusive borrows
            // that outlive this closure and are not otherwise used while it
            // runs.
            let (p, m, v, step) = unsafe { ptrs.row(task.row as usize, dim) };
            let mut k = plan.constants[task.constants as usize];
            // Each row is its own tensor: the mask is counted over it.
            crate::prepare::caution(&mut k, dim, None, |k| kernel.count(p, g, m, v, k));
            kernel.run(p, g, m, v, &k);
            *step += 1;
        }
    };
    crate::parallel::for_each_task_chunk(&plan.tasks, dim, run);
}

/// One ADOPT step of the listed rows of an embedding table.
///
/// `table` holds `state.rows() × state.dim()` lanes, row-major. `rows` lists
/// the rows the batch touched, in any order and possibly repeated; `grads`
/// holds one block of `state.dim()` lanes per entry of `rows`, in the same
/// order. Each listed row is stepped once, with its own step count, exactly
/// as a dense [`adopt_step`](crate::adopt_step) of that row alone would step
/// it; rows not listed are not read or written. See the
/// [module documentation](self).
///
/// **Duplicates.** The blocks of a row listed more than once are summed in
/// f32 in their order of appearance in `rows`, then the row steps once.
/// PyTorch's `coalesce` also sums duplicates in f32, in the order its sort
/// of the indices leaves them; for a row listed two times the sum is the
/// same, for three or more the last bit may differ.
///
/// **Errors.** Checked in this order, before anything is written; on error
/// the table, the moments and every step count are unchanged:
/// [`Error::KernelUnavailable`] (with [`adopt_step_rows_ext`]);
/// [`Error::TableMismatch`] if `table` does not have `state.rows() ×
/// state.dim()` lanes; [`Error::RowBlocksMismatch`] if
/// `grads.len() != rows.len() × dim`; [`Error::InvalidHyper`] from
/// [`Hyper::validate`]; [`Error::RowOutOfRange`] for the first listed row
/// `>= state.rows()`; then, for the first listed row that cannot step,
/// [`Error::StepOverflow`] if its step count is `u64::MAX` or
/// [`Error::InvalidClip`] if the clip schedule is negative or NaN at its
/// count; last, [`Error::InvalidHyper`] for an invalid
/// [`Scaling::inv_scale`] (with [`adopt_step_rows_ext`]).
///
/// **Cautious masking** ([`Hyper::caution`]) treats each row as its own
/// tensor: the mask is counted over the row's `dim` lanes, as a dense step
/// of that row would.
///
/// ```
/// use adopt::{adopt_step_rows, Error, Hyper, SparseState};
/// let mut table = vec![1.0_f32; 10 * 2];
/// let mut state = SparseState::new(10, 2);
/// let err = adopt_step_rows(&mut table, &[3, 10], &[0.5; 4], &mut state, &Hyper::default());
/// assert_eq!(err, Err(Error::RowOutOfRange { row: 10, rows: 10 }));
/// assert_eq!(state.row_step(3), 0); // nothing changed
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn adopt_step_rows(
    table: &mut [f32],
    rows: &[u32],
    grads: &[f32],
    state: &mut SparseState,
    hyper: &Hyper,
) -> Result<(), Error> {
    adopt_step_rows_ext(table, rows, grads, state, hyper, &SparseOptions::default())
}

/// [`adopt_step_rows`] with [`SparseOptions`]: a chosen kernel and
/// mixed-precision [`Scaling`].
///
/// ```
/// use adopt::{adopt_step_rows_ext, Hyper, Scaling, SparseOptions, SparseState};
/// let mut table = vec![1.0_f32; 4 * 3];
/// let mut state = SparseState::new(4, 3);
/// let options = SparseOptions {
///     scaling: Scaling { inv_scale: 0.5, found_inf: false },
///     ..SparseOptions::default()
/// };
/// adopt_step_rows_ext(&mut table, &[2], &[4.0; 3], &mut state, &Hyper::default(), &options)?;
/// assert_eq!(state.row_exp_avg_sq(2), &[4.0; 3]); // (4 · 0.5)²
/// # Ok::<(), adopt::Error>(())
/// ```
pub fn adopt_step_rows_ext(
    table: &mut [f32],
    rows: &[u32],
    grads: &[f32],
    state: &mut SparseState,
    hyper: &Hyper,
    options: &SparseOptions,
) -> Result<(), Error> {
    let kernel = crate::prepare::kernel(options.kernel)?;
    let dim = state.dim;
    if Some(table.len()) != state.rows().checked_mul(dim) {
        return Err(Error::TableMismatch {
            rows: state.rows(),
            dim,
            got: table.len(),
        });
    }
    let grads = RowGrads::Listed {
        rows,
        values: grads,
    };
    validate(grads, state, hyper)?;
    options.scaling.validate()?;
    if options.scaling.found_inf {
        return Ok(());
    }
    let mut plan = Plan::default();
    plan_into(&mut plan, grads, state, hyper, options.scaling.inv_scale);
    execute(kernel, table, grads, state, &plan);
    Ok(())
}
