//! The set-up the benchmarks share: the bundled demo mesh, copied to a
//! temporary directory and pointed at demo data of a larger scale, generated
//! once into `$CARGO_TARGET_DIR/bench-data/` and kept for later runs.

use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// `$CARGO_TARGET_DIR/bench-data/<name>`: where a benchmark keeps the
/// data it generates, from one run to the next.
pub fn bench_data(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("bench-data")
        .join(name)
}

/// A copy of the demo mesh whose data is the demo at `scale`; returns the
/// mesh directory and the data directory.
pub fn demo_mesh_at_scale(scale: u32) -> (tempfile::TempDir, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = bench_data(&format!("demo-scale-{scale}"));
    let mesh_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&root.join("catalog"), mesh_dir.path());
    let yaml = std::fs::read_to_string(mesh_dir.path().join("mesh.yaml")).expect("mesh.yaml");
    let yaml = yaml
        .replace("root: ../data/demo", &format!("root: {}", data.display()))
        .replace(
            "uri: sqlite:../data/demo/",
            &format!("uri: sqlite:{}/", data.display()),
        )
        .replace("scale: 1\n", &format!("scale: {scale}\n"))
        .replace("path: ../data/audit.jsonl", "path: audit.jsonl");
    std::fs::write(mesh_dir.path().join("mesh.yaml"), yaml).expect("mesh.yaml");
    (mesh_dir, data)
}
