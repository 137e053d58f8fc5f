//! Arbitrary bytes never panic the checkpoint decoder; mutated valid
//! checkpoints either load a state that re-encodes to the same bytes, or
//! return an `Error` leaving the optimizer unchanged. Mutations are also
//! re-signed (length field and CRC repaired) to reach the field decoding.

#![no_main]

use adopt::checkpoint::{VERSION, crc32};
use adopt::{Adopt, Caution, Dtype, Entry, Grads, Hyper, Layout, Rounding, WeightDecay};
use libfuzzer_sys::fuzz_target;

/// A small trained optimizer whose checkpoint the fuzzer mutates.
fn trained() -> Adopt {
    let mut opt = Adopt::new();
    let g0 = opt
        .add_group(Hyper {
            lr: 0.01,
            nesterov: true,
            ..Hyper::default()
        })
        .unwrap();
    let g1 = opt
        .add_group(Hyper {
            weight_decay: WeightDecay::decoupled(0.1),
            caution: Caution::Timm,
            ..Hyper::default()
        })
        .unwrap();
    let a = opt.add_param(g0, 3, Some("a")).unwrap();
    let b = opt.add_param(g1, 2, None).unwrap();
    opt.add_param(g1, 1, Some("unused")).unwrap();
    // Every layout, so mutations reach the layout records and typed states.
    let c = opt
        .add_param(
            g0,
            Layout::dense(3)
                .params(Dtype::Bf16)
                .master(true)
                .exp_avg(Dtype::F16)
                .exp_avg_sq(Dtype::Bf16)
                .rounding(Rounding::Stochastic { seed: 9 }),
            Some("c"),
        )
        .unwrap();
    let t = opt.add_param(g1, Layout::rows(3, 2), Some("t")).unwrap();
    let z = opt.add_param(g0, Layout::complex(1), None).unwrap();
    let (mut da, mut db) = (vec![1.0_f32, 2.0, 3.0], vec![-1.0_f32, 0.5]);
    let mut dc = vec![half::bf16::ONE; 3];
    let gc = vec![half::bf16::from_f32(0.5); 3];
    let (mut dt, mut dz) = (vec![0.5_f32; 6], vec![0.25_f32, -0.25]);
    for _ in 0..2 {
        opt.step(&mut [
            Entry {
                id: a,
                params: (&mut da[..]).into(),
                grads: Some((&[0.1_f32, -0.2, 0.3][..]).into()),
            },
            Entry {
                id: b,
                params: (&mut db[..]).into(),
                grads: Some((&[1.0_f32, -1.0][..]).into()),
            },
            Entry {
                id: c,
                params: (&mut dc[..]).into(),
                grads: Some((&gc[..]).into()),
            },
            Entry {
                id: t,
                params: (&mut dt[..]).into(),
                grads: Some(Grads::Rows {
                    rows: &[2, 0, 2],
                    values: &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                }),
            },
            Entry {
                id: z,
                params: (&mut dz[..]).into(),
                grads: Some((&[0.5_f32, 0.5][..]).into()),
            },
        ])
        .unwrap();
    }
    opt
}

fuzz_target!(|data: &[u8]| {
    let mut opt = trained();
    let before = opt.save().unwrap();
    // Raw bytes, and the valid checkpoint with the input XORed over it (so
    // most inputs are near-valid and reach the deep decoding paths).
    let mut mutated = before.clone();
    for (i, b) in data.iter().enumerate() {
        let n = mutated.len();
        mutated[i % n] ^= b;
    }
    if data.first().is_some_and(|b| b & 1 == 1) {
        mutated.truncate(data.len() % (before.len() + 1));
    }
    // The mutated checkpoint with its length field and checksum repaired,
    // so the decoder's field parsing (counts, names, lanes, flags) is
    // reached rather than stopped at the checksum.
    let mut resigned = mutated.clone();
    if resigned.len() >= 24 {
        let end = resigned.len() - 4;
        let len = (end - 20) as u64;
        resigned[12..20].copy_from_slice(&len.to_le_bytes());
        let crc = crc32(&resigned[..end]);
        resigned[end..].copy_from_slice(&crc.to_le_bytes());
    }
    for bytes in [data, &mutated[..], &resigned[..]] {
        // Checkpoints of the current version are canonical: whatever loads
        // re-encodes to the same bytes. An older version re-encodes as the
        // current one, which must load to the same state again.
        let current = bytes.get(8..12) == Some(&VERSION.to_le_bytes()[..]);
        let check = |loaded: &Adopt| {
            let saved = loaded.save().unwrap();
            if current {
                assert_eq!(saved, bytes, "a loaded checkpoint re-encodes differently");
            } else {
                let again = Adopt::from_checkpoint(&saved).unwrap();
                assert_eq!(
                    again.save().unwrap(),
                    saved,
                    "an upgraded checkpoint is not stable"
                );
            }
        };
        if let Ok(loaded) = Adopt::from_checkpoint(bytes) {
            check(&loaded);
        }
        match opt.load(bytes) {
            Ok(()) => check(&opt),
            Err(_) => assert_eq!(
                opt.save().unwrap(),
                before,
                "a failed load changed the optimizer"
            ),
        }
        opt = trained();
        match opt.load_by_name(bytes) {
            Ok(()) => check(&opt),
            Err(_) => assert_eq!(
                opt.save().unwrap(),
                before,
                "a failed load by name changed the optimizer"
            ),
        }
        opt = trained();
    }
});
