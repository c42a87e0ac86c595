//! `cargo test` at the workspace root builds the fake driver (this crate's cdylib) beside the
//! test binaries, where unimem's tests/cuda.rs looks for it first. Cargo builds the cdylib for
//! a test run only because the library is also an `rlib` that this test links: this file is
//! what keeps that true. (Linux only, as the `cuda` feature is: elsewhere the library has
//! another name, and nothing looks for it.)
#![cfg(target_os = "linux")]

#[test]
fn the_library_is_built_where_the_cuda_tests_look_for_it() {
    // Linked through the rlib: the same code the cdylib exports.
    let mut version = 0;
    // SAFETY: a valid, writable int.
    assert_eq!(unsafe { fake_cuda::cuDriverGetVersion(&mut version) }, 0);
    assert_eq!(version, 12040);

    // Beside this test's binary: `<target>/<profile>/deps/libfake_cuda.so`.
    let exe = std::env::current_exe().unwrap();
    let library = exe.parent().unwrap().join("libfake_cuda.so");
    let bytes = std::fs::read(&library)
        .unwrap_or_else(|err| panic!("no fake driver at {}: {err}", library.display()));
    assert_eq!(
        &bytes[..4],
        b"\x7fELF",
        "{} is not a shared library",
        library.display()
    );
}
