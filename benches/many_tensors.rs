//! Many small tensors against one large one of the same total size:
//! 10,000 × 100 lanes through `Adopt::step` against 1,000,000 lanes through
//! `adopt_step`, serial (one-thread pool) and in the global rayon pool.
//!
//! `cargo bench --bench many_tensors`

use adopt::{Adopt, Hyper, Item, ParamId, State, adopt_step};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const TENSORS: usize = 10_000;
const LANES: usize = 100;

fn bench(c: &mut Criterion) {
    let pools = [
        (
            "serial",
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        ),
        ("rayon", rayon::ThreadPoolBuilder::new().build().unwrap()),
    ];
    let total = TENSORS * LANES;
    let hyper = Hyper::default();
    let mut group = c.benchmark_group("many_tensors");
    group.throughput(Throughput::Elements(total as u64));
    group.sample_size(30);

    let mut one = vec![0.5_f32; total];
    let one_grads: Vec<f32> = (0..total).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut one_state = State::new(total);
    adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap();

    let mut opt = Adopt::new();
    let g = opt.add_group(hyper).unwrap();
    let ids: Vec<ParamId> = (0..TENSORS)
        .map(|_| opt.add_param(g, LANES, None).unwrap())
        .collect();
    let mut data: Vec<Vec<f32>> = (0..TENSORS).map(|_| vec![0.5_f32; LANES]).collect();
    let grads: Vec<Vec<f32>> = (0..TENSORS)
        .map(|t| one_grads[t * LANES..(t + 1) * LANES].to_vec())
        .collect();
    let step_many = |opt: &mut Adopt, data: &mut Vec<Vec<f32>>| {
        let mut items: Vec<Item<'_>> = data
            .iter_mut()
            .zip(&ids)
            .zip(&grads)
            .map(|((d, &id), g)| Item {
                id,
                params: d,
                grads: Some(g),
            })
            .collect();
        opt.step(&mut items).unwrap();
    };
    step_many(&mut opt, &mut data);

    // The same buffers stepped one `adopt_step` call each: the cost of the
    // kernel on small scattered buffers, without the optimizer's bookkeeping.
    let mut loop_states: Vec<State> = (0..TENSORS).map(|_| State::new(LANES)).collect();
    let mut loop_data = data.clone();
    group.bench_function(
        BenchmarkId::new("10000x100_adopt_step_loop", "serial"),
        |b| {
            b.iter(|| {
                for ((d, g), s) in loop_data.iter_mut().zip(&grads).zip(&mut loop_states) {
                    adopt_step(d, g, s, &hyper).unwrap();
                }
            })
        },
    );
    for (mode, pool) in &pools {
        group.bench_function(BenchmarkId::new("one_1M_tensor", mode), |b| {
            pool.install(|| {
                b.iter(|| adopt_step(&mut one, &one_grads, &mut one_state, &hyper).unwrap())
            })
        });
        group.bench_function(BenchmarkId::new("10000x100_tensors", mode), |b| {
            pool.install(|| b.iter(|| step_many(&mut opt, &mut data)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
