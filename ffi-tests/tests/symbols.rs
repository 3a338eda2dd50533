//! The shared library exports exactly the functions listed in `ffi-tests/symbols.txt`, the C ABI
//! contract's committed export list: adding, removing or renaming an export is a visible change.
//! Regenerate with `DIAGPREC_BLESS=1 cargo test -p diagprec-ffi-tests --test symbols`.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn exported_symbols_match_the_committed_list() {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libdiagprec.so");
    assert!(lib.exists(), "{lib:?} not built");
    let out = Command::new("nm")
        .args(["-D", "--defined-only", "--format=posix"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) must be installed");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    // posix format: "name type value size"; functions are type T.
    let mut exported: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let kind = fields.next()?;
            (kind == "T").then(|| name.to_string())
        })
        .collect();
    exported.sort();
    let stray: Vec<&String> = exported.iter().filter(|s| !s.starts_with("dp_")).collect();
    assert!(stray.is_empty(), "exports outside the dp_ namespace: {stray:?}");
    let listed = exported.join("\n") + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("symbols.txt");
    if std::env::var_os("DIAGPREC_BLESS").is_some() {
        std::fs::write(&path, &listed).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == listed,
        "the exports changed: run `DIAGPREC_BLESS=1 cargo test -p diagprec-ffi-tests --test symbols` and review the diff of ffi-tests/symbols.txt\nexported now:\n{listed}"
    );
}
