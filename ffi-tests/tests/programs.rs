//! Compiles every C program in `ffi-tests/c` (C11) and C++ program in `ffi-tests/cpp` (C++17)
//! with `-Wall -Wextra -Werror -pedantic` against `include/`, links each against the static
//! library (with AddressSanitizer and UBSan on the C/C++ side) and against the shared library,
//! and runs it. A program reports `N passed, M failed` and exits non-zero on any failure.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug)]
enum Linkage {
    Static,
    Shared,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/deps`, where cargo writes `libdiagprec.a` and `libdiagprec.so` when it builds
/// the `diagprec` dependency (with all its crate types) for this test run. `target/<profile>`
/// holds copies only after a plain `cargo build`, and they may be stale, so they are not used.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn sources(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("ffi-tests").join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .{ext} programs in ffi-tests/{dir}");
    files
}

fn build_and_run(compiler: &str, standard: &str, source: &Path, linkage: Linkage) {
    let lib_dir = library_dir();
    let name = source.file_stem().unwrap().to_string_lossy();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{linkage:?}",
        source.extension().unwrap().to_string_lossy()
    ));
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={standard}"))
        .args(["-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(source)
        .arg("-o")
        .arg(&exe);
    match linkage {
        Linkage::Static => {
            let lib = lib_dir.join("libdiagprec.a");
            assert!(lib.exists(), "{lib:?} not built");
            cmd.args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
                .arg(lib)
                .args(["-lpthread", "-ldl", "-lm"]);
        }
        Linkage::Shared => {
            assert!(
                lib_dir.join("libdiagprec.so").exists(),
                "libdiagprec.so not built"
            );
            cmd.arg(format!("-L{}", lib_dir.display()))
                .arg("-ldiagprec")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .args(["-lpthread", "-lm"]);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "compiling {source:?} ({linkage:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        // Rust's allocator and rayon's thread-locals hold memory until exit by design.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        // cargo's LD_LIBRARY_PATH lists target/<profile> before deps/, and the loader searches
        // it before the rpath: a stale libdiagprec.so from an earlier `cargo build` there
        // would be loaded instead of this run's.
        .env("LD_LIBRARY_PATH", &lib_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{name} ({linkage:?}): {}", stdout.trim());
    assert!(
        run.status.success(),
        "{source:?} ({linkage:?}) failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn c_programs_pass_linked_static_and_shared() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for source in sources("c", "c") {
        for linkage in [Linkage::Static, Linkage::Shared] {
            build_and_run(&cc, "c11", &source, linkage);
        }
    }
}

#[test]
fn cpp_programs_pass_linked_static_and_shared() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    for source in sources("cpp", "cpp") {
        for linkage in [Linkage::Static, Linkage::Shared] {
            build_and_run(&cxx, "c++17", &source, linkage);
        }
    }
}
