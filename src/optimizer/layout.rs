//! How a registered parameter is stored: its [`Layout`].

use crate::error::Error;
use crate::lanes::{Dtype, Rounding};

/// The shape of a registered parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shape {
    /// A dense buffer of lanes.
    Dense {
        /// The lanes.
        lanes: usize,
    },
    /// Complex values as interleaved `re`, `im` f32 lanes (PyTorch's
    /// `view_as_real`): `2 × elements` lanes, each stepped on its own.
    Complex {
        /// The complex elements.
        elements: usize,
    },
    /// A row-sparse embedding table of `rows × dim` lanes, row-major: each
    /// row has its own step count, and a step's gradient lists the rows it
    /// touches (or covers the whole table). See [`sparse`](crate::sparse).
    Rows {
        /// The rows.
        rows: usize,
        /// The lanes per row.
        dim: usize,
    },
}

/// How a parameter registered with an [`Adopt`](crate::Adopt) is stored:
/// its shape, the storage types of the parameters and gradients the engine
/// passes at each step, the storage of the optimizer state, and whether the
/// optimizer keeps an f32 master copy of half-precision parameters.
///
/// Arithmetic is always f32, as for the single-buffer functions: a step
/// through `Adopt` is bit-identical to the single-buffer step of the same
/// layout ([`adopt_step`](crate::adopt_step),
/// [`precision::adopt_step_half`](crate::precision::adopt_step_half),
/// [`precision::adopt_step_master`](crate::precision::adopt_step_master),
/// [`adopt_step_rows`](crate::adopt_step_rows)).
///
/// ```
/// use adopt::{Dtype, Layout, Rounding};
/// // f32 everywhere: what `add_param(group, 1024, name)` registers.
/// assert_eq!(Layout::from(1024), Layout::dense(1024));
/// // bf16 weights and gradients, an f32 master copy, bf16 moments.
/// let mixed = Layout::dense(1024)
///     .params(Dtype::Bf16)
///     .grads(Dtype::Bf16)
///     .master(true)
///     .exp_avg(Dtype::Bf16)
///     .exp_avg_sq(Dtype::Bf16)
///     .rounding(Rounding::Stochastic { seed: 7 });
/// assert_eq!((mixed.lanes(), mixed.state_bytes()), (Some(1024), 1024 * 8));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Shape,
    params: Dtype,
    grads: Dtype,
    exp_avg: Dtype,
    exp_avg_sq: Dtype,
    master: bool,
    rounding: Rounding,
}

impl Layout {
    const fn of(shape: Shape) -> Layout {
        Layout {
            shape,
            params: Dtype::F32,
            grads: Dtype::F32,
            exp_avg: Dtype::F32,
            exp_avg_sq: Dtype::F32,
            master: false,
            rounding: Rounding::NearestEven,
        }
    }

    /// A dense buffer of `lanes` lanes, f32 throughout.
    pub const fn dense(lanes: usize) -> Layout {
        Layout::of(Shape::Dense { lanes })
    }

    /// `elements` complex values as `2 × elements` interleaved f32 lanes.
    pub const fn complex(elements: usize) -> Layout {
        Layout::of(Shape::Complex { elements })
    }

    /// A row-sparse embedding table of `rows × dim` f32 lanes.
    pub const fn rows(rows: usize, dim: usize) -> Layout {
        Layout::of(Shape::Rows { rows, dim })
    }

    /// The parameters' storage type, as the engine passes them; the
    /// gradients take the same type unless [`grads`](Layout::grads) says
    /// otherwise afterwards.
    pub const fn params(mut self, dtype: Dtype) -> Layout {
        self.params = dtype;
        self.grads = dtype;
        self
    }

    /// The gradients' storage type.
    pub const fn grads(mut self, dtype: Dtype) -> Layout {
        self.grads = dtype;
        self
    }

    /// The storage of the first moment `m`: f32, bf16 or f16.
    pub const fn exp_avg(mut self, dtype: Dtype) -> Layout {
        self.exp_avg = dtype;
        self
    }

    /// The storage of the second moment `v`: f32 or bf16 (f16 is refused:
    /// `v = g²` leaves its range for gradients above 256).
    pub const fn exp_avg_sq(mut self, dtype: Dtype) -> Layout {
        self.exp_avg_sq = dtype;
        self
    }

    /// Keep an f32 master copy of half-precision parameters in the
    /// optimizer state: the master is stepped, and the parameters are
    /// rounded from it ([`rounding`](Layout::rounding)). It is created from
    /// the parameters at their first gradient.
    pub const fn master(mut self, master: bool) -> Layout {
        self.master = master;
        self
    }

    /// How f32 results are rounded into half-precision parameters
    /// (stochastic rounding applies to bf16 parameters).
    pub const fn rounding(mut self, rounding: Rounding) -> Layout {
        self.rounding = rounding;
        self
    }

    /// The shape.
    pub const fn shape(&self) -> Shape {
        self.shape
    }

    /// The lanes of the parameter buffer (`None` if they overflow `usize`,
    /// which registering refuses).
    pub const fn lanes(&self) -> Option<usize> {
        match self.shape {
            Shape::Dense { lanes } => Some(lanes),
            Shape::Complex { elements } => elements.checked_mul(2),
            Shape::Rows { rows, dim } => rows.checked_mul(dim),
        }
    }

    /// The parameters' storage type.
    pub const fn params_dtype(&self) -> Dtype {
        self.params
    }

    /// The gradients' storage type.
    pub const fn grads_dtype(&self) -> Dtype {
        self.grads
    }

    /// The storage of `m` and of `v`.
    pub const fn state_dtypes(&self) -> (Dtype, Dtype) {
        (self.exp_avg, self.exp_avg_sq)
    }

    /// Whether the optimizer keeps an f32 master copy.
    pub const fn has_master(&self) -> bool {
        self.master
    }

    /// The rounding of half-precision parameters.
    pub const fn rounding_mode(&self) -> Rounding {
        self.rounding
    }

    /// Bytes of optimizer state: the moments, the master copy, and 8 per
    /// step count (one, or one per row).
    pub const fn state_bytes(&self) -> usize {
        let lanes = match self.lanes() {
            Some(lanes) => lanes,
            None => usize::MAX,
        };
        let per_lane =
            self.exp_avg.size() + self.exp_avg_sq.size() + if self.master { 4 } else { 0 };
        let steps = match self.shape {
            Shape::Rows { rows, .. } => rows.saturating_mul(8),
            _ => 0,
        };
        lanes.saturating_mul(per_lane).saturating_add(steps)
    }

    /// Whether this is the dense f32 layout with f32 state (complex lanes
    /// included): stored as a [`State`](crate::State) and stepped by the
    /// batched f32 kernel.
    pub(crate) const fn is_plain(&self) -> bool {
        !matches!(self.shape, Shape::Rows { .. })
            && matches!(self.params, Dtype::F32)
            && matches!(self.grads, Dtype::F32)
            && matches!(self.exp_avg, Dtype::F32)
            && matches!(self.exp_avg_sq, Dtype::F32)
            && !self.master
    }

    /// Whether this is a row-sparse table.
    pub(crate) const fn is_rows(&self) -> bool {
        matches!(self.shape, Shape::Rows { .. })
    }

    /// Refuses layouts the optimizer cannot step
    /// ([`Error::InvalidLayout`] with the reason).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid = |reason| Err(Error::InvalidLayout { reason });
        if self.lanes().is_none() {
            return invalid("the parameter's lanes overflow usize");
        }
        let dtypes = [self.params, self.grads, self.exp_avg, self.exp_avg_sq];
        if !cfg!(feature = "half") && dtypes.iter().any(|&d| d != Dtype::F32) {
            return invalid("bf16 and f16 buffers need the `half` feature");
        }
        if self.exp_avg_sq == Dtype::F16 {
            return invalid(
                "the second moment cannot be f16: v = g² leaves f16's range for gradients above 256 (use bf16 or f32)",
            );
        }
        if self.master && self.params == Dtype::F32 {
            return invalid("a master copy is for half-precision parameters (these are f32)");
        }
        match self.shape {
            Shape::Complex { .. } if dtypes.iter().any(|&d| d != Dtype::F32) || self.master => {
                invalid("complex parameters are f32 lanes throughout")
            }
            Shape::Rows { .. } if dtypes.iter().any(|&d| d != Dtype::F32) || self.master => {
                invalid("row-sparse tables are f32 throughout")
            }
            _ => Ok(()),
        }
    }
}

impl From<usize> for Layout {
    /// A dense f32 buffer of `lanes` lanes.
    fn from(lanes: usize) -> Layout {
        Layout::dense(lanes)
    }
}
