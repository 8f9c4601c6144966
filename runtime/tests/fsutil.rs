//! Atomic writes and output directories.

use kiln_runtime::fsutil::{create_output_dir, read_file, write_atomic, write_atomic_with};

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn replaces_an_existing_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.bin");
    std::fs::write(&p, vec![7u8; 4096]).unwrap();
    write_atomic(&p, b"short").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"short");
    assert_eq!(entries(dir.path()), ["out.bin"]);
}

#[test]
fn a_failed_write_leaves_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.bin");
    std::fs::write(&p, b"old contents").unwrap();
    let err = write_atomic_with(&p, |w| {
        w.write_all(b"half of the new")?;
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), format!("cannot write `{}`: disk on fire", p.display()));
    assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
    assert_eq!(entries(dir.path()), ["out.bin"], "the temp file is removed");
}

#[test]
fn writing_into_a_missing_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope/out.bin");
    let msg = write_atomic(&p, b"x").unwrap_err().to_string();
    assert_eq!(msg, format!("cannot write `{}`: No such file or directory", p.display()));
    assert!(!dir.path().join("nope").exists());
}

#[test]
fn writing_over_a_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let msg = write_atomic(dir.path(), b"x").unwrap_err().to_string();
    assert!(msg.starts_with("cannot write `"), "{msg}");
}

#[test]
fn output_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b/c");
    create_output_dir(&out).unwrap();
    assert!(out.is_dir());
    assert!(entries(&out).is_empty(), "the write probe is removed");
    create_output_dir(&out).unwrap();

    let file = dir.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let msg = create_output_dir(&file).unwrap_err().to_string();
    assert_eq!(msg, format!("cannot use `{}` as an output directory: it exists and is not a directory", file.display()));
    let msg = create_output_dir(&file.join("sub")).unwrap_err().to_string();
    assert!(msg.contains("Not a directory"), "{msg}");
}

#[test]
fn read_errors_name_the_file() {
    assert_eq!(
        read_file(std::path::Path::new("missing.bin")).unwrap_err().to_string(),
        "cannot read `missing.bin`: No such file or directory"
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(read_file(dir.path()).unwrap_err().to_string().contains("Is a directory"));
}
