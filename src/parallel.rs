//! Splitting work across the rayon pool: the only module that names rayon.
//!
//! The step is elementwise, so any split gives results bit-identical to a
//! serial step: each lane sees the same operations whichever chunk holds it
//! (the kernels' tail path runs the body's arithmetic on padded lanes), and
//! stochastic rounding draws its bits from the lane's index in the whole
//! tensor, which every chunk is told.

use crate::hyper::StepConstants;
use crate::kernel::Kernel;

/// Below this many lanes a step stays on the calling thread: a rayon
/// fork/join costs more than it saves (measured in `benches/step.rs`; see
/// BENCHMARKS.md).
pub const PARALLEL_THRESHOLD: usize = 1 << 17;

/// Lanes per parallel task at least: large enough to amortise a task.
#[cfg(feature = "rayon")]
const MIN_CHUNK: usize = 1 << 14;

/// Chunks start at multiples of this many lanes: every kernel's vector
/// width divides it, and so does the half-precision block (512 lanes, which
/// keeps stochastic rounding's per-block keys whole).
#[cfg(feature = "rayon")]
const CHUNK_ALIGN: usize = 512;

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
#[cfg_attr(not(feature = "alloc"), allow(dead_code))] // the optimizer's and the sparse step's
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

/// The lanes of each task when `lanes` lanes are split: a few tasks per
/// thread balance load without many tasks.
#[cfg(feature = "rayon")]
fn chunk_len(lanes: usize) -> usize {
    lanes
        .div_ceil(4 * threads())
        .next_multiple_of(CHUNK_ALIGN)
        .max(MIN_CHUNK)
}

/// Calls `f(first_lane, p, g, m, v)` on equal-length chunks of four
/// equal-length buffers of any lane types, across the pool when the buffers
/// are large (else once, on this thread, with `first_lane` 0).
pub(crate) fn for_each_chunk<P, G, M, V>(
    p: &mut [P],
    g: &[G],
    m: &mut [M],
    v: &mut [V],
    f: impl Fn(usize, &mut [P], &[G], &mut [M], &mut [V]) + Sync + Send,
) where
    P: Send,
    G: Sync,
    M: Send,
    V: Send,
{
    #[cfg(feature = "rayon")]
    if worth_splitting(p.len()) {
        use rayon::prelude::*;
        let chunk = chunk_len(p.len());
        p.par_chunks_mut(chunk)
            .zip(g.par_chunks(chunk))
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (((p, g), m), v))| f(i * chunk, p, g, m, v));
        return;
    }
    f(0, p, g, m, v)
}

/// Calls `f(first_lane, a, b)` on equal-length chunks of two equal-length
/// buffers, across the pool when they are large.
#[cfg(feature = "half")]
pub(crate) fn for_each_chunk_pair<A: Sync, B: Send>(
    a: &[A],
    b: &mut [B],
    f: impl Fn(usize, &[A], &mut [B]) + Sync + Send,
) {
    #[cfg(feature = "rayon")]
    if worth_splitting(a.len()) {
        use rayon::prelude::*;
        let chunk = chunk_len(a.len());
        a.par_chunks(chunk)
            .zip(b.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (a, b))| f(i * chunk, a, b));
        return;
    }
    f(0, a, b)
}

/// Calls `f` on chunks of `tasks` of about `min_lanes` lanes of work each
/// (`lanes_per_task` each), across the pool when the work is large.
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
            let per = chunk_len(lanes).div_ceil(lanes_per_task.max(1)).max(1);
            tasks.par_chunks(per).for_each(f);
            return;
        }
    }
    let _ = lanes_per_task;
    f(tasks)
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
    for_each_chunk(p, g, m, v, |_, p, g, m, v| kernel.run(p, g, m, v, k));
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

/// The caution-mask count of equal-length slices, across the pool when large.
pub(crate) fn count(
    kernel: Kernel,
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: &StepConstants,
) -> u64 {
    #[cfg(feature = "rayon")]
    if worth_splitting(p.len()) {
        use rayon::prelude::*;
        let chunk = chunk_len(p.len());
        return p
            .par_chunks(chunk)
            .zip(g.par_chunks(chunk))
            .zip(m.par_chunks(chunk))
            .zip(v.par_chunks(chunk))
            .map(|(((p, g), m), v)| kernel.count(p, g, m, v, k))
            .sum();
    }
    kernel.count(p, g, m, v, k)
}
