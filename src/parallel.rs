//! Splitting work across the rayon pool: the only module that names rayon.
//!
//! The step is elementwise, so any split gives results bit-identical to a
//! serial step: each lane sees the same operations whichever piece holds it
//! (the kernels' tail path runs the body's arithmetic on padded lanes), and
//! stochastic rounding draws each lane's random bits from its index in the
//! whole tensor.
//!
//! A large buffer is cut in halves, recursively, down to pieces of about
//! `PIECE` lanes, each half a rayon task that an idle thread can steal:
//! on a shared host, where a thread can lose its core for a while, this
//! balanced better than one contiguous piece per thread as
//! `at::parallel_for` cuts (measured by `benches/ceilings.rs`; see
//! BENCHMARKS.md).

use crate::hyper::StepConstants;
use crate::kernel::Kernel;
#[cfg(feature = "half")]
use crate::kernel::generic::{Params, Storage};

/// Below this many lanes a step stays on the calling thread: a rayon
/// fork/join costs more than it saves (measured in `benches/step.rs`; see
/// BENCHMARKS.md).
pub const PARALLEL_THRESHOLD: usize = 1 << 17;

/// Pieces start at multiples of this many lanes: whole vectors of every
/// kernel and whole cache lines of f32 and 16-bit lanes.
#[cfg(feature = "rayon")]
const ALIGN: usize = 64;

/// Lanes per piece of a parallel step, about: large enough to amortise a
/// task, small enough to balance threads that run at different speeds.
#[cfg(feature = "rayon")]
const PIECE: usize = 1 << 15;

/// The number of pieces to cut a buffer of `lanes` lanes into: 1 (serial)
/// for small buffers or a one-thread pool.
#[inline]
fn pieces(lanes: usize) -> usize {
    #[cfg(feature = "rayon")]
    if worth_splitting(lanes) {
        return lanes.div_ceil(PIECE);
    }
    let _ = lanes;
    1
}

/// Lanes of work per chunk of tasks at least: large enough to amortise a
/// task.
#[cfg(feature = "rayon")]
const MIN_TASK_CHUNK: usize = 1 << 14;

/// The threads of the current pool (1 without the `rayon` feature).
#[inline]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // the optimizer's and the sparse step's
pub(crate) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// Whether work of `lanes` lanes is worth splitting across the pool.
/// Small work never touches the pool (not even to count its threads).
#[inline]
#[cfg_attr(not(any(feature = "rayon", feature = "alloc")), allow(dead_code))]
pub(crate) fn worth_splitting(lanes: usize) -> bool {
    lanes >= PARALLEL_THRESHOLD && threads() > 1
}

/// Runs `a` and `b`, on two pool threads when the pool has them.
#[inline]
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // the optimizer's and the sparse step's
pub(crate) fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB)
where
    A: FnOnce() -> RA + Send,
    B: FnOnce() -> RB + Send,
    RA: Send,
    RB: Send,
{
    #[cfg(feature = "rayon")]
    {
        rayon::join(a, b)
    }
    #[cfg(not(feature = "rayon"))]
    {
        (a(), b())
    }
}

/// Calls `f` on chunks of `tasks` (`lanes_per_task` lanes of work each),
/// a few chunks per thread, across the pool when the work is large.
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // the optimizer's and the sparse step's
pub(crate) fn for_each_task_chunk<T: Sync>(
    tasks: &[T],
    lanes_per_task: usize,
    f: impl Fn(&[T]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    {
        let lanes = tasks.len().saturating_mul(lanes_per_task);
        if worth_splitting(lanes) {
            use rayon::prelude::*;
            // A few tasks per thread balance load without many tasks.
            let chunk = lanes.div_ceil(4 * threads()).max(MIN_TASK_CHUNK);
            let per = chunk.div_ceil(lanes_per_task.max(1)).max(1);
            tasks.par_chunks(per).for_each(f);
            return;
        }
    }
    let _ = lanes_per_task;
    f(tasks)
}

/// Work that can be cut at a lane.
#[cfg_attr(not(feature = "rayon"), allow(dead_code))]
trait Work: Sized + Send {
    fn lanes(&self) -> usize;
    fn split_at(self, mid: usize) -> (Self, Self);
}

/// Runs `f` over `pieces` contiguous pieces of `work`, in parallel, and
/// adds up what they return.
fn split<W: Work, F: Fn(W) -> u64 + Sync>(work: W, pieces: usize, f: &F) -> u64 {
    #[cfg(feature = "rayon")]
    if pieces > 1 {
        let left = pieces / 2;
        let lanes = work.lanes();
        let mid = (lanes / pieces * left).next_multiple_of(ALIGN).min(lanes);
        let (a, b) = work.split_at(mid);
        let (x, y) = rayon::join(|| split(a, left, f), || split(b, pieces - left, f));
        return x + y;
    }
    let _ = pieces;
    f(work)
}

/// The four f32 buffers of a step.
struct F32<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl Work for F32<'_> {
    fn lanes(&self) -> usize {
        self.p.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at_mut(mid);
        let (g0, g1) = self.g.split_at(mid);
        let (m0, m1) = self.m.split_at_mut(mid);
        let (v0, v1) = self.v.split_at_mut(mid);
        let a = F32 {
            p: p0,
            g: g0,
            m: m0,
            v: v0,
        };
        (
            a,
            F32 {
                p: p1,
                g: g1,
                m: m1,
                v: v1,
            },
        )
    }
}

/// Steps equal-length slices with `kernel`, across the current rayon pool
/// when the buffer is large and the pool has more than one thread.
#[inline]
pub(crate) fn run(
    kernel: Kernel,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    k: &StepConstants,
) {
    let pieces = pieces(p.len());
    if pieces <= 1 {
        return kernel.run(p, g, m, v, k);
    }
    split(F32 { p, g, m, v }, pieces, &|b: F32<'_>| {
        kernel.run(b.p, b.g, b.m, b.v, k);
        0
    });
}

/// The caution-mask count of equal-length slices, across the pool when large.
pub(crate) fn count(
    kernel: Kernel,
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: &StepConstants,
) -> u64 {
    let pieces = pieces(p.len());
    if pieces <= 1 {
        return kernel.count(p, g, m, v, k);
    }
    split(Read { p, g, m, v }, pieces, &|b: Read<
        '_,
        f32,
        f32,
        f32,
        f32,
    >| {
        kernel.count(b.p, b.g, b.m, b.v, k)
    })
}

/// Four read-only buffers of any storage.
struct Read<'a, P, G, M, W> {
    p: &'a [P],
    g: &'a [G],
    m: &'a [M],
    v: &'a [W],
}

impl<P: Sync, G: Sync, M: Sync, W: Sync> Work for Read<'_, P, G, M, W> {
    fn lanes(&self) -> usize {
        self.p.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.p.split_at(mid);
        let (g0, g1) = self.g.split_at(mid);
        let (m0, m1) = self.m.split_at(mid);
        let (v0, v1) = self.v.split_at(mid);
        let a = Read {
            p: p0,
            g: g0,
            m: m0,
            v: v0,
        };
        (
            a,
            Read {
                p: p1,
                g: g1,
                m: m1,
                v: v1,
            },
        )
    }
}

/// A typed step's buffers.
#[cfg(feature = "half")]
struct Typed<'a, X, G, M, W> {
    out: X,
    g: &'a [G],
    m: &'a mut [M],
    v: &'a mut [W],
}

#[cfg(feature = "half")]
impl<X: Params + Send, G: Storage, M: Storage, W: Storage> Work for Typed<'_, X, G, M, W> {
    fn lanes(&self) -> usize {
        self.g.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (o0, o1) = self.out.split_at(mid);
        let (g0, g1) = self.g.split_at(mid);
        let (m0, m1) = self.m.split_at_mut(mid);
        let (v0, v1) = self.v.split_at_mut(mid);
        let a = Typed {
            out: o0,
            g: g0,
            m: m0,
            v: v0,
        };
        (
            a,
            Typed {
                out: o1,
                g: g1,
                m: m1,
                v: v1,
            },
        )
    }
}

/// Steps equal-length buffers of any storage with `kernel`, across the
/// pool when large.
#[cfg(feature = "half")]
pub(crate) fn run_typed<X: Params + Send, G: Storage, M: Storage, W: Storage>(
    kernel: Kernel,
    out: X,
    g: &[G],
    m: &mut [M],
    v: &mut [W],
    k: &StepConstants,
) {
    let pieces = pieces(g.len());
    if pieces <= 1 {
        return kernel.run_typed(out, g, m, v, k);
    }
    split(Typed { out, g, m, v }, pieces, &|b: Typed<
        '_,
        X,
        G,
        M,
        W,
    >| {
        kernel.run_typed(b.out, b.g, b.m, b.v, k);
        0
    });
}

/// The caution count of equal-length buffers of any storage, across the
/// pool when large.
#[cfg(feature = "half")]
pub(crate) fn count_typed<P: Storage, G: Storage, M: Storage, W: Storage>(
    kernel: Kernel,
    p: &[P],
    g: &[G],
    m: &[M],
    v: &[W],
    k: &StepConstants,
) -> u64 {
    let pieces = pieces(p.len());
    if pieces <= 1 {
        return kernel.count_typed(p, g, m, v, k);
    }
    split(Read { p, g, m, v }, pieces, &|b: Read<'_, P, G, M, W>| {
        kernel.count_typed(b.p, b.g, b.m, b.v, k)
    })
}

/// Whether a chunk holds a NaN or ±inf, branch-free so it vectorises.
fn chunk_nonfinite(chunk: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    chunk.iter().fold(false, |found, x| {
        found | (x.to_bits() & EXPONENT == EXPONENT)
    })
}

/// Whether any lane is NaN or ±inf, stopping at the first chunk that has one.
pub(crate) fn any_nonfinite(grads: &[f32]) -> bool {
    const CHUNK: usize = 4096;
    #[cfg(feature = "rayon")]
    if worth_splitting(grads.len()) {
        use rayon::prelude::*;
        return grads.par_chunks(CHUNK).any(chunk_nonfinite);
    }
    grads.chunks(CHUNK).any(chunk_nonfinite)
}
