//! A knowledge-graph-embedding-shaped step: two row-sparse tables of
//! 1M × 64 lanes with 1% of their rows touched (listed with repeats, as a
//! batch of lookups lists them) plus 20 dense tensors of 4K to 256K lanes,
//! stepped as one `Adopt::step` against the same pieces stepped one call
//! each (`adopt_step_rows` per table, `adopt_step` per dense tensor).
//!
//! Paired: the two sides alternate, each step's time is measured on its
//! own, and the median of the per-pair ratios is reported (robust on a
//! noisy host), with each side's median, on one thread and on the whole
//! pool.
//!
//! `cargo bench --bench kge` (`KGE_PAIRS=n` for more pairs; default 15).

use adopt::{
    Adopt, Entry, Grads, Hyper, Layout, ParamId, SparseState, State, adopt_step, adopt_step_rows,
};
use std::time::Instant;

const ROWS: usize = 1 << 20;
const DIM: usize = 64;
const TOUCHED: usize = ROWS / 100;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A deterministic pseudo-random stream.
fn hash(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn main() {
    let pairs: usize = std::env::var("KGE_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let hyper = Hyper {
        lr: 1e-2,
        ..Hyper::default()
    };
    let dense_lanes: Vec<usize> = (0..20).map(|i| 4096 << (i % 7)).collect();
    // The batches: each step lists 1% of each table's rows, with repeats.
    let batches: Vec<[Vec<u32>; 2]> = (0..4)
        .map(|b| {
            [0, 1].map(|t| {
                (0..TOUCHED)
                    .map(|i| (hash((b * 2 + t) as u64 * 1_000_003 + i as u64) % ROWS as u64) as u32)
                    .collect()
            })
        })
        .collect();
    let values: Vec<f32> = (0..TOUCHED * DIM)
        .map(|i| ((i % 97) as f32 - 48.0) / 500.0)
        .collect();
    let dense_grads: Vec<Vec<f32>> = dense_lanes
        .iter()
        .map(|&n| (0..n).map(|i| ((i % 89) as f32 - 44.0) / 300.0).collect())
        .collect();

    // One optimizer over everything.
    let mut opt = Adopt::new();
    let g = opt.add_group(hyper).unwrap();
    let tables_ids: Vec<ParamId> = (0..2)
        .map(|_| opt.add_param(g, Layout::rows(ROWS, DIM), None).unwrap())
        .collect();
    let dense_ids: Vec<ParamId> = dense_lanes
        .iter()
        .map(|&n| opt.add_param(g, n, None).unwrap())
        .collect();
    let mut tables = [vec![0.1_f32; ROWS * DIM], vec![0.1_f32; ROWS * DIM]];
    let mut dense: Vec<Vec<f32>> = dense_lanes.iter().map(|&n| vec![0.1_f32; n]).collect();

    // The same pieces, one call each.
    let mut sep_tables = tables.clone();
    let mut sep_states = [SparseState::new(ROWS, DIM), SparseState::new(ROWS, DIM)];
    let mut sep_dense = dense.clone();
    let mut sep_dense_states: Vec<State> = dense_lanes.iter().map(|&n| State::new(n)).collect();

    let mut step_one = |b: usize, tables: &mut [Vec<f32>; 2], dense: &mut [Vec<f32>]| {
        let [t0, t1] = tables;
        let mut entries: Vec<Entry<'_>> = vec![
            Entry {
                id: tables_ids[0],
                params: (&mut t0[..]).into(),
                grads: Some(Grads::Rows {
                    rows: &batches[b][0],
                    values: &values,
                }),
            },
            Entry {
                id: tables_ids[1],
                params: (&mut t1[..]).into(),
                grads: Some(Grads::Rows {
                    rows: &batches[b][1],
                    values: &values,
                }),
            },
        ];
        for ((d, &id), grads) in dense.iter_mut().zip(&dense_ids).zip(&dense_grads) {
            entries.push(Entry {
                id,
                params: (&mut d[..]).into(),
                grads: Some((&grads[..]).into()),
            });
        }
        let t = Instant::now();
        opt.step(&mut entries).unwrap();
        t.elapsed().as_secs_f64()
    };
    let mut step_separate = |b: usize| {
        let t = Instant::now();
        for (i, (table, state)) in sep_tables.iter_mut().zip(&mut sep_states).enumerate() {
            adopt_step_rows(table, &batches[b][i], &values, state, &hyper).unwrap();
        }
        for ((d, g), s) in sep_dense
            .iter_mut()
            .zip(&dense_grads)
            .zip(&mut sep_dense_states)
        {
            adopt_step(d, g, s, &hyper).unwrap();
        }
        t.elapsed().as_secs_f64()
    };

    println!(
        "kge: 2 tables of {ROWS} x {DIM} lanes, {TOUCHED} rows listed each (1%, with repeats), \
         plus 20 dense tensors ({} lanes); {pairs} pairs",
        dense_lanes.iter().sum::<usize>()
    );
    for (mode, threads) in [("one thread", 1), ("pool", 0)] {
        let mut builder = rayon::ThreadPoolBuilder::new();
        if threads > 0 {
            builder = builder.num_threads(threads);
        }
        let pool = builder.build().unwrap();
        let (mut ones, mut seps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        pool.install(|| {
            for i in 0..pairs + 2 {
                let b = i % batches.len();
                // Alternate which side goes first.
                let (one, sep) = if i % 2 == 0 {
                    let one = step_one(b, &mut tables, &mut dense);
                    (one, step_separate(b))
                } else {
                    let sep = step_separate(b);
                    (step_one(b, &mut tables, &mut dense), sep)
                };
                if i >= 2 {
                    ones.push(one);
                    seps.push(sep);
                    ratios.push(one / sep);
                }
            }
        });
        println!(
            "{mode:>10} ({} threads): one Adopt::step {:8.3} ms, separate calls {:8.3} ms, \
             one/separate median ratio {:.3}",
            pool.current_num_threads(),
            median(ones) * 1e3,
            median(seps) * 1e3,
            median(ratios)
        );
    }
}
