//! The committed `include/diagprec.h` must equal what cbindgen generates from `src/ffi` now.
//! Regenerate with `DIAGPREC_BLESS=1 cargo test -p diagprec-ffi-tests --test header`.

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&root)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = root.join("include/diagprec.h");
    if std::env::var_os("DIAGPREC_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/diagprec.h is stale: run `DIAGPREC_BLESS=1 cargo test -p diagprec-ffi-tests --test header` and commit it"
    );
}
