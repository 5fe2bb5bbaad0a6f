//! `plover-sdk` can be published as it is: the WIT it binds lives inside the crate (a copy
//! kept equal to the repository's `wit/v0.2.0`), and `cargo package` builds the packaged crate.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_sdks_copy_of_the_contract_is_the_contract() {
    let contract = root().join("wit/v0.2.0");
    let copy = root().join("sdk/wit/v0.2.0");
    let mut files: Vec<_> = std::fs::read_dir(&contract)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    let mut copied: Vec<_> = std::fs::read_dir(&copy)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    copied.sort();
    assert_eq!(files, copied, "the same files");
    for f in files {
        assert_eq!(
            std::fs::read(contract.join(&f)).unwrap(),
            std::fs::read(copy.join(&f)).unwrap(),
            "sdk/wit/v0.2.0/{} differs from wit/v0.2.0: copy it again",
            f.to_string_lossy()
        );
    }
}

#[test]
fn cargo_package_builds_the_sdk_from_what_it_would_publish() {
    let out = Command::new(env!("CARGO"))
        .args(["package", "--offline", "--allow-dirty", "--target-dir"])
        .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-package"))
        .current_dir(root().join("sdk"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Verifying plover-sdk v0.2.0"), "{stderr}");
}
