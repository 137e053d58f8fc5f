//! Buffers of f32 lanes in any storage type: the [`Dtype`] tags and the
//! borrowed [`Lanes`] / [`LanesMut`] an [`Adopt`](crate::Adopt) step and
//! its state accessors pass around. The arithmetic is always f32; a
//! half-precision lane (feature `half`) is widened exactly and rounded back.

#[cfg(feature = "half")]
use half::{bf16, f16};

/// How a buffer's lanes are stored.
///
/// Every type is available as a tag; buffers of `Bf16` and `F16` lanes need
/// the `half` feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Dtype {
    /// `f32`, 4 bytes (the default).
    #[default]
    F32,
    /// `bfloat16`, 2 bytes: f32's range, 8 significant bits.
    Bf16,
    /// IEEE `float16`, 2 bytes: 11 significant bits, largest finite 65504.
    F16,
}

impl Dtype {
    /// The name PyTorch gives the type: `"float32"`, `"bfloat16"`,
    /// `"float16"`.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
            Dtype::F16 => "float16",
        }
    }

    /// Bytes per lane.
    pub const fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 | Dtype::F16 => 2,
        }
    }
}

impl core::fmt::Display for Dtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Borrowed lanes of one storage type.
///
/// ```
/// use adopt::{Dtype, Lanes};
/// let g = [0.5_f32; 3];
/// let lanes = Lanes::from(&g[..]);
/// assert_eq!((lanes.dtype(), lanes.len()), (Dtype::F32, 3));
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Lanes<'a> {
    /// f32 lanes.
    F32(&'a [f32]),
    /// bf16 lanes (feature `half`).
    #[cfg(feature = "half")]
    Bf16(&'a [bf16]),
    /// f16 lanes (feature `half`).
    #[cfg(feature = "half")]
    F16(&'a [f16]),
}

/// Mutably borrowed lanes of one storage type.
#[derive(Debug)]
#[non_exhaustive]
pub enum LanesMut<'a> {
    /// f32 lanes.
    F32(&'a mut [f32]),
    /// bf16 lanes (feature `half`).
    #[cfg(feature = "half")]
    Bf16(&'a mut [bf16]),
    /// f16 lanes (feature `half`).
    #[cfg(feature = "half")]
    F16(&'a mut [f16]),
}

impl Lanes<'_> {
    /// The number of lanes.
    pub fn len(&self) -> usize {
        match self {
            Lanes::F32(x) => x.len(),
            #[cfg(feature = "half")]
            Lanes::Bf16(x) => x.len(),
            #[cfg(feature = "half")]
            Lanes::F16(x) => x.len(),
        }
    }

    /// Whether there are no lanes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage type.
    pub fn dtype(&self) -> Dtype {
        match self {
            Lanes::F32(_) => Dtype::F32,
            #[cfg(feature = "half")]
            Lanes::Bf16(_) => Dtype::Bf16,
            #[cfg(feature = "half")]
            Lanes::F16(_) => Dtype::F16,
        }
    }
}

#[cfg(feature = "alloc")]
impl Lanes<'_> {
    /// The lanes widened (exactly) to f32.
    pub fn to_f32_vec(&self) -> alloc::vec::Vec<f32> {
        match self {
            Lanes::F32(x) => x.to_vec(),
            #[cfg(feature = "half")]
            Lanes::Bf16(x) => x.iter().map(|x| x.to_f32()).collect(),
            #[cfg(feature = "half")]
            Lanes::F16(x) => x.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

impl LanesMut<'_> {
    /// The number of lanes.
    pub fn len(&self) -> usize {
        self.as_lanes().len()
    }

    /// Whether there are no lanes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage type.
    pub fn dtype(&self) -> Dtype {
        self.as_lanes().dtype()
    }

    /// The same lanes, shared.
    pub fn as_lanes(&self) -> Lanes<'_> {
        match self {
            LanesMut::F32(x) => Lanes::F32(x),
            #[cfg(feature = "half")]
            LanesMut::Bf16(x) => Lanes::Bf16(x),
            #[cfg(feature = "half")]
            LanesMut::F16(x) => Lanes::F16(x),
        }
    }

    /// Reborrows for a shorter lifetime.
    pub fn reborrow(&mut self) -> LanesMut<'_> {
        match self {
            LanesMut::F32(x) => LanesMut::F32(x),
            #[cfg(feature = "half")]
            LanesMut::Bf16(x) => LanesMut::Bf16(x),
            #[cfg(feature = "half")]
            LanesMut::F16(x) => LanesMut::F16(x),
        }
    }
}

impl<'a> From<&'a [f32]> for Lanes<'a> {
    fn from(x: &'a [f32]) -> Self {
        Lanes::F32(x)
    }
}

impl<'a> From<&'a mut [f32]> for LanesMut<'a> {
    fn from(x: &'a mut [f32]) -> Self {
        LanesMut::F32(x)
    }
}

#[cfg(feature = "half")]
impl<'a> From<&'a [bf16]> for Lanes<'a> {
    fn from(x: &'a [bf16]) -> Self {
        Lanes::Bf16(x)
    }
}

#[cfg(feature = "half")]
impl<'a> From<&'a mut [bf16]> for LanesMut<'a> {
    fn from(x: &'a mut [bf16]) -> Self {
        LanesMut::Bf16(x)
    }
}

#[cfg(feature = "half")]
impl<'a> From<&'a [f16]> for Lanes<'a> {
    fn from(x: &'a [f16]) -> Self {
        Lanes::F16(x)
    }
}

#[cfg(feature = "half")]
impl<'a> From<&'a mut [f16]> for LanesMut<'a> {
    fn from(x: &'a mut [f16]) -> Self {
        LanesMut::F16(x)
    }
}

/// Complex values as their interleaved f32 lanes (`re`, `im`), zero-copy.
#[cfg(feature = "complex")]
impl<'a> From<&'a [num_complex::Complex32]> for Lanes<'a> {
    fn from(x: &'a [num_complex::Complex32]) -> Self {
        Lanes::F32(bytemuck::cast_slice(x))
    }
}

/// Complex values as their interleaved f32 lanes (`re`, `im`), zero-copy.
#[cfg(feature = "complex")]
impl<'a> From<&'a mut [num_complex::Complex32]> for LanesMut<'a> {
    fn from(x: &'a mut [num_complex::Complex32]) -> Self {
        LanesMut::F32(bytemuck::cast_slice_mut(x))
    }
}

/// How f32 results are rounded into half-precision parameters (see
/// [`precision`](crate::precision); an [`Adopt`](crate::Adopt) layout's
/// parameters with a master copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rounding {
    /// To nearest, ties to even.
    #[default]
    NearestEven,
    /// Stochastic rounding of bf16 parameters (f16 and f32 round to
    /// nearest), from a counter-based generator: the random bits of a lane
    /// depend only on `(seed, step, lane index)`, so parallel chunks agree
    /// with serial and runs repeat exactly.
    Stochastic {
        /// Chooses the random stream.
        seed: u64,
    },
}
