//! Saving and loading an [`Adopt`]'s whole state.
//!
//! # Format (version 2), little-endian throughout
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"ADOPTCK\0"
//! 8       4     version: u32 (2; version 1 is still read)
//! 12      8     payload length in bytes: u64
//! 20      n     payload
//! 20+n    4     CRC-32 (IEEE, as zlib) of bytes 0 .. 20+n: u32
//!
//! payload:
//!   groups: u32, then per group:
//!     lr, beta1, beta2, eps, weight_decay: f64 × 5
//!     flags: u8          bit 0 decouple, bit 1 maximize,
//!                        bit 2 nesterov (v2), bit 3 cautious (v2)
//!     clip kind: u8      0 none, 1 constant(a), 2 power(a = scale, b = exponent)
//!     clip a, clip b: f64 × 2 (+0.0 when unused, required)
//!     decay scaling: u8  0 lr, 1 fixed, 2 corrected(max_lr)        (v2 only)
//!     max_lr: f64        (+0.0 unless corrected, required)        (v2 only)
//!   params: u32, then per param:
//!     group: u32, lanes: u64
//!     name: u32 byte length (u32::MAX for none) + UTF-8 bytes      (v2 only)
//!     has state: u8 (0 or 1); if 1: step u64, exp_avg f32 × lanes,
//!     exp_avg_sq f32 × lanes
//! ```
//!
//! The encoding is canonical: a checkpoint that loads re-encodes to the same
//! bytes, so unused fields must hold +0.0 and flags only known bits.
//!
//! Version 1 lacks the fields marked v2; loading it fills their defaults
//! (no names, [`DecayScaling::Lr`], no Nesterov, not cautious), as the reference's
//! `__setstate__` does for old checkpoints. `tests/data/checkpoint_v1.bin`
//! is a committed version-1 checkpoint that every build must load.
//!
//! A group using [`Clip::Custom`] (a function) cannot be saved:
//! [`Adopt::save`] returns [`CheckpointError::CustomClip`]; a group whose
//! hyperparameters are invalid gets their [`Error::InvalidHyper`], so every
//! checkpoint that saves also loads.
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

use crate::error::{CheckpointError, Error};
use crate::hyper::{Clip, DecayScaling, Hyper};
use crate::optimizer::{Adopt, GroupId, Param};
use crate::state::State;
use alloc::string::String;
use alloc::vec::Vec;

/// The first 8 bytes of every checkpoint.
pub const MAGIC: [u8; 8] = *b"ADOPTCK\0";
/// The format version [`Adopt::save`] writes.
pub const VERSION: u32 = 2;

const HEADER: usize = 20;

/// CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`).
///
/// ```
/// assert_eq!(adopt::checkpoint::crc32(b"123456789"), 0xcbf4_3926);
/// ```
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
    /// The bytes of `n` f32s.
    fn f32_bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        self.take(n.checked_mul(4).ok_or(err(CheckpointError::Truncated))?)
    }
}

fn write_group(w: &mut Writer, index: usize, h: &Hyper) -> Result<(), Error> {
    // What is saved must load: hyperparameters made invalid through
    // `hyper_mut` are refused here, not discovered at load time.
    h.validate()?;
    for x in [h.lr, h.betas.0, h.betas.1, h.eps, h.weight_decay] {
        w.f64(x);
    }
    w.u8(h.decouple as u8
        | (h.maximize as u8) << 1
        | (h.nesterov as u8) << 2
        | (h.cautious as u8) << 3);
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
    let (kind, max_lr) = match h.decay_scaling {
        DecayScaling::Lr => (0, 0.0),
        DecayScaling::Fixed => (1, 0.0),
        DecayScaling::Corrected { max_lr } => (2, max_lr),
    };
    w.u8(kind);
    w.f64(max_lr);
    Ok(())
}

fn read_group(r: &mut Reader<'_>, version: u32) -> Result<Hyper, Error> {
    let mut f = [0.0; 5];
    for x in &mut f {
        *x = r.f64()?;
    }
    let flags = r.u8()?;
    let known_flags = if version >= 2 { 0b1111 } else { 0b11 };
    if flags & !known_flags != 0 {
        return Err(err(CheckpointError::Malformed("unknown group flags")));
    }
    let (kind, a, b) = (r.u8()?, r.f64()?, r.f64()?);
    // Fields a kind does not use are written as +0.0; anything else is not
    // a checkpoint this crate wrote (and would not re-encode to itself).
    let unused_is_zero = |x: f64, what| {
        if x.to_bits() == 0 {
            Ok(())
        } else {
            Err(err(CheckpointError::Malformed(what)))
        }
    };
    let clip = match kind {
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
    };
    let decay_scaling = if version >= 2 {
        let (kind, max_lr) = (r.u8()?, r.f64()?);
        if kind != 2 {
            unused_is_zero(max_lr, "unused decay-scaling field is not zero")?;
        }
        match kind {
            0 => DecayScaling::Lr,
            1 => DecayScaling::Fixed,
            2 => DecayScaling::Corrected { max_lr },
            _ => return Err(err(CheckpointError::Malformed("unknown decay scaling"))),
        }
    } else {
        DecayScaling::Lr
    };
    let hyper = Hyper {
        lr: f[0],
        betas: (f[1], f[2]),
        eps: f[3],
        weight_decay: f[4],
        decouple: flags & 1 != 0,
        maximize: flags & 2 != 0,
        nesterov: flags & 4 != 0,
        cautious: flags & 8 != 0,
        clip,
        decay_scaling,
    };
    hyper.validate()?;
    Ok(hyper)
}

/// A saved state's step count and the bytes of its two moments, decoded
/// once every parameter has been read (see [`decode`]).
type SavedState<'a> = (u64, &'a [u8], &'a [u8]);

/// One parameter's record, its state (if any) still undecoded.
fn read_param<'a>(
    r: &mut Reader<'a>,
    version: u32,
    groups: usize,
) -> Result<(Param, Option<SavedState<'a>>), Error> {
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
    let state = match r.u8()? {
        0 => None,
        1 => {
            let step = r.u64()?;
            let exp_avg = r.f32_bytes(lanes)?;
            let exp_avg_sq = r.f32_bytes(lanes)?;
            Some((step, exp_avg, exp_avg_sq))
        }
        _ => {
            return Err(err(CheckpointError::Malformed(
                "state flag is neither 0 nor 1",
            )));
        }
    };
    let param = Param {
        name,
        lanes,
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

/// Decodes a checkpoint of any supported version into groups and params.
fn decode(bytes: &[u8]) -> Result<(Vec<Hyper>, Vec<Param>), Error> {
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
        groups.push(read_group(&mut r, version)?);
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
    // The states last, all first moments before the second ones, laid out
    // as a step creates them (`State::many`).
    let states = State::many(
        saved.len(),
        |i| f32s(saved[i].1.1),
        |i| f32s(saved[i].1.2),
        |i| saved[i].1.0,
    );
    let states: Vec<State> = states.collect();
    for (&(index, _), state) in saved.iter().zip(states) {
        params[index].state = Some(state);
    }
    Ok((groups, params))
}

impl Adopt {
    /// The optimizer's whole state as a checkpoint (format version
    /// [`VERSION`], documented in [`checkpoint`](crate::checkpoint)).
    pub fn save(&self) -> Result<Vec<u8>, Error> {
        let mut w = Writer(Vec::new());
        w.0.extend_from_slice(&MAGIC);
        w.u32(VERSION);
        w.u64(0); // payload length, patched below
        w.u32(self.groups.len() as u32);
        for (i, h) in self.groups.iter().enumerate() {
            write_group(&mut w, i, h)?;
        }
        w.u32(self.params.len() as u32);
        for p in &self.params {
            w.u32(p.group.0);
            w.u64(p.lanes as u64);
            match &p.name {
                Some(name) => {
                    w.u32(name.len() as u32);
                    w.0.extend_from_slice(name.as_bytes());
                }
                None => w.u32(u32::MAX),
            }
            match &p.state {
                Some(s) => {
                    w.u8(1);
                    w.u64(s.step());
                    w.f32s(s.exp_avg());
                    w.f32s(s.exp_avg_sq());
                }
                None => w.u8(0),
            }
        }
        let len = (w.0.len() - HEADER) as u64;
        w.0[12..20].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&w.0);
        w.u32(crc);
        Ok(w.0)
    }

    /// An optimizer restored from a checkpoint of any supported version.
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Adopt, Error> {
        let (groups, params) = decode(bytes)?;
        let mut opt = Adopt::new();
        for h in groups {
            opt.add_group(h)?;
        }
        for p in params {
            let id = opt.add_param(p.group, p.lanes, p.name.as_deref())?;
            opt.params[id.0 as usize].state = p.state;
        }
        Ok(opt)
    }

    /// Loads a checkpoint into this optimizer, replacing groups and states.
    ///
    /// If parameters are registered, the checkpoint must hold as many, each
    /// with the same lanes ([`CheckpointError::ShapeMismatch`] otherwise). On
    /// any error the optimizer is unchanged: the checkpoint is decoded and
    /// checked completely before anything is replaced.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let restored = Adopt::from_checkpoint(bytes)?;
        if !self.params.is_empty() {
            if restored.params.len() != self.params.len() {
                return Err(err(CheckpointError::ShapeMismatch {
                    param: u32::MAX,
                    expected: self.params.len() as u64,
                    got: restored.params.len() as u64,
                }));
            }
            for (i, (mine, theirs)) in self.params.iter().zip(&restored.params).enumerate() {
                if mine.lanes != theirs.lanes {
                    return Err(err(CheckpointError::ShapeMismatch {
                        param: i as u32,
                        expected: mine.lanes as u64,
                        got: theirs.lanes as u64,
                    }));
                }
            }
        }
        *self = restored;
        Ok(())
    }
}
