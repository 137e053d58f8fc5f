//! A steady-state step performs no heap allocation: serial, split across the
//! rayon pool, in the reference, and `Adopt::step` over many buffers.
//! Counted with a global allocator.

mod common;

use adopt::{Adopt, Caution, Hyper, Item, State, WeightDecay, adopt_step};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A rayon pool whose threads have ended when it drops. A dropped
/// `rayon::ThreadPool` lets its threads exit on their own time, and an
/// exiting thread's destructors allocate (crossbeam's epoch hands its
/// last garbage bag to the global queue), which a slow host (qemu) can
/// delay into a later measurement.
struct Pool {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// A pool of `n` threads, every one started (a starting worker
    /// allocates its queues).
    fn new(n: usize) -> Self {
        let mut threads = Vec::new();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .spawn_handler(|thread| {
                threads.push(std::thread::Builder::new().spawn(|| thread.run())?);
                Ok(())
            })
            .build()
            .unwrap();
        pool.broadcast(|_| ());
        Pool {
            pool: Some(pool),
            threads,
        }
    }
}

impl std::ops::Deref for Pool {
    type Target = rayon::ThreadPool;
    fn deref(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().unwrap()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.pool.take());
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

/// The one test of this binary, so no other test allocates meanwhile.
#[test]
fn steady_state_steps_do_not_allocate() {
    // Every pool thread started (a starting rayon worker allocates its
    // queues, which a busy host can delay into the measured steps).
    rayon::broadcast(|_| ());
    let hyper = Hyper {
        weight_decay: WeightDecay::l2(0.01),
        ..Hyper::default()
    };
    for lanes in [0, 1, 1000, adopt::PARALLEL_THRESHOLD * 4 + 3] {
        let mut params = vec![0.5_f32; lanes];
        let grads = vec![0.25_f32; lanes];
        let mut state = State::new(lanes);
        // Warm-up: kernel detection, the rayon pool's threads, first step.
        for _ in 0..3 {
            adopt_step(&mut params, &grads, &mut state, &hyper).unwrap();
            adopt::reference::adopt_step(&mut params, &grads, &mut state, &hyper).unwrap();
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..20 {
            adopt_step(&mut params, &grads, &mut state, &hyper).unwrap();
        }
        let step = ALLOCATIONS.load(Ordering::SeqCst) - before;
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        adopt::reference::adopt_step(&mut params, &grads, &mut state, &hyper).unwrap();
        let reference = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(step, 0, "{lanes} lanes: 20 steps allocated {step} times");
        assert_eq!(reference, 0, "{lanes} lanes: the reference allocated");
        // The counter works: a Vec allocates.
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        std::hint::black_box(vec![0_u8; 16]);
        assert!(ALLOCATIONS.load(Ordering::SeqCst) > before);
    }

    // `Adopt::step` keeps its scratch between steps: serial (small) and
    // parallel (large) totals, with a cautious group and a skipped item.
    for big in [10, adopt::PARALLEL_THRESHOLD * 2] {
        let mut opt = Adopt::new();
        let plain = opt.add_group(hyper).unwrap();
        let cautious = opt
            .add_group(Hyper {
                caution: Caution::Timm,
                ..hyper
            })
            .unwrap();
        let ids = [
            opt.add_param(plain, big, None).unwrap(),
            opt.add_param(cautious, 7, None).unwrap(),
            opt.add_param(plain, 3, None).unwrap(),
        ];
        let (mut a, mut b, mut c) = (vec![0.5_f32; big], vec![0.5_f32; 7], vec![0.5_f32; 3]);
        let (ga, gb) = (vec![0.25_f32; big], vec![-0.25_f32; 7]);
        let mut step = |opt: &mut Adopt| {
            opt.step(&mut [
                Item {
                    id: ids[0],
                    params: &mut a,
                    grads: Some(&ga),
                },
                Item {
                    id: ids[1],
                    params: &mut b,
                    grads: Some(&gb),
                },
                Item {
                    id: ids[2],
                    params: &mut c,
                    grads: None,
                },
            ])
            .unwrap()
        };
        for _ in 0..3 {
            step(&mut opt);
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..20 {
            step(&mut opt);
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(
            allocated, 0,
            "Adopt::step ({big} lanes) allocated {allocated} times"
        );
        assert_eq!(opt.state(ids[0]).unwrap().unwrap().step(), 23);
    }

    // Many small buffers on a two-thread pool: validated in two halves at
    // once (from 4,096 items), in three groups at different step counts.
    let pool = Pool::new(2);
    let mut opt = Adopt::new();
    let groups: Vec<_> = [1e-3, 1e-2, 1e-1]
        .iter()
        .map(|&lr| opt.add_group(Hyper { lr, ..hyper }).unwrap())
        .collect();
    let n = 6_000;
    let ids: Vec<_> = (0..n)
        .map(|i| opt.add_param(groups[i % 3], 1 + i % 9, None).unwrap())
        .collect();
    let mut data: Vec<Vec<f32>> = (0..n).map(|i| vec![0.5_f32; 1 + i % 9]).collect();
    let grads: Vec<Vec<f32>> = (0..n).map(|i| vec![0.25_f32; 1 + i % 9]).collect();
    let mut items = common::items(&mut data, &ids, &grads, |i| i % 50 != 0);
    let allocated = pool.install(|| {
        for _ in 0..3 {
            opt.step(&mut items).unwrap();
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..20 {
            opt.step(&mut items).unwrap();
        }
        ALLOCATIONS.load(Ordering::SeqCst) - before
    });
    assert_eq!(
        allocated, 0,
        "Adopt::step over {n} buffers on two threads allocated {allocated} times"
    );
    assert_eq!(opt.state(ids[1]).unwrap().unwrap().step(), 23);
    drop(pool);

    // Every layout in one step, serial and split across the pool: bf16
    // parameters with a master copy and stochastic rounding, f16 moments,
    // complex lanes, and row-sparse tables with listed (repeated) rows and
    // with a dense gradient. Table plans live in the optimizer's scratch,
    // so a steady-state step allocates nothing for them either.
    for (pool_threads, big) in [(1, 1000), (2, adopt::PARALLEL_THRESHOLD + 7)] {
        use adopt::{Dtype, Entry, Grads, Layout, Rounding};
        use half::{bf16, f16};
        let pool = Pool::new(pool_threads);
        let mut opt = Adopt::new();
        let g = opt
            .add_group(Hyper {
                caution: Caution::PytorchOptimizer,
                ..hyper
            })
            .unwrap();
        let a = opt
            .add_param(
                g,
                Layout::dense(big)
                    .params(Dtype::Bf16)
                    .master(true)
                    .rounding(Rounding::Stochastic { seed: 1 }),
                None,
            )
            .unwrap();
        let b = opt
            .add_param(
                g,
                Layout::dense(33).params(Dtype::F16).exp_avg(Dtype::F16),
                None,
            )
            .unwrap();
        let c = opt.add_param(g, Layout::complex(9), None).unwrap();
        let t = opt.add_param(g, Layout::rows(500, 16), None).unwrap();
        let u = opt.add_param(g, Layout::rows(40, 8), None).unwrap();
        let mut pa = vec![bf16::from_f32(0.5); big];
        let ga = vec![bf16::from_f32(0.25); big];
        let mut pb = [f16::from_f32(0.5); 33];
        let gb = [f16::from_f32(-0.25); 33];
        let (mut pc, gc) = (vec![0.5_f32; 18], vec![0.25_f32; 18]);
        let (mut pt, mut pu) = (vec![0.5_f32; 500 * 16], vec![0.5_f32; 40 * 8]);
        let rows: Vec<u32> = (0..300).map(|i| (i * 7) % 500).chain([3, 3, 17]).collect();
        let values = vec![0.125_f32; rows.len() * 16];
        let dense_u = vec![0.5_f32; 40 * 8];
        let mut step = |opt: &mut Adopt| {
            opt.step(&mut [
                Entry {
                    id: a,
                    params: (&mut pa[..]).into(),
                    grads: Some((&ga[..]).into()),
                },
                Entry {
                    id: b,
                    params: (&mut pb[..]).into(),
                    grads: Some((&gb[..]).into()),
                },
                Entry {
                    id: c,
                    params: (&mut pc[..]).into(),
                    grads: Some((&gc[..]).into()),
                },
                Entry {
                    id: t,
                    params: (&mut pt[..]).into(),
                    grads: Some(Grads::Rows {
                        rows: &rows,
                        values: &values,
                    }),
                },
                Entry {
                    id: u,
                    params: (&mut pu[..]).into(),
                    grads: Some((&dense_u[..]).into()),
                },
            ])
            .unwrap()
        };
        let allocated = pool.install(|| {
            for _ in 0..3 {
                step(&mut opt);
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..10 {
                step(&mut opt);
            }
            ALLOCATIONS.load(Ordering::SeqCst) - before
        });
        assert_eq!(
            allocated, 0,
            "a step of every layout ({big} bf16 lanes, {pool_threads} threads) allocated {allocated} times"
        );
        let adopt::Steps::Rows(steps) = opt.param_state(t).unwrap().unwrap().steps else {
            panic!("a table has a step count per row");
        };
        for (r, &s) in steps.iter().enumerate() {
            assert_eq!(
                s,
                if rows.contains(&(r as u32)) { 13 } else { 0 },
                "row {r}"
            );
        }
    }
    #[cfg(feature = "capi")]
    the_c_optimizer_step_does_not_allocate();
}

/// The C ABI's optimizer step reuses its scratch: a steady-state call
/// allocates nothing (its overlap check and entry list included). Called
/// by the one test, so no other test allocates meanwhile.
#[cfg(feature = "capi")]
fn the_c_optimizer_step_does_not_allocate() {
    use adopt::capi::*;
    rayon::broadcast(|_| ());
    let mut opt = std::ptr::null_mut();
    // SAFETY (all calls below): valid pointers and lengths, live optimizer.
    unsafe {
        assert_eq!(adopt_optimizer_new(&mut opt), AdoptStatus::Ok);
        let h = adopt_hyper_default();
        let mut g = 0;
        assert_eq!(adopt_optimizer_add_group(opt, &h, &mut g), AdoptStatus::Ok);
        let n = 50;
        let mut data: Vec<Vec<f32>> = (0..n).map(|i| vec![0.5; 1 + i % 7]).collect();
        let grads: Vec<Vec<f32>> = (0..n).map(|i| vec![0.25; 1 + i % 7]).collect();
        for d in &data {
            let mut id = 0;
            assert_eq!(
                adopt_optimizer_add_param(opt, g, d.len(), std::ptr::null(), &mut id),
                AdoptStatus::Ok
            );
        }
        let items: Vec<AdoptItem> = data
            .iter_mut()
            .zip(&grads)
            .enumerate()
            .map(|(i, (d, g))| AdoptItem {
                param: i as u32,
                params: d.as_mut_ptr(),
                params_len: d.len(),
                grads: g.as_ptr(),
                grads_len: g.len(),
            })
            .collect();
        for _ in 0..3 {
            assert_eq!(
                adopt_optimizer_step(opt, items.as_ptr(), n),
                AdoptStatus::Ok
            );
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        for _ in 0..20 {
            assert_eq!(
                adopt_optimizer_step(opt, items.as_ptr(), n),
                AdoptStatus::Ok
            );
        }
        let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
        assert_eq!(
            allocated, 0,
            "adopt_optimizer_step allocated {allocated} times"
        );
        adopt_optimizer_free(opt);
    }
}
