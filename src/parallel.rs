//! Splitting large buffers across the rayon pool.
//!
//! The step is elementwise, so any split gives results bit-identical to a
//! serial step: each lane sees the same operations whichever chunk holds it
//! (the kernels' tail path runs the body's arithmetic on padded lanes).

use crate::hyper::StepConstants;
use crate::kernel::Kernel;

/// Below this many lanes a step stays on the calling thread: a rayon
/// fork/join costs more than it saves (measured in `benches/step.rs`; see
/// BENCHMARKS.md).
pub const PARALLEL_THRESHOLD: usize = 1 << 17;

/// Lanes per parallel task at least: large enough to amortise a task, a
/// multiple of every kernel's vector width.
#[cfg(feature = "rayon")]
const MIN_CHUNK: usize = 1 << 14;

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
    #[cfg(feature = "rayon")]
    {
        // Small buffers never touch the pool (not even to count its threads).
        if p.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
            let threads = rayon::current_num_threads();
            use rayon::prelude::*;
            // A few chunks per thread balance load without many tasks.
            let chunk = p
                .len()
                .div_ceil(4 * threads)
                .next_multiple_of(64)
                .max(MIN_CHUNK);
            p.par_chunks_mut(chunk)
                .zip(g.par_chunks(chunk))
                .zip(m.par_chunks_mut(chunk))
                .zip(v.par_chunks_mut(chunk))
                .for_each(|(((p, g), m), v)| kernel.run(p, g, m, v, k));
            return;
        }
    }
    kernel.run(p, g, m, v, k)
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
    if grads.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
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
    if p.len() >= PARALLEL_THRESHOLD && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        let chunk = p
            .len()
            .div_ceil(4 * rayon::current_num_threads())
            .next_multiple_of(64)
            .max(MIN_CHUNK);
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
