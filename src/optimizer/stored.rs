//! The optimizer state of one parameter, in its layout's storage, and the
//! views [`Adopt`](crate::Adopt) hands out.

use super::layout::Layout;
use crate::lanes::{Dtype, Lanes, LanesMut};
use crate::sparse::SparseState;
use crate::state::State;
use alloc::vec;
use alloc::vec::Vec;
#[cfg(feature = "half")]
use half::{bf16, f16};

/// An owned buffer of lanes of one storage type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Buf {
    F32(Vec<f32>),
    #[cfg(feature = "half")]
    Bf16(Vec<bf16>),
    #[cfg(feature = "half")]
    F16(Vec<f16>),
}

impl Buf {
    /// `lanes` zeros of `dtype` (a dtype the build supports: layouts are
    /// validated first).
    pub(crate) fn zeros(dtype: Dtype, lanes: usize) -> Buf {
        match dtype {
            #[cfg(feature = "half")]
            Dtype::Bf16 => Buf::Bf16(vec![bf16::ZERO; lanes]),
            #[cfg(feature = "half")]
            Dtype::F16 => Buf::F16(vec![f16::ZERO; lanes]),
            _ => Buf::F32(vec![0.0; lanes]),
        }
    }

    pub(crate) fn as_lanes(&self) -> Lanes<'_> {
        match self {
            Buf::F32(x) => Lanes::F32(x),
            #[cfg(feature = "half")]
            Buf::Bf16(x) => Lanes::Bf16(x),
            #[cfg(feature = "half")]
            Buf::F16(x) => Lanes::F16(x),
        }
    }

    pub(crate) fn as_lanes_mut(&mut self) -> LanesMut<'_> {
        match self {
            Buf::F32(x) => LanesMut::F32(x),
            #[cfg(feature = "half")]
            Buf::Bf16(x) => LanesMut::Bf16(x),
            #[cfg(feature = "half")]
            Buf::F16(x) => LanesMut::F16(x),
        }
    }
}

/// One parameter's state.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stored {
    /// f32 moments, no master copy (the plain layout, also complex lanes
    /// and half-precision parameters with f32 state).
    Plain(State),
    /// Half-precision moments and/or an f32 master copy.
    Typed {
        step: u64,
        exp_avg: Buf,
        exp_avg_sq: Buf,
        master: Option<Vec<f32>>,
    },
    /// A row-sparse table: moments per lane, a step count per row.
    Rows(SparseState),
}

impl Stored {
    /// Whether a layout's state is stored as [`Stored::Plain`].
    pub(crate) fn plain_for(layout: &Layout) -> bool {
        let (m, v) = layout.state_dtypes();
        !layout.is_rows() && m == Dtype::F32 && v == Dtype::F32 && !layout.has_master()
    }

    /// A fresh state for `layout` (zero moments, no steps taken), the
    /// master copy, if any, taken from `master`.
    pub(crate) fn fresh(layout: &Layout, master: Option<Vec<f32>>) -> Stored {
        let lanes = layout.lanes().unwrap_or(0);
        if let crate::optimizer::layout::Shape::Rows { rows, dim } = layout.shape() {
            return Stored::Rows(SparseState::new(rows, dim));
        }
        if Stored::plain_for(layout) {
            return Stored::Plain(State::new(lanes));
        }
        let (m, v) = layout.state_dtypes();
        Stored::Typed {
            step: 0,
            exp_avg: Buf::zeros(m, lanes),
            exp_avg_sq: Buf::zeros(v, lanes),
            master,
        }
    }

    pub(crate) fn view(&self) -> ParamState<'_> {
        match self {
            Stored::Plain(s) => ParamState {
                steps: Steps::Dense(s.step()),
                exp_avg: Lanes::F32(s.exp_avg()),
                exp_avg_sq: Lanes::F32(s.exp_avg_sq()),
                master: None,
            },
            Stored::Typed {
                step,
                exp_avg,
                exp_avg_sq,
                master,
            } => ParamState {
                steps: Steps::Dense(*step),
                exp_avg: exp_avg.as_lanes(),
                exp_avg_sq: exp_avg_sq.as_lanes(),
                master: master.as_deref(),
            },
            Stored::Rows(s) => ParamState {
                steps: Steps::Rows(s.steps()),
                exp_avg: Lanes::F32(s.exp_avg()),
                exp_avg_sq: Lanes::F32(s.exp_avg_sq()),
                master: None,
            },
        }
    }

    pub(crate) fn view_mut(&mut self) -> ParamStateMut<'_> {
        match self {
            Stored::Plain(s) => {
                let v = s.view_mut();
                ParamStateMut {
                    steps: StepsMut::Dense(v.step),
                    exp_avg: LanesMut::F32(v.exp_avg),
                    exp_avg_sq: LanesMut::F32(v.exp_avg_sq),
                    master: None,
                }
            }
            Stored::Typed {
                step,
                exp_avg,
                exp_avg_sq,
                master,
            } => ParamStateMut {
                steps: StepsMut::Dense(step),
                exp_avg: exp_avg.as_lanes_mut(),
                exp_avg_sq: exp_avg_sq.as_lanes_mut(),
                master: master.as_deref_mut(),
            },
            Stored::Rows(s) => {
                let (m, v, steps) = s.parts_mut();
                ParamStateMut {
                    steps: StepsMut::Rows(steps),
                    exp_avg: LanesMut::F32(m),
                    exp_avg_sq: LanesMut::F32(v),
                    master: None,
                }
            }
        }
    }
}

/// The step counts of a parameter's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steps<'a> {
    /// A dense parameter's steps taken.
    Dense(u64),
    /// A row-sparse table's steps taken, per row.
    Rows(&'a [u64]),
}

/// The step counts of a parameter's state, writable.
#[derive(Debug, PartialEq, Eq)]
pub enum StepsMut<'a> {
    /// A dense parameter's steps taken.
    Dense(&'a mut u64),
    /// A row-sparse table's steps taken, per row.
    Rows(&'a mut [u64]),
}

/// A parameter's optimizer state, in its layout's storage (see
/// [`Adopt::param_state`](crate::Adopt::param_state)).
#[derive(Clone, Copy, Debug)]
pub struct ParamState<'a> {
    /// Steps taken.
    pub steps: Steps<'a>,
    /// The first moment `m`.
    pub exp_avg: Lanes<'a>,
    /// The second moment `v`.
    pub exp_avg_sq: Lanes<'a>,
    /// The f32 master copy, for layouts that keep one.
    pub master: Option<&'a [f32]>,
}

/// A parameter's optimizer state, writable in place (see
/// [`Adopt::param_state_mut`](crate::Adopt::param_state_mut)): the buffers
/// stay where they are for as long as the state exists, so a binding can
/// wrap them without copying.
#[derive(Debug)]
pub struct ParamStateMut<'a> {
    /// Steps taken.
    pub steps: StepsMut<'a>,
    /// The first moment `m`.
    pub exp_avg: LanesMut<'a>,
    /// The second moment `v`.
    pub exp_avg_sq: LanesMut<'a>,
    /// The f32 master copy, for layouts that keep one.
    pub master: Option<&'a mut [f32]>,
}
