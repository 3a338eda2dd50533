//! Gives the shared library the SONAME `libdiagprec.so.<ABI major>` (the C ABI's major version,
//! `DP_ABI_VERSION`), so that a program linked against it records `NEEDED libdiagprec.so.1`
//! rather than the path it was linked from, and keeps working when the install prefix moves.
//!
//! A program linked against `target/<profile>/deps/libdiagprec.so` (as ffi-tests does) looks
//! for `libdiagprec.so.1` at run time, so the script also places the symlink
//! `libdiagprec.so.1 -> libdiagprec.so` next to the library cargo writes (in `deps/` and the
//! profile directory). `packaging/install.sh` installs the usual versioned layout.

use std::path::Path;

/// The C ABI major version: `DP_ABI_VERSION` in `src/ffi/library.rs`.
const ABI_MAJOR: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" {
        return;
    }
    let soname = format!("libdiagprec.so.{ABI_MAJOR}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // OUT_DIR is target/<profile>/build/diagprec-<hash>/out.
    let Ok(out_dir) = std::env::var("OUT_DIR") else {
        return;
    };
    let Some(profile_dir) = Path::new(&out_dir).ancestors().nth(3) else {
        return;
    };
    // Only inside cargo's layout (OUT_DIR lies under <profile>/build).
    if !Path::new(&out_dir).starts_with(profile_dir.join("build")) {
        return;
    }
    for dir in [profile_dir.join("deps"), profile_dir.to_path_buf()] {
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let link = dir.join(&soname);
        if std::fs::symlink_metadata(&link).is_err() {
            // Best effort: a read-only target directory only loses the convenience link.
            #[cfg(unix)]
            let _ = std::os::unix::fs::symlink("libdiagprec.so", &link);
        }
    }
}
