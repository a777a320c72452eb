use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use meshql::{Mesh, Principal};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bundled demo mesh, with its data generated.
pub fn demo_mesh() -> Mesh {
    let catalog =
        meshql::manifest::Catalog::load_strict(root().join("catalog")).expect("demo mesh is valid");
    meshql::demo::ensure(&catalog).expect("demo data");
    Mesh::from_catalog(catalog).expect("opens")
}

/// Where the demo data lives once generated.
pub fn demo_data() -> PathBuf {
    demo_mesh();
    root().join("data/demo")
}

pub fn admin() -> Principal {
    Principal::new("admin").with_role("platform_admin")
}

/// Results as text rows, for comparisons.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let options = arrow::util::display::FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                    .expect("formats")
            })
            .collect();
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    out
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A contract with the given columns (`name: type` pairs) on `server` at `path`.
pub fn contract(
    domain: &str,
    product: &str,
    columns: &[(&str, &str)],
    server: &str,
    kind: &str,
    path: &str,
) -> String {
    let mut cols = String::new();
    for (name, ty) in columns {
        cols.push_str(&format!(
            "      - name: {name}\n        physicalType: {ty}\n"
        ));
    }
    format!(
        "apiVersion: v3.1.0\nkind: DataContract\nid: {domain}.{product}\nname: {product}\nversion: 1.0.0\nstatus: active\ndomain: {domain}\nteam:\n  name: {domain}-team\nschema:\n  - name: {product}\n    properties:\n{cols}servers:\n  - server: {server}\n    type: {kind}\n    path: {path}\n"
    )
}

/// A policy that lets every principal read every product raw.
pub const ALLOW_ALL: &str = "apiVersion: meshql/v1\nkind: Policies\nrules:\n  - name: everyone reads everything\n    access: allow\n";

/// Writes [`ALLOW_ALL`] as the mesh's policies.yaml.
pub fn allow_all(dir: &Path) {
    write(dir, "policies.yaml", ALLOW_ALL);
}

/// The Python that has meshql's Python test peers (the ADBC Flight SQL
/// driver, PyIceberg): `MESHQL_TEST_PYTHON`, or the venv
/// `tests/python/setup.sh` installs from PyPI on first use.
pub fn python_peers() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| peer_venv("MESHQL_TEST_PYTHON", "setup.sh"))
        .clone()
}

/// The Python of a venv of test peers: the one the environment variable
/// `var` names, or the one `tests/python/<setup>` installs (once per
/// machine, into the cache) and prints.
pub fn peer_venv(var: &str, setup: &str) -> String {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let out = std::process::Command::new(root().join("tests/python").join(setup))
                .output()
                .unwrap_or_else(|e| panic!("cannot run tests/python/{setup}: {e}"));
            assert!(
                out.status.success(),
                "tests/python/{setup} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }
}

/// Runs `tests/python/<script>` with `python` and `args` off the test's
/// runtime; fails the test with its output unless it succeeds and reports
/// its checks passed.
pub async fn python_checks_pass(python: &str, script: &str, args: Vec<std::ffi::OsString>) {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root().join("tests/python").join(script)).args(args);
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("runs python"))
        .await
        .expect("joins");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}\n{stderr}");
}

/// Runs `command` to its end; fails the test with its stderr, naming
/// `what`, unless it succeeds. Returns its stdout.
pub fn run_ok(command: &mut std::process::Command, what: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
