//! What an engine hands to [`Adopt::step`](crate::Adopt::step): one item per
//! parameter, borrowing its buffers.

use crate::ids::ParamId;
use crate::lanes::{Lanes, LanesMut};

/// One dense f32 buffer handed to [`Adopt::step`](crate::Adopt::step): the
/// engine owns the parameters and gradients; `grads: None` skips the
/// buffer (the reference skips `grad is None`). For other storage types
/// and row-sparse gradients, use [`Entry`].
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

/// One buffer of any layout handed to [`Adopt::step`](crate::Adopt::step).
///
/// ```
/// # #[cfg(feature = "half")] {
/// use adopt::{Adopt, Dtype, Entry, Grads, Hyper, Layout};
/// use half::bf16;
/// let mut opt = Adopt::new();
/// let g = opt.add_group(Hyper { lr: 0.1, ..Hyper::default() })?;
/// let w = opt.add_param(g, Layout::dense(4).params(Dtype::Bf16), Some("w"))?;
/// let table = opt.add_param(g, Layout::rows(100, 2), Some("emb"))?;
/// let mut weights = vec![bf16::ONE; 4];
/// let mut rows = vec![0.5_f32; 200];
/// let w_grad = vec![bf16::from_f32(0.25); 4];
/// for _ in 0..2 {
///     opt.step(&mut [
///         Entry { id: w, params: (&mut weights[..]).into(), grads: Some((&w_grad[..]).into()) },
///         Entry {
///             id: table,
///             params: (&mut rows[..]).into(),
///             grads: Some(Grads::Rows { rows: &[3, 97], values: &[0.1, 0.2, 0.3, 0.4] }),
///         },
///     ])?;
/// }
/// assert!(weights[0] < bf16::ONE);
/// assert!(rows[3 * 2] < 0.5 && rows[0] == 0.5);
/// # }
/// # Ok::<(), adopt::Error>(())
/// ```
#[derive(Debug)]
pub struct Entry<'a> {
    /// Which registered parameter this is.
    pub id: ParamId,
    /// The parameter lanes, of the registered storage type and count.
    pub params: LanesMut<'a>,
    /// The gradient, or `None` to leave this buffer (and its step counts)
    /// alone this step.
    pub grads: Option<Grads<'a>>,
}

/// A gradient handed to a step.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Grads<'a> {
    /// One gradient lane per parameter lane, of the registered storage
    /// type (for a row-sparse table: every row steps).
    Dense(Lanes<'a>),
    /// For a row-sparse table: one block of `dim` lanes per listed row, in
    /// the same order; rows may repeat (their blocks are summed) and rows
    /// not listed do not move.
    Rows {
        /// Row indices.
        rows: &'a [u32],
        /// `rows.len() × dim` lanes.
        values: &'a [f32],
    },
}

impl<'a, T: Into<Lanes<'a>>> From<T> for Grads<'a> {
    fn from(lanes: T) -> Self {
        Grads::Dense(lanes.into())
    }
}

mod sealed {
    use crate::{Adopt, Error, Scaling};

    pub trait Sealed: Sized {
        /// [`Adopt::step_scaled`] for this item type: one non-generic
        /// function per type, compiled in this crate, so that callers do
        /// not compile the whole step again.
        fn step_scaled(opt: &mut Adopt, items: &mut [Self], scaling: Scaling) -> Result<(), Error>;
    }
    impl Sealed for super::Item<'_> {
        #[inline(never)]
        fn step_scaled(opt: &mut Adopt, items: &mut [Self], scaling: Scaling) -> Result<(), Error> {
            opt.step_items(items, scaling)
        }
    }
    impl Sealed for super::Entry<'_> {
        #[inline(never)]
        fn step_scaled(opt: &mut Adopt, items: &mut [Self], scaling: Scaling) -> Result<(), Error> {
            opt.step_items(items, scaling)
        }
    }
}

/// A step item: [`Item`] (dense f32) or [`Entry`] (any layout). Sealed.
pub trait StepItem: sealed::Sealed + Send + Sync {
    /// The parameter's id.
    fn id(&self) -> ParamId;
    /// The parameters and the gradient, shared (for validation).
    fn view(&self) -> (Lanes<'_>, Option<Grads<'_>>);
    /// The parameters, mutable, and the gradient (for the step).
    fn split(&mut self) -> (LanesMut<'_>, Option<Grads<'_>>);
}

impl StepItem for Item<'_> {
    fn id(&self) -> ParamId {
        self.id
    }
    fn view(&self) -> (Lanes<'_>, Option<Grads<'_>>) {
        (Lanes::F32(self.params), self.grads.map(|g| g.into()))
    }
    fn split(&mut self) -> (LanesMut<'_>, Option<Grads<'_>>) {
        (LanesMut::F32(self.params), self.grads.map(|g| g.into()))
    }
}

impl StepItem for Entry<'_> {
    fn id(&self) -> ParamId {
        self.id
    }
    fn view(&self) -> (Lanes<'_>, Option<Grads<'_>>) {
        (self.params.as_lanes(), self.grads)
    }
    fn split(&mut self) -> (LanesMut<'_>, Option<Grads<'_>>) {
        (self.params.reborrow(), self.grads)
    }
}
