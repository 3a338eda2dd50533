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

/// Compiles `source` into an executable linked against the library (`tag` names the build).
fn build(compiler: &str, standard: &str, source: &Path, linkage: Linkage, tag: &str) -> PathBuf {
    let lib_dir = library_dir();
    let name = source.file_stem().unwrap().to_string_lossy();
    let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{linkage:?}{tag}",
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
    exe
}

/// Runs a built program (under `wrapper` when given, e.g. valgrind) and fails on a non-zero exit.
fn run(exe: &Path, wrapper: &[&str], env: &[(&str, &str)]) {
    let mut cmd = match wrapper.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let run = cmd
        // Rust's allocator and rayon's thread-locals hold memory until exit by design.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        // cargo's LD_LIBRARY_PATH lists target/<profile> before deps/, and the loader searches
        // it before the rpath: a stale libdiagprec.so from an earlier `cargo build` there
        // would be loaded instead of this run's.
        .env("LD_LIBRARY_PATH", library_dir())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe:?} {wrapper:?}: {e}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!(
        "{} {wrapper:?} {env:?}: {}",
        exe.file_name().unwrap().to_string_lossy(),
        stdout.trim()
    );
    assert!(
        run.status.success(),
        "{exe:?} {wrapper:?} {env:?} failed:\n{stdout}\n{stderr}"
    );
}

fn build_and_run(compiler: &str, standard: &str, source: &Path, linkage: Linkage) {
    run(&build(compiler, standard, source, linkage, ""), &[], &[]);
}

/// valgrind's memcheck over every C program linked against the shared library, on the scalar
/// and AVX2 kernels (valgrind has no AVX-512: under it the library detects AVX2 at most): no
/// invalid access, no use of uninitialised values, no definite leak. Handles are created and
/// freed 10^4 times by basis.c. valgrind must be installed (`.ci/run` installs it).
#[test]
fn c_programs_pass_under_valgrind() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let valgrind = [
        "valgrind",
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
        "--child-silent-after-fork=yes",
    ];
    for source in sources("c", "c") {
        let exe = build(&cc, "c11", &source, Linkage::Shared, "-valgrind");
        for isa in ["scalar", "avx2"] {
            run(
                &exe,
                &valgrind,
                &[("DIAGPREC_ISA", isa), ("DIAGPREC_UNDER_VALGRIND", "1")],
            );
        }
    }
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
