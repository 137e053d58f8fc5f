//! Optimizer state: the moments `m`, `v` and the step count.

#[cfg(feature = "alloc")]
use alloc::{vec, vec::Vec};

/// The state of one parameter buffer, owned (needs the `alloc` feature).
///
/// `exp_avg` is the first moment `m`, `exp_avg_sq` the second moment `v`, as
/// the reference names them; `step` counts the steps already taken.
///
/// ```
/// use adopt::{adopt_step, Hyper, State};
/// let mut params = vec![0.5_f32, -1.0];
/// let mut state = State::new(params.len());
/// adopt_step(&mut params, &[0.25, 2.0], &mut state, &Hyper::default())?;
/// // The first step only records v = g·g.
/// assert_eq!(state.exp_avg_sq(), &[0.0625, 4.0]);
/// assert_eq!(params, vec![0.5, -1.0]);
/// assert_eq!(state.step(), 1);
/// # Ok::<(), adopt::Error>(())
/// ```
///
/// With the `serde` feature, `State` serializes as its three fields
/// `exp_avg`, `exp_avg_sq` and `step` (formats without NaN and infinities,
/// such as JSON, cannot hold every state; the crate's own
/// [`checkpoint`](crate::checkpoint) format holds any).
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct State {
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
}

#[cfg(feature = "alloc")]
impl State {
    /// A fresh state for `lanes` parameters: zero moments, no steps taken.
    pub fn new(lanes: usize) -> Self {
        State {
            exp_avg: vec![0.0; lanes],
            exp_avg_sq: vec![0.0; lanes],
            step: 0,
        }
    }

    /// `count` states, every first moment allocated before any second
    /// moment: `exp_avg(i)` and `exp_avg_sq(i)` build state `i`'s moments,
    /// `step(i)` its step count.
    ///
    /// Allocated one after another, the first moments of many small states
    /// usually lie in order in memory, and so do the second moments, so a
    /// step over all of them reads two sequential streams the hardware
    /// prefetcher follows, where states allocated one at a time interleave
    /// the two (measured in BENCHMARKS.md). Only the layout differs, never
    /// the values.
    pub(crate) fn many(
        count: usize,
        exp_avg: impl FnMut(usize) -> Vec<f32>,
        exp_avg_sq: impl FnMut(usize) -> Vec<f32>,
        mut step: impl FnMut(usize) -> u64,
    ) -> impl Iterator<Item = State> {
        let firsts: Vec<Vec<f32>> = (0..count).map(exp_avg).collect();
        let seconds: Vec<Vec<f32>> = (0..count).map(exp_avg_sq).collect();
        firsts
            .into_iter()
            .zip(seconds)
            .enumerate()
            .map(move |(i, (exp_avg, exp_avg_sq))| State {
                exp_avg,
                exp_avg_sq,
                step: step(i),
            })
    }

    /// A state from saved parts (for example a checkpoint).
    ///
    /// The lengths are checked against the parameters at the next step.
    pub fn from_parts(exp_avg: Vec<f32>, exp_avg_sq: Vec<f32>, step: u64) -> Self {
        State {
            exp_avg,
            exp_avg_sq,
            step,
        }
    }

    /// The number of lanes of `exp_avg` (and, for a consistent state, of
    /// `exp_avg_sq`).
    pub fn lanes(&self) -> usize {
        self.exp_avg.len()
    }

    /// The first moment `m`.
    pub fn exp_avg(&self) -> &[f32] {
        &self.exp_avg
    }

    /// The second moment `v`.
    pub fn exp_avg_sq(&self) -> &[f32] {
        &self.exp_avg_sq
    }

    /// The number of steps already taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Takes the state apart into `(exp_avg, exp_avg_sq, step)`.
    pub fn into_parts(self) -> (Vec<f32>, Vec<f32>, u64) {
        (self.exp_avg, self.exp_avg_sq, self.step)
    }

    /// A borrowed view of this state, for [`adopt_step_view`](crate::adopt_step_view).
    pub fn view_mut(&mut self) -> StateView<'_> {
        StateView {
            exp_avg: &mut self.exp_avg,
            exp_avg_sq: &mut self.exp_avg_sq,
            step: &mut self.step,
        }
    }
}

/// The state of one parameter buffer over caller-provided storage: the form
/// for builds without an allocator, and for engines that keep `m` and `v` in
/// their own arenas.
///
/// ```
/// use adopt::{adopt_step_view, Hyper, StateView};
/// let mut params = [1.0_f32; 8];
/// let (mut m, mut v, mut step) = ([0.0_f32; 8], [0.0_f32; 8], 0_u64);
/// let mut state = StateView::new(&mut m, &mut v, &mut step);
/// for _ in 0..3 {
///     adopt_step_view(&mut params, &[0.5; 8], &mut state, &Hyper::default())?;
/// }
/// assert_eq!(step, 3);
/// assert!(params[0] < 1.0);
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Debug)]
pub struct StateView<'a> {
    pub(crate) exp_avg: &'a mut [f32],
    pub(crate) exp_avg_sq: &'a mut [f32],
    pub(crate) step: &'a mut u64,
}

impl<'a> StateView<'a> {
    /// A view over `exp_avg` (`m`), `exp_avg_sq` (`v`) and the step count.
    /// A fresh state has zero moments and `step == 0`.
    pub fn new(exp_avg: &'a mut [f32], exp_avg_sq: &'a mut [f32], step: &'a mut u64) -> Self {
        StateView {
            exp_avg,
            exp_avg_sq,
            step,
        }
    }

    /// The first moment `m`.
    pub fn exp_avg(&self) -> &[f32] {
        self.exp_avg
    }

    /// The second moment `v`.
    pub fn exp_avg_sq(&self) -> &[f32] {
        self.exp_avg_sq
    }

    /// The number of steps already taken.
    pub fn step(&self) -> u64 {
        *self.step
    }

    /// The first moment `m`, to write in place.
    pub fn exp_avg_mut(&mut self) -> &mut [f32] {
        self.exp_avg
    }

    /// The second moment `v`, to write in place.
    pub fn exp_avg_sq_mut(&mut self) -> &mut [f32] {
        self.exp_avg_sq
    }

    /// The number of steps already taken, to set (0 makes the next step
    /// the first, which only records `v`).
    pub fn step_mut(&mut self) -> &mut u64 {
        self.step
    }

    /// Reborrows the view for a shorter lifetime.
    pub fn reborrow(&mut self) -> StateView<'_> {
        StateView {
            exp_avg: self.exp_avg,
            exp_avg_sq: self.exp_avg_sq,
            step: self.step,
        }
    }
}
