//! README's Python quick start, run as written against the shared library this test run built
//! (only the library path is changed), followed by checks of what it computed: one AdamW step
//! with torch's defaults from `theta = 1`, `g = 0.5` gives `m = 0.05`, `v = 0.00025` and
//! `theta = 1 - lr = 0.999` (the first step moves every parameter by `lr`).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn python_quick_start_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("```python\n")
        .expect("README has a Python block")
        + "```python\n".len();
    let end = start + readme[start..].find("```").unwrap();
    // The shared library cargo built for this run: see programs.rs, `library_dir`.
    let exe = std::env::current_exe().unwrap();
    let library = exe.parent().unwrap().join("libdiagprec.so");
    assert!(library.exists(), "{library:?} not built");
    let snippet = &readme[start..end];
    assert!(snippet.contains("\"target/release/libdiagprec.so\""));
    let program = snippet.replace(
        "\"target/release/libdiagprec.so\"",
        &format!("{:?}", library.display().to_string()),
    ) + concat!(
        "assert all(abs(x - 0.999) < 1e-7 for x in p), list(p)\n",
        "assert all(abs(x - 0.05) < 1e-9 for x in m), list(m)\n",
        "assert all(abs(x - 0.00025) < 1e-10 for x in v), list(v)\n",
        "assert lib.dp_adam_step_f32(C.byref(cfg), C.c_uint64(0), p, g, m, v, None, C.c_size_t(n)) != 0\n",
        "assert b'step' in lib.dp_last_error_message()\n",
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&program)
        .output()
        .expect("python3 runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "README's Python quick start failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
