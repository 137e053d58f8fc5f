//! Saving and loading an [`Adopt`]'s whole state.
//!
//! # Format (version 3), little-endian throughout
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"ADOPTCK\0"
//! 8       4     version: u32 (3; versions 1 and 2 are still read)
//! 12      8     payload length in bytes: u64
//! 20      n     payload
//! 20+n    4     CRC-32 (IEEE, as zlib) of bytes 0 .. 20+n: u32
//!
//! payload (version 3):
//!   groups: u32, then per group:
//!     lr, beta1, beta2, eps, initial_lr: f64 × 5
//!     flags: u8          bit 0 maximize, bit 1 nesterov
//!     caution: u8        0 off, 1 timm, 2 pytorch-optimizer
//!     clip kind: u8      0 none, 1 constant(a), 2 power(a = scale, b = exponent)
//!     clip a, clip b: f64 × 2 (+0.0 when unused, required)
//!     clip offset: u64
//!     decay kind: u8     0 none, 1 L2, 2 decoupled
//!     decay coefficient: f64 (+0.0 for none)
//!     decay scaling: u8  0 lr, 1 fixed, 2 corrected (max_lr), 3 corrected
//!                        (max_lr unset); 0 unless decoupled
//!     max_lr: f64        (+0.0 unless scaling 2)
//!     first-step decay: u8 (0 or 1; 0 unless decoupled)
//!   params: u32, then per param:
//!     group: u32, lanes: u64
//!     name: u32 byte length (u32::MAX for none) + UTF-8 bytes
//!     layout: u8         0 dense f32
//!     has state: u8 (0 or 1); if 1: step u64, exp_avg f32 × lanes,
//!     exp_avg_sq f32 × lanes
//! ```
//!
//! The encoding is canonical: a checkpoint that loads re-encodes to the same
//! bytes, so unused fields must hold +0.0 and flags only known bits.
//!
//! Versions 1 and 2 (written by earlier releases) are read and filled with
//! defaults, as the reference's `__setstate__` does for old checkpoints.
//! Their groups are: `lr, beta1, beta2, eps, weight_decay` (f64 × 5),
//! flags (bit 0 decouple, bit 1 maximize; v2: bit 2 Nesterov, bit 3 timm's
//! caution), clip kind and fields as above, and in v2 the decay scaling
//! (0 lr, 1 fixed, 2 corrected) and `max_lr`; their params have a name in
//! v2 only, and no layout byte. A coefficient of zero reads as no decay;
//! the initial learning rate is the group's `lr`.
//! `tests/data/checkpoint_v1.bin` and `tests/data/checkpoint_v2.bin` are
//! committed checkpoints that every build must load.
//!
//! A group using [`Clip::Custom`] (a function) cannot be saved:
//! [`Adopt::save`] returns [`CheckpointError::CustomClip`]; a group whose
//! hyperparameters are invalid gets their [`Error::InvalidHyper`], so every
//! checkpoint that saves also loads.
//!
//! # Loading into an optimizer that has parameters
//!
//! [`Adopt::load`] keeps the optimizer's layout and refuses a checkpoint of
//! another one, as PyTorch's `load_state_dict` does: the same number of
//! groups, the same number of parameters, each in the same group with the
//! same lanes, and the same name wherever both sides name it.
//! [`Adopt::load_by_name`] matches parameters by name instead, for models
//! whose parameters were registered in another order. To take the
//! checkpoint's layout instead of the optimizer's, replace the optimizer:
//! `*opt = Adopt::from_checkpoint(bytes)?`.
//!
//! ```
//! use adopt::{Adopt, Hyper, Item};
//! let mut opt = Adopt::new();
//! let g = opt.add_group(Hyper { lr: 1e-2, ..Hyper::default() })?;
//! let w = opt.add_param(g, 3, Some("w"))?;
//! let mut data = vec![1.0_f32; 3];
//! opt.step(&mut [Item { id: w, params: &mut data, grads: Some(&[0.5; 3]) }])?;
//!
//! let bytes = opt.save()?;
//! let restored = Adopt::from_checkpoint(&bytes)?;
//! assert_eq!(restored.save()?, bytes);
//! assert_eq!(restored.state(w)?.unwrap().step(), 1);
//! # Ok::<(), adopt::Error>(())
//! ```

use super::stored::{Buf, Stored};
use super::{Adopt, Group, Layout, Param, Shape, Steps};
use crate::error::{CheckpointError, Error};
use crate::hyper::{Caution, Clip, DecayScaling, Hyper, WeightDecay};
use crate::ids::GroupId;
use crate::lanes::{Dtype, Lanes, Rounding};
use crate::sparse::SparseState;
use crate::state::State;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

/// The first 8 bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"ADOPTCK\0";
/// The format version [`Adopt::save`] writes.
pub const VERSION: u32 = 3;

const HEADER: usize = 20;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
///
/// ```
/// assert_eq!(adopt::checkpoint::crc32(b"123456789"), 0xcbf4_3926);
/// ```
#[doc(hidden)]
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0_u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0_u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

fn err(e: CheckpointError) -> Error {
    Error::Checkpoint(e)
}

/// Appends little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    fn u32(&mut self, x: u32) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn f64(&mut self, x: f64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn f32s(&mut self, xs: &[f32]) {
        self.0.reserve(xs.len() * 4);
        for x in xs {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Reads little-endian fields, failing with `Truncated` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(err(CheckpointError::Truncated));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f64(&mut self) -> Result<f64, Error> {
        Ok(f64::from_bits(self.u64()?))
    }
}

fn write_group(w: &mut Writer, index: usize, group: &Group) -> Result<(), Error> {
    let h = &group.hyper;
    // What is saved must load: hyperparameters made invalid through
    // `hyper_mut` are refused here, not discovered at load time.
    group.resolved().validate()?;
    for x in [h.lr, h.betas.0, h.betas.1, h.eps, group.initial_lr] {
        w.f64(x);
    }
    w.u8(h.maximize as u8 | (h.nesterov as u8) << 1);
    w.u8(match h.caution {
        Caution::Off => 0,
        Caution::Timm => 1,
        Caution::PytorchOptimizer => 2,
    });
    let (kind, a, b) = match h.clip {
        Clip::None => (0, 0.0, 0.0),
        Clip::Constant(c) => (1, c, 0.0),
        Clip::Power { scale, exponent } => (2, scale, exponent),
        Clip::Custom(_) => {
            return Err(err(CheckpointError::CustomClip {
                group: index as u32,
            }));
        }
    };
    w.u8(kind);
    w.f64(a);
    w.f64(b);
    w.u64(h.clip_offset);
    let (kind, coefficient, scaling, max_lr, first_step) = match h.weight_decay {
        WeightDecay::None => (0, 0.0, 0, 0.0, false),
        WeightDecay::L2(wd) => (1, wd, 0, 0.0, false),
        WeightDecay::Decoupled {
            weight_decay,
            scaling,
            first_step,
        } => {
            let (scaling, max_lr) = match scaling {
                DecayScaling::Lr => (0, 0.0),
                DecayScaling::Fixed => (1, 0.0),
                DecayScaling::Corrected { max_lr: Some(m) } => (2, m),
                DecayScaling::Corrected { max_lr: None } => (3, 0.0),
            };
            (2, weight_decay, scaling, max_lr, first_step)
        }
    };
    w.u8(kind);
    w.f64(coefficient);
    w.u8(scaling);
    w.f64(max_lr);
    w.u8(first_step as u8);
    Ok(())
}

/// Fields a kind does not use are written as +0.0; anything else is not a
/// checkpoint this crate wrote (and would not re-encode to itself).
fn unused_is_zero(x: f64, what: &'static str) -> Result<(), Error> {
    if x.to_bits() == 0 {
        Ok(())
    } else {
        Err(err(CheckpointError::Malformed(what)))
    }
}

/// The clip kind and its two fields.
fn read_clip(r: &mut Reader<'_>) -> Result<Clip, Error> {
    let (kind, a, b) = (r.u8()?, r.f64()?, r.f64()?);
    Ok(match kind {
        0 => {
            unused_is_zero(a, "unused clip field is not zero")?;
            unused_is_zero(b, "unused clip field is not zero")?;
            Clip::None
        }
        1 => {
            unused_is_zero(b, "unused clip field is not zero")?;
            Clip::Constant(a)
        }
        2 => Clip::Power {
            scale: a,
            exponent: b,
        },
        _ => return Err(err(CheckpointError::Malformed("unknown clip kind"))),
    })
}

/// A group of version 3.
fn read_group(r: &mut Reader<'_>) -> Result<Group, Error> {
    let mut f = [0.0; 5];
    for x in &mut f {
        *x = r.f64()?;
    }
    let flags = r.u8()?;
    if flags & !0b11 != 0 {
        return Err(err(CheckpointError::Malformed("unknown group flags")));
    }
    let caution = match r.u8()? {
        0 => Caution::Off,
        1 => Caution::Timm,
        2 => Caution::PytorchOptimizer,
        _ => return Err(err(CheckpointError::Malformed("unknown caution rule"))),
    };
    let clip = read_clip(r)?;
    let clip_offset = r.u64()?;
    let (kind, coefficient, scaling, max_lr, first_step) =
        (r.u8()?, r.f64()?, r.u8()?, r.f64()?, r.u8()?);
    if first_step > 1 {
        return Err(err(CheckpointError::Malformed(
            "first-step decay flag is neither 0 nor 1",
        )));
    }
    if scaling != 2 {
        unused_is_zero(max_lr, "unused max_lr is not zero")?;
    }
    if kind != 2 && (scaling != 0 || first_step != 0) {
        return Err(err(CheckpointError::Malformed(
            "decay scaling or first-step decay without decoupled decay",
        )));
    }
    let weight_decay = match kind {
        0 => {
            unused_is_zero(coefficient, "unused decay coefficient is not zero")?;
            WeightDecay::None
        }
        1 => WeightDecay::L2(coefficient),
        2 => WeightDecay::Decoupled {
            weight_decay: coefficient,
            scaling: match scaling {
                0 => DecayScaling::Lr,
                1 => DecayScaling::Fixed,
                2 => DecayScaling::Corrected {
                    max_lr: Some(max_lr),
                },
                3 => DecayScaling::Corrected { max_lr: None },
                _ => return Err(err(CheckpointError::Malformed("unknown decay scaling"))),
            },
            first_step: first_step == 1,
        },
        _ => return Err(err(CheckpointError::Malformed("unknown decay kind"))),
    };
    let hyper = Hyper {
        lr: f[0],
        betas: (f[1], f[2]),
        eps: f[3],
        weight_decay,
        maximize: flags & 1 != 0,
        clip,
        clip_offset,
        nesterov: flags & 2 != 0,
        caution,
    };
    let group = Group {
        hyper,
        initial_lr: f[4],
    };
    validate_group(&group)?;
    Ok(group)
}

/// What a loaded group must satisfy: an initial learning rate that is
/// finite and >= 0, and valid hyperparameters (with the initial learning
/// rate filling an unset `max_lr`).
fn validate_group(group: &Group) -> Result<(), Error> {
    // A group added with lr = 0 records 0, as the reference allows lr = 0.
    if !(group.initial_lr.is_finite() && group.initial_lr >= 0.0) {
        return Err(err(CheckpointError::Malformed(
            "initial_lr is not a finite number >= 0",
        )));
    }
    group.resolved().validate()
}

/// A group of version 1 or 2.
fn read_old_group(r: &mut Reader<'_>, version: u32) -> Result<Group, Error> {
    let mut f = [0.0; 5];
    for x in &mut f {
        *x = r.f64()?;
    }
    let flags = r.u8()?;
    let known_flags = if version >= 2 { 0b1111 } else { 0b11 };
    if flags & !known_flags != 0 {
        return Err(err(CheckpointError::Malformed("unknown group flags")));
    }
    let clip = read_clip(r)?;
    let scaling = if version >= 2 {
        let (kind, max_lr) = (r.u8()?, r.f64()?);
        if kind != 2 {
            unused_is_zero(max_lr, "unused decay-scaling field is not zero")?;
        }
        match kind {
            0 => DecayScaling::Lr,
            1 => DecayScaling::Fixed,
            2 => DecayScaling::Corrected {
                max_lr: Some(max_lr),
            },
            _ => return Err(err(CheckpointError::Malformed("unknown decay scaling"))),
        }
    } else {
        DecayScaling::Lr
    };
    let coefficient = f[4];
    let weight_decay = if coefficient == 0.0 {
        WeightDecay::None
    } else if flags & 1 != 0 {
        WeightDecay::Decoupled {
            weight_decay: coefficient,
            scaling,
            first_step: false,
        }
    } else {
        WeightDecay::L2(coefficient)
    };
    // A coefficient that is not a number (refused below) must not hide
    // as "no decay".
    if !(coefficient.is_finite() && coefficient >= 0.0) {
        return Err(Error::InvalidHyper {
            param: crate::HyperParam::WeightDecay,
            value: coefficient.into(),
        });
    }
    let hyper = Hyper {
        lr: f[0],
        betas: (f[1], f[2]),
        eps: f[3],
        weight_decay,
        maximize: flags & 2 != 0,
        clip,
        clip_offset: 0,
        nesterov: flags & 4 != 0,
        caution: if flags & 8 != 0 {
            Caution::Timm
        } else {
            Caution::Off
        },
    };
    let group = Group {
        hyper,
        initial_lr: f[0],
    };
    group.resolved().validate()?;
    Ok(group)
}

/// A saved state, its buffers still bytes, decoded once every parameter
/// has been read (see [`decode`]).
struct Saved<'a> {
    /// One step count, or (tables) the bytes of one per row.
    steps: SavedSteps<'a>,
    master: Option<&'a [u8]>,
    exp_avg: &'a [u8],
    exp_avg_sq: &'a [u8],
}

enum SavedSteps<'a> {
    Dense(u64),
    Rows(&'a [u8]),
}

/// A storage type's code in a layout record.
fn dtype_code(d: Dtype) -> u8 {
    match d {
        Dtype::F32 => 0,
        Dtype::Bf16 => 1,
        Dtype::F16 => 2,
    }
}

fn read_dtype(r: &mut Reader<'_>) -> Result<Dtype, Error> {
    match r.u8()? {
        0 => Ok(Dtype::F32),
        1 => Ok(Dtype::Bf16),
        2 => Ok(Dtype::F16),
        _ => Err(err(CheckpointError::Malformed("unknown storage type"))),
    }
}

/// Writes a parameter's layout record: 0 for dense f32, else 1 and the
/// fields.
fn write_layout(w: &mut Writer, layout: &Layout) {
    let lanes = layout.lanes().unwrap_or(0);
    if *layout == Layout::dense(lanes) {
        w.u8(0);
        return;
    }
    w.u8(1);
    match layout.shape() {
        Shape::Dense { .. } => w.u8(0),
        Shape::Complex { .. } => w.u8(1),
        Shape::Rows { rows, dim } => {
            w.u8(2);
            w.u64(rows as u64);
            w.u64(dim as u64);
        }
    }
    let (m, v) = layout.state_dtypes();
    for d in [layout.params_dtype(), layout.grads_dtype(), m, v] {
        w.u8(dtype_code(d));
    }
    w.u8(layout.has_master() as u8);
    match layout.rounding_mode() {
        Rounding::NearestEven => {
            w.u8(0);
            w.u64(0);
        }
        Rounding::Stochastic { seed } => {
            w.u8(1);
            w.u64(seed);
        }
    }
}

/// Reads a layout record of a parameter of `lanes` lanes (version 3; older
/// versions have none: dense f32).
fn read_layout(r: &mut Reader<'_>, lanes: usize) -> Result<Layout, Error> {
    let malformed = |why| Err(err(CheckpointError::Malformed(why)));
    match r.u8()? {
        0 => return Ok(Layout::dense(lanes)),
        1 => {}
        _ => return malformed("unknown parameter layout"),
    }
    let layout = match r.u8()? {
        0 => Layout::dense(lanes),
        1 if lanes.is_multiple_of(2) => Layout::complex(lanes / 2),
        1 => return malformed("a complex parameter has an odd number of lanes"),
        2 => {
            let rows = usize::try_from(r.u64()?);
            let dim = usize::try_from(r.u64()?);
            match (rows, dim) {
                (Ok(rows), Ok(dim)) if rows.checked_mul(dim) == Some(lanes) => {
                    Layout::rows(rows, dim)
                }
                _ => return malformed("a table's rows × dim are not its lanes"),
            }
        }
        _ => return malformed("unknown parameter shape"),
    };
    let (p, g, m, v) = (
        read_dtype(r)?,
        read_dtype(r)?,
        read_dtype(r)?,
        read_dtype(r)?,
    );
    let master = match r.u8()? {
        0 => false,
        1 => true,
        _ => return malformed("master flag is neither 0 nor 1"),
    };
    let rounding = match (r.u8()?, r.u64()?) {
        (0, 0) => Rounding::NearestEven,
        (0, _) => return malformed("unused rounding seed is not zero"),
        (1, seed) => Rounding::Stochastic { seed },
        _ => return malformed("unknown rounding"),
    };
    let layout = layout
        .params(p)
        .grads(g)
        .exp_avg(m)
        .exp_avg_sq(v)
        .master(master)
        .rounding(rounding);
    if layout == Layout::dense(lanes) {
        return malformed("a dense f32 layout written in full (it is written as 0)");
    }
    layout.validate()?;
    Ok(layout)
}

/// The bytes of `lanes` lanes of `dtype`.
fn lane_bytes<'a>(r: &mut Reader<'a>, dtype: Dtype, lanes: usize) -> Result<&'a [u8], Error> {
    r.take(
        lanes
            .checked_mul(dtype.size())
            .ok_or(err(CheckpointError::Truncated))?,
    )
}

/// Writes lanes as little-endian values (half-precision ones as their
/// bits).
fn write_lanes(w: &mut Writer, lanes: Lanes<'_>) {
    match lanes {
        Lanes::F32(x) => w.f32s(x),
        #[cfg(feature = "half")]
        Lanes::Bf16(x) => {
            for x in x {
                w.0.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        #[cfg(feature = "half")]
        Lanes::F16(x) => {
            for x in x {
                w.0.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
    }
}

/// The lanes of `dtype` the bytes hold.
fn buf(dtype: Dtype, bytes: &[u8]) -> Buf {
    #[cfg(feature = "half")]
    let halves = || {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    match dtype {
        #[cfg(feature = "half")]
        Dtype::Bf16 => Buf::Bf16(halves().map(half::bf16::from_bits).collect()),
        #[cfg(feature = "half")]
        Dtype::F16 => Buf::F16(halves().map(half::f16::from_bits).collect()),
        _ => Buf::F32(f32s(bytes)),
    }
}

/// Writes a parameter's state (the flag, then its fields).
fn write_state(w: &mut Writer, state: Option<&Stored>) {
    let Some(state) = state else {
        w.u8(0);
        return;
    };
    w.u8(1);
    let view = state.view();
    match view.steps {
        Steps::Dense(step) => w.u64(step),
        Steps::Rows(steps) => steps.iter().for_each(|&s| w.u64(s)),
    }
    if let Some(master) = view.master {
        w.f32s(master);
    }
    write_lanes(w, view.exp_avg);
    write_lanes(w, view.exp_avg_sq);
}

/// One parameter's record, its state (if any) still undecoded.
fn read_param<'a>(
    r: &mut Reader<'a>,
    version: u32,
    groups: usize,
) -> Result<(Param, Option<Saved<'a>>), Error> {
    let group = r.u32()?;
    if group as usize >= groups {
        return Err(err(CheckpointError::Malformed(
            "parameter names a missing group",
        )));
    }
    let lanes = usize::try_from(r.u64()?)
        .map_err(|_| err(CheckpointError::Malformed("lanes exceed usize")))?;
    let name = if version >= 2 {
        match r.u32()? {
            u32::MAX => None,
            len => {
                let bytes = r.take(len as usize)?;
                let name = core::str::from_utf8(bytes)
                    .map_err(|_| err(CheckpointError::Malformed("name is not UTF-8")))?;
                Some(String::from(name))
            }
        }
    } else {
        None
    };
    let layout = if version >= 3 {
        read_layout(r, lanes)?
    } else {
        Layout::dense(lanes)
    };
    let state = match r.u8()? {
        0 => None,
        1 => {
            let steps = match layout.shape() {
                Shape::Rows { rows, .. } => SavedSteps::Rows(
                    r.take(rows.checked_mul(8).ok_or(err(CheckpointError::Truncated))?)?,
                ),
                _ => SavedSteps::Dense(r.u64()?),
            };
            let master = if layout.has_master() {
                Some(lane_bytes(r, Dtype::F32, lanes)?)
            } else {
                None
            };
            let (m, v) = layout.state_dtypes();
            Some(Saved {
                steps,
                master,
                exp_avg: lane_bytes(r, m, lanes)?,
                exp_avg_sq: lane_bytes(r, v, lanes)?,
            })
        }
        _ => {
            return Err(err(CheckpointError::Malformed(
                "state flag is neither 0 nor 1",
            )));
        }
    };
    let param = Param {
        name,
        layout,
        group: GroupId(group),
        state: None,
    };
    Ok((param, state))
}

/// Little-endian f32s.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect()
}

/// Decodes a saved state of a parameter of `layout`.
fn decode_state(layout: &Layout, saved: &Saved<'_>) -> Stored {
    let (m, v) = layout.state_dtypes();
    match (&saved.steps, layout.shape()) {
        (SavedSteps::Rows(steps), Shape::Rows { dim, .. }) => {
            let steps = steps
                .chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            Stored::Rows(
                SparseState::from_parts(f32s(saved.exp_avg), f32s(saved.exp_avg_sq), steps, dim)
                    .expect("lengths read from the layout"),
            )
        }
        (SavedSteps::Dense(step), _) => Stored::Typed {
            step: *step,
            exp_avg: buf(m, saved.exp_avg),
            exp_avg_sq: buf(v, saved.exp_avg_sq),
            master: saved.master.map(f32s),
        },
        (SavedSteps::Rows(_), _) => unreachable!("rows are read for tables only"),
    }
}

/// Decodes a checkpoint of any supported version into groups and params.
fn decode(bytes: &[u8]) -> Result<(Vec<Group>, Vec<Param>), Error> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(err(CheckpointError::BadMagic));
    }
    let mut r = Reader(&bytes[MAGIC.len()..]);
    let version = r.u32()?;
    if version == 0 || version > VERSION {
        return Err(err(CheckpointError::UnsupportedVersion(version)));
    }
    let len = usize::try_from(r.u64()?).map_err(|_| err(CheckpointError::Truncated))?;
    // Header, payload and the 4-byte checksum; a length field near u64::MAX
    // must read as truncated, not overflow.
    let total = HEADER
        .checked_add(len)
        .and_then(|n| n.checked_add(4))
        .ok_or(err(CheckpointError::Truncated))?;
    if bytes.len() < total {
        return Err(err(CheckpointError::Truncated));
    }
    if bytes.len() > total {
        return Err(err(CheckpointError::TrailingBytes));
    }
    let end = total - 4;
    let stored = u32::from_le_bytes(bytes[end..].try_into().expect("4 bytes"));
    let computed = crc32(&bytes[..end]);
    if stored != computed {
        return Err(err(CheckpointError::ChecksumMismatch { stored, computed }));
    }
    let mut r = Reader(&bytes[HEADER..end]);
    let group_count = r.u32()? as usize;
    let mut groups = Vec::new();
    for _ in 0..group_count {
        groups.push(if version >= 3 {
            read_group(&mut r)?
        } else {
            read_old_group(&mut r, version)?
        });
    }
    let param_count = r.u32()? as usize;
    let mut params = Vec::new();
    let mut saved = Vec::new();
    for index in 0..param_count {
        let (param, state) = read_param(&mut r, version, groups.len())?;
        params.push(param);
        if let Some(state) = state {
            saved.push((index, state));
        }
    }
    if !r.0.is_empty() {
        return Err(err(CheckpointError::Malformed(
            "payload longer than its fields",
        )));
    }
    // The states last: plain states all first moments before the second
    // ones, laid out as a step creates them (`State::many`).
    let plain: Vec<&(usize, Saved<'_>)> = saved
        .iter()
        .filter(|(i, _)| Stored::plain_for(&params[*i].layout))
        .collect();
    let step = |s: &Saved<'_>| match s.steps {
        SavedSteps::Dense(step) => step,
        SavedSteps::Rows(_) => 0,
    };
    let states: Vec<State> = State::many(
        plain.len(),
        |i| f32s(plain[i].1.exp_avg),
        |i| f32s(plain[i].1.exp_avg_sq),
        |i| step(&plain[i].1),
    )
    .collect();
    for (&&(index, _), state) in plain.iter().zip(states) {
        params[index].state = Some(Stored::Plain(state));
    }
    for (index, s) in &saved {
        if !Stored::plain_for(&params[*index].layout) {
            params[*index].state = Some(decode_state(&params[*index].layout, s));
        }
    }
    Ok((groups, params))
}

/// For each registered parameter, the index of the checkpoint parameter
/// that loads into it.
type Mapping = Vec<usize>;

impl Adopt {
    /// The optimizer's whole state as a checkpoint (format version
    /// [`VERSION`], documented in [`checkpoint`](crate::checkpoint)).
    pub fn save(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(&MAGIC);
        w.u32(VERSION);
        w.u64(0); // payload length, patched below
        w.u32(self.groups.len() as u32);
        for (i, g) in self.groups.iter().enumerate() {
            write_group(&mut w, i, g)?;
        }
        w.u32(self.params.len() as u32);
        for p in &self.params {
            w.u32(p.group.0);
            w.u64(p.lanes() as u64);
            match &p.name {
                Some(name) => {
                    w.u32(name.len() as u32);
                    w.0.extend_from_slice(name.as_bytes());
                }
                None => w.u32(u32::MAX),
            }
            write_layout(&mut w, &p.layout);
            write_state(&mut w, p.state.as_ref());
        }
        let len = (w.0.len() - HEADER) as u64;
        w.0[12..20].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&w.0);
        w.u32(crc);
        Ok(w.0)
    }

    /// An optimizer restored from a checkpoint of any supported version,
    /// with the checkpoint's layout: its groups, parameters, names and
    /// states.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Adopt, Error> {
        let (groups, params) = decode(bytes)?;
        let mut opt = Adopt::new();
        // Validated by `decode`.
        opt.groups = groups;
        for p in params {
            let id = opt.add_param(p.group, p.layout, p.name.as_deref())?;
            opt.params[id.0 as usize].state = p.state;
        }
        Ok(opt)
    }

    /// Loads a checkpoint into this optimizer: every group's hyperparameters
    /// and every parameter's state, in the optimizer's layout.
    ///
    /// An optimizer with no groups and no parameters takes the checkpoint's
    /// layout. Otherwise the checkpoint must have the same layout, matched
    /// by position, as PyTorch's `load_state_dict` requires: as many groups
    /// ([`CheckpointError::GroupCountMismatch`]), as many parameters
    /// ([`CheckpointError::ParamCountMismatch`]), each in the same group
    /// ([`CheckpointError::GroupMismatch`]) with the same lanes
    /// ([`CheckpointError::LanesMismatch`]), and, where both the
    /// registered parameter and the checkpoint's name it, the same name
    /// ([`CheckpointError::NameMismatch`]). Use
    /// [`load_by_name`](Adopt::load_by_name) when the order changed, and
    /// `*self = Adopt::from_checkpoint(bytes)?` to take the checkpoint's
    /// layout instead.
    ///
    /// On any error the optimizer is unchanged: the checkpoint is decoded
    /// and checked completely before anything is replaced.
    ///
    /// ```
    /// use adopt::{Adopt, CheckpointError, Error, Hyper};
    /// let mut saved = Adopt::new();
    /// let g = saved.add_group(Hyper::default())?;
    /// saved.add_param(g, 4, Some("decoder.weight"))?;
    /// saved.add_param(g, 4, Some("encoder.weight"))?;
    /// let bytes = saved.save()?;
    ///
    /// let mut model = Adopt::new();
    /// let g = model.add_group(Hyper::default())?;
    /// model.add_param(g, 4, Some("encoder.weight"))?;
    /// model.add_param(g, 4, Some("decoder.weight"))?;
    /// assert!(matches!(
    ///     model.load(&bytes),
    ///     Err(Error::Checkpoint(CheckpointError::NameMismatch { param: 0, .. }))
    /// ));
    /// model.load_by_name(&bytes)?; // matched by name instead
    /// # Ok::<(), adopt::Error>(())
    /// ```
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let (groups, params) = decode(bytes)?;
        if self.groups.is_empty() && self.params.is_empty() {
            let kernel = self.kernel;
            *self = Adopt::from_checkpoint(bytes)?;
            self.kernel = kernel;
            return Ok(());
        }
        self.check_groups(&groups)?;
        if params.len() != self.params.len() {
            return Err(err(CheckpointError::ParamCountMismatch {
                expected: self.params.len() as u64,
                got: params.len() as u64,
            }));
        }
        for (i, (mine, theirs)) in self.params.iter().zip(&params).enumerate() {
            if let (Some(a), Some(b)) = (&mine.name, &theirs.name)
                && a != b
            {
                return Err(err(CheckpointError::NameMismatch {
                    param: i as u32,
                    expected: a.clone(),
                    got: b.clone(),
                }));
            }
        }
        let mapping: Mapping = (0..params.len()).collect();
        self.install(groups, params, &mapping)
    }

    /// [`load`](Adopt::load) with parameters matched by name: each named
    /// registered parameter receives the state of the checkpoint's
    /// parameter of that name, wherever it is; an unnamed one receives the
    /// state at its own position, which must be unnamed in the checkpoint
    /// too. Groups still match by position, and each parameter must be in
    /// the same group with the same lanes. Every checkpoint parameter must
    /// find its registered one ([`CheckpointError::NameNotFound`] names the
    /// first that does not; [`CheckpointError::DuplicateName`] a name used
    /// twice on either side).
    ///
    /// On any error the optimizer is unchanged.
    pub fn load_by_name(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let (groups, params) = decode(bytes)?;
        self.check_groups(&groups)?;
        if params.len() != self.params.len() {
            return Err(err(CheckpointError::ParamCountMismatch {
                expected: self.params.len() as u64,
                got: params.len() as u64,
            }));
        }
        let by_name = |ps: &[Param]| -> Result<BTreeMap<String, usize>, Error> {
            let mut map = BTreeMap::new();
            for (i, p) in ps.iter().enumerate() {
                if let Some(name) = &p.name
                    && map.insert(name.clone(), i).is_some()
                {
                    return Err(err(CheckpointError::DuplicateName { name: name.clone() }));
                }
            }
            Ok(map)
        };
        let theirs = by_name(&params)?;
        by_name(&self.params)?;
        let mut mapping: Mapping = Vec::with_capacity(self.params.len());
        for (i, mine) in self.params.iter().enumerate() {
            let source = match &mine.name {
                Some(name) => *theirs
                    .get(name)
                    .ok_or_else(|| err(CheckpointError::NameNotFound { name: name.clone() }))?,
                None if params[i].name.is_none() => i,
                None => {
                    return Err(err(CheckpointError::NameNotFound {
                        name: params[i].name.clone().unwrap_or_default(),
                    }));
                }
            };
            mapping.push(source);
        }
        self.install(groups, params, &mapping)
    }

    /// Checks the checkpoint's groups against the registered ones.
    fn check_groups(&self, groups: &[Group]) -> Result<(), Error> {
        if groups.len() != self.groups.len() {
            return Err(err(CheckpointError::GroupCountMismatch {
                expected: self.groups.len() as u32,
                got: groups.len() as u32,
            }));
        }
        Ok(())
    }

    /// Replaces the groups and installs the states of the checkpoint's
    /// parameters `mapping` names, after checking each one's group and
    /// lanes; changes nothing on error.
    fn install(
        &mut self,
        groups: Vec<Group>,
        mut params: Vec<Param>,
        mapping: &Mapping,
    ) -> Result<(), Error> {
        for (i, (mine, &source)) in self.params.iter().zip(mapping).enumerate() {
            let theirs = &params[source];
            if theirs.group != mine.group {
                return Err(err(CheckpointError::GroupMismatch {
                    param: i as u32,
                    expected: mine.group.0,
                    got: theirs.group.0,
                }));
            }
            if theirs.lanes() != mine.lanes() {
                return Err(err(CheckpointError::LanesMismatch {
                    param: i as u32,
                    expected: mine.lanes() as u64,
                    got: theirs.lanes() as u64,
                }));
            }
            if theirs.layout != mine.layout {
                return Err(err(CheckpointError::LayoutMismatch { param: i as u32 }));
            }
        }
        self.groups = groups;
        for (mine, &source) in self.params.iter_mut().zip(mapping) {
            mine.state = params[source].state.take();
        }
        Ok(())
    }
}
