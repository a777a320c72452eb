//! `meshql check`: the gate a domain team's CI runs, in text, JSON or JUnit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use meshql::Mesh;
use meshql::check::{CheckOptions, Finding, Outcome, Report};
use meshql::manifest::Catalog;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

pub struct Args<'a> {
    pub products: &'a [String],
    pub format: Format,
    pub static_only: bool,
    pub against: Option<&'a str>,
    /// Do not keep the data checks' results for `meshql.quality`.
    pub no_save: bool,
}

/// Exit 0 when everything holds, 1 on any violation, 2 when the mesh (or
/// the version to compare with) cannot be read.
pub fn run(dir: &Path, args: &Args<'_>, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let unreadable = |message: String| {
        eprintln!("meshql check: {message}");
        ExitCode::from(2)
    };
    let mesh = match Mesh::open(dir) {
        Ok(m) => Some(m),
        // Broken policy files stop even a lenient open: they are findings;
        // anything else (no mesh.yaml, a broken one) means no mesh.
        Err(meshql::Error::Manifest(meshql::manifest::Error::Invalid(problems)))
            if !problems.iter().any(|p| p.file.ends_with("mesh.yaml")) =>
        {
            let report = Report {
                findings: problems.iter().map(|p| Finding::problem(p, None)).collect(),
            };
            print(dir, &report, args.format);
            return ExitCode::FAILURE;
        }
        Err(e) => return unreadable(e.to_string()),
    };
    let Some(mesh) = mesh else {
        return ExitCode::from(2);
    };
    for p in args.products {
        if !mesh.product_names().contains(p) {
            return unreadable(format!(
                "no product `{p}` in the mesh (`meshql -c '\\d'` lists them)"
            ));
        }
    }
    let against = match args.against {
        None => None,
        Some(rev) => match previous_catalog(dir, rev) {
            Ok(c) => Some(c),
            Err(e) => return unreadable(e),
        },
    };
    if !args.static_only
        && let Err(e) = meshql::demo::ensure(mesh.catalog())
    {
        return unreadable(format!("cannot generate the demo data: {e}"));
    }
    let options = CheckOptions {
        products: args.products.to_vec(),
        data: !args.static_only,
        against: against.map(|(c, _)| c),
    };
    let report = runtime.block_on(meshql::check::run(&mesh, &options));
    print(dir, &report, args.format);
    if !args.no_save {
        match meshql::check::keep_results(&mesh, &report) {
            Ok(Some(path)) => eprintln!("meshql check: results kept in {}", path.display()),
            Ok(None) => {}
            // The check itself ran: its exit code stands, the results are not kept.
            Err(e) => eprintln!("meshql check: warning: {e}"),
        }
    }
    if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The catalog at `rev`: a directory, or a git revision of the repository
/// the mesh directory is in (its copy of the mesh directory).
fn previous_catalog(dir: &Path, rev: &str) -> Result<(Catalog, Option<tempfile::TempDir>), String> {
    let path = Path::new(rev);
    if path.is_dir() {
        return Catalog::load(path)
            .map(|c| (c, None))
            .map_err(|e| format!("cannot read the catalog at {rev}: {e}"));
    }
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let prefix = git(&["rev-parse", "--show-prefix"]).map_err(|e| {
        format!(
            "`{rev}` is neither a directory nor a git revision of {}: {e}",
            dir.display()
        )
    })?;
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .map_err(|_| format!("`{rev}` is neither a directory nor a git revision"))?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tree = format!("{rev}:{prefix}");
    let archive = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["archive", "--format=tar", &tree])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git archive: {e}"))?;
    let stdout = archive.stdout.ok_or("git archive gave no output")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp.path())
        .stdin(stdout)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !status.success() {
        return Err(format!("cannot extract {tree} from git"));
    }
    let catalog = Catalog::load(tmp.path())
        .map_err(|e| format!("cannot read the catalog as of `{rev}`: {e}"))?;
    Ok((catalog, Some(tmp)))
}

fn print(dir: &Path, report: &Report, format: Format) {
    match format {
        Format::Text => print!("{}", text(dir, report)),
        Format::Json => println!("{}", json(report)),
        Format::Junit => print!("{}", junit(report)),
    }
}

fn group(report: &Report) -> BTreeMap<String, Vec<&Finding>> {
    let mut by: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
    for f in &report.findings {
        by.entry(f.product.clone().unwrap_or_else(|| "(mesh)".into()))
            .or_default()
            .push(f);
    }
    by
}

fn location(f: &Finding) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => match f.col {
            Some(col) => format!("{}:{line}:{col}: ", file.display()),
            None => format!("{}:{line}: ", file.display()),
        },
        (Some(file), None) => format!("{}: ", file.display()),
        _ => String::new(),
    }
}

fn text(dir: &Path, report: &Report) -> String {
    let mut out = String::new();
    for (product, findings) in group(report) {
        let failed = findings
            .iter()
            .filter(|f| f.outcome == Outcome::Failed)
            .count();
        let mark = if failed == 0 { "ok    " } else { "FAILED" };
        out.push_str(&format!(
            "{mark} {product} ({} checks, {failed} failed)\n",
            findings.len()
        ));
        for f in findings.iter().filter(|f| f.outcome != Outcome::Passed) {
            let tag = if f.outcome == Outcome::Failed {
                "x"
            } else {
                "-"
            };
            out.push_str(&format!(
                "  {tag} [{}] {}: {}{}\n",
                f.check,
                f.name,
                location(f),
                f.message
            ));
        }
    }
    out.push_str(&format!(
        "{}: {} checks, {} failed, {} skipped\n",
        dir.display(),
        report.findings.len(),
        report.failed(),
        report.count(Outcome::Skipped)
    ));
    out
}

fn json(report: &Report) -> String {
    serde_json::json!({
        "passed": report.count(Outcome::Passed),
        "failed": report.failed(),
        "skipped": report.count(Outcome::Skipped),
        "findings": report.findings,
    })
    .to_string()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"meshql check\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
        report.findings.len(),
        report.failed(),
        report.count(Outcome::Skipped)
    ));
    for (product, findings) in group(report) {
        let failed = findings
            .iter()
            .filter(|f| f.outcome == Outcome::Failed)
            .count();
        let skipped = findings
            .iter()
            .filter(|f| f.outcome == Outcome::Skipped)
            .count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\">\n",
            xml(&product),
            findings.len()
        ));
        for f in findings {
            let file = f
                .file
                .as_ref()
                .map(|p| format!(" file=\"{}\"", xml(&p.display().to_string())))
                .unwrap_or_default();
            let line = f.line.map(|l| format!(" line=\"{l}\"")).unwrap_or_default();
            out.push_str(&format!(
                "    <testcase classname=\"{}.{}\" name=\"{}\"{file}{line}",
                xml(&product),
                xml(&f.check),
                xml(&f.name)
            ));
            match f.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed => out.push_str(&format!(
                    ">\n      <failure message=\"{}\">{}{}</failure>\n    </testcase>\n",
                    xml(&f.message),
                    xml(&location(f)),
                    xml(&f.message)
                )),
                Outcome::Skipped => out.push_str(&format!(
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                    xml(&f.message)
                )),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
