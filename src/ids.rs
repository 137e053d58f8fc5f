//! The ids an [`Adopt`](crate::Adopt) hands out (a leaf module: the error
//! type names them without depending on the optimizer).

/// A parameter buffer registered with an [`Adopt`](crate::Adopt); stable for
/// the optimizer's life and across checkpoints (ids are dense, in
/// registration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// A parameter group of an [`Adopt`](crate::Adopt): a set of buffers sharing
/// one [`Hyper`](crate::Hyper).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);
