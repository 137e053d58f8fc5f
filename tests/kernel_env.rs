//! `ADOPT_KERNEL` pins the kernel dispatch uses (names in any case),
//! `Kernel::force` overrides it, `Kernel::force(None)` returns to it, and a
//! value that names no kernel, or one this CPU cannot run, is an error every
//! step reports with nothing written. (One test in its own binary: the
//! choice is per process.)

use adopt::{Adopt, Error, Hyper, Item, Kernel, SparseState, State, adopt_step, adopt_step_rows};

/// Sets `ADOPT_KERNEL` (or removes it) and returns to the automatic choice,
/// which reads it again.
fn set_env(value: Option<&str>) {
    // SAFETY: this binary's only test; no other thread reads the environment.
    unsafe {
        match value {
            Some(v) => std::env::set_var("ADOPT_KERNEL", v),
            None => std::env::remove_var("ADOPT_KERNEL"),
        }
    }
    assert!(Kernel::force(None));
}

/// Every step entry point refuses with `want`, and changes nothing.
fn every_step_refuses(want: &Error) {
    let mut params = vec![1.0_f32; 9];
    let mut state = State::new(9);
    assert_eq!(
        adopt_step(&mut params, &[0.5; 9], &mut state, &Hyper::default()).as_ref(),
        Err(want)
    );
    assert_eq!((params, state), (vec![1.0; 9], State::new(9)));

    let mut opt = Adopt::new();
    let g = opt.add_group(Hyper::default()).unwrap();
    let id = opt.add_param(g, 3, None).unwrap();
    let mut data = vec![1.0_f32; 3];
    let got = opt.step(&mut [Item {
        id,
        params: &mut data,
        grads: Some(&[0.5; 3]),
    }]);
    assert_eq!(got.as_ref(), Err(want));
    assert!(opt.state(id).unwrap().is_none());

    let mut table = vec![1.0_f32; 8];
    let mut rows = SparseState::new(4, 2);
    let got = adopt_step_rows(&mut table, &[1], &[0.5; 2], &mut rows, &Hyper::default());
    assert_eq!(got.as_ref(), Err(want));
    assert_eq!(rows.row_step(1), 0);
}

#[test]
fn environment_and_force_pick_the_kernel() {
    set_env(Some("portable"));
    assert_eq!(Kernel::try_active(), Ok(Kernel::Portable));
    let mut params = vec![1.0_f32; 9];
    let mut state = State::new(9);
    adopt_step(&mut params, &[0.5; 9], &mut state, &Hyper::default()).unwrap();
    assert_eq!(Kernel::active(), Kernel::Portable, "the choice is cached");

    // Names in any case, with surrounding space.
    set_env(Some(" Portable "));
    assert_eq!(Kernel::try_active(), Ok(Kernel::Portable));
    set_env(Some(&Kernel::best().name().to_uppercase()));
    assert_eq!(Kernel::try_active(), Ok(Kernel::best()));

    // force overrides the environment; force(None) returns to it.
    set_env(Some("portable"));
    for kernel in Kernel::ALL {
        assert_eq!(Kernel::force(Some(kernel)), kernel.is_available());
        if kernel.is_available() {
            assert_eq!(Kernel::try_active(), Ok(kernel));
        }
    }
    assert!(Kernel::force(None));
    assert_eq!(Kernel::try_active(), Ok(Kernel::Portable));

    // Unset: the best kernel.
    set_env(None);
    assert_eq!(Kernel::try_active(), Ok(Kernel::best()));

    // A value that names no kernel is reported by every step, never ignored.
    set_env(Some("avx2"));
    let unknown = Error::UnknownKernel {
        value: "avx2".into(),
    };
    assert_eq!(Kernel::try_active(), Err(unknown.clone()));
    assert!(
        unknown
            .to_string()
            .contains("ADOPT_KERNEL=\"avx2\" names no kernel")
    );
    assert_eq!(Kernel::active(), Kernel::best(), "active() is for logs");
    every_step_refuses(&unknown);
    // force still picks one, and overrides the bad value.
    assert!(Kernel::force(Some(Kernel::Portable)));
    assert_eq!(Kernel::try_active(), Ok(Kernel::Portable));

    // A kernel this CPU cannot run.
    if let Some(missing) = Kernel::ALL.into_iter().find(|k| !k.is_available()) {
        set_env(Some(missing.name()));
        let unavailable = Error::KernelUnavailable(missing);
        assert_eq!(Kernel::try_active(), Err(unavailable.clone()));
        every_step_refuses(&unavailable);
    }
    set_env(None);
}
