//! `meshql`: the analyst's shell and command line over a data mesh.

mod backend;
mod command;
mod exec;
mod print;
mod shell;
mod split;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use meshql::manifest::Catalog;
use meshql::{Mesh, Principal};

use crate::backend::Embedded;
use crate::print::PrintFormat;
use crate::shell::{Flow, Item, Shell, parse_script};

/// Governed SQL over the data products of a data mesh.
///
/// With no command and no -c/-f, opens an interactive shell on the mesh.
#[derive(Debug, Parser)]
#[command(name = "meshql", version, about)]
struct Cli {
    /// The mesh directory (holding mesh.yaml). Defaults to ./catalog, then to
    /// the demo mesh bundled with meshql.
    #[arg(long, env = "MESHQL_MESH", global = true)]
    mesh: Option<PathBuf>,

    /// The principal to run queries as.
    #[arg(long, short = 'u', env = "MESHQL_USER", default_value = "admin")]
    user: String,

    /// Run these SQL statements (or a backslash command) and exit. Repeatable.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Vec<String>,

    /// Run the statements in this file and exit. Repeatable.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,

    /// Output format of results.
    #[arg(long, value_enum, default_value_t = PrintFormat::Table, env = "MESHQL_FORMAT")]
    format: PrintFormat,

    /// Write results to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,

    /// Do not print the row count and time after each result.
    #[arg(long, short = 'q')]
    quiet: bool,

    #[command(subcommand)]
    sub: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Validate the mesh strictly: every problem in every file, with file and line.
    Check {
        /// Also open every product's storage and check its data against the contract.
        #[arg(long)]
        data: bool,
    },
    /// The demo mesh's data.
    Demo {
        #[command(subcommand)]
        cmd: DemoCmd,
    },
}

#[derive(Debug, Subcommand)]
enum DemoCmd {
    /// Generate the demo e-commerce data as Parquet, deterministically.
    Generate {
        /// Scale factor, 1 to 1000: 1 is 2,000 customers and 20,000 orders.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        scale: u32,
        /// Directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
}

fn default_mesh() -> PathBuf {
    let local = PathBuf::from("catalog");
    if local.join("mesh.yaml").is_file() {
        return local;
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
    if bundled.join("mesh.yaml").is_file() {
        return bundled;
    }
    local
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mesh_dir = cli.mesh.clone().unwrap_or_else(default_mesh);
    if !mesh_dir.join("mesh.yaml").is_file() {
        anyhow::bail!(
            "no mesh at {}: expected {}; pass --mesh DIR",
            mesh_dir.display(),
            mesh_dir.join("mesh.yaml").display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;

    match &cli.sub {
        Some(Sub::Demo {
            cmd: DemoCmd::Generate { scale, out },
        }) => {
            let start = std::time::Instant::now();
            let s = meshql::demo::generate(out, *scale)?;
            eprintln!(
                "generated demo data at scale {scale} into {} in {:.1} s: {} customers, {} orders, {} order items, {} products, {} inventory levels, {} transactions, {} campaign days",
                out.display(),
                start.elapsed().as_secs_f64(),
                s.customers,
                s.orders,
                s.order_items,
                s.products,
                s.inventory_levels,
                s.transactions,
                s.campaign_days
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Sub::Check { data }) => return check(&mesh_dir, *data, &runtime, &cli.user),
        None => {}
    }

    let catalog = Catalog::load(&mesh_dir)?;
    for p in &catalog.problems {
        eprintln!("warning: left out of the mesh: {p}");
    }
    if let Some(demo) = &catalog.mesh.demo {
        let generating = !catalog
            .mesh
            .storage
            .get(&demo.storage)
            .map(|s| matches!(&s.kind, meshql::manifest::StorageKind::Local { root } if root.join(".meshql-demo").exists()))
            .unwrap_or(true);
        if generating {
            eprintln!(
                "generating the demo mesh's data (scale {}) on first use...",
                demo.scale
            );
        }
        meshql::demo::ensure(&catalog)?;
    }
    let mesh = Mesh::from_catalog(catalog)?;
    let session = mesh.session(Principal::new(cli.user.clone()));
    let out: Box<dyn Write> = match &cli.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout()),
    };
    let mut shell = Shell {
        backend: Box::new(Embedded { mesh, session }),
        format: cli.format,
        timing: true,
        quiet: cli.quiet,
        out,
        runtime,
    };

    if cli.command.is_empty() && cli.file.is_empty() {
        if !std::io::stdin().is_terminal() {
            // Statements piped in: run them like a file.
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            return Ok(run_items(&mut shell, "<stdin>", &parse_script(&text)));
        }
        let history = std::env::var_os("MESHQL_HISTORY")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".meshql_history")));
        shell.interactive(history)?;
        return Ok(ExitCode::SUCCESS);
    }
    for sql in &cli.command {
        let items = if sql.trim_start().starts_with('\\') {
            vec![Item::Meta(1, sql.trim().to_string())]
        } else {
            parse_script(sql)
        };
        let code = run_items(&mut shell, "-c", &items);
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    for file in &cli.file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let code = run_items(
            &mut shell,
            &file.display().to_string(),
            &parse_script(&text),
        );
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs items in order, stopping at the first error (exit code 1).
fn run_items(shell: &mut Shell, source: &str, items: &[Item]) -> ExitCode {
    for item in items {
        match shell.run_item(item) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => {
                let line = match item {
                    Item::Sql(l, _) | Item::Meta(l, _) => *l,
                };
                if source == "-c" {
                    eprintln!("ERROR: {e}");
                } else {
                    eprintln!("ERROR: {source}:{line}: {e}");
                }
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn check(
    dir: &Path,
    data: bool,
    runtime: &tokio::runtime::Runtime,
    user: &str,
) -> anyhow::Result<ExitCode> {
    let catalog = match Catalog::load_strict(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let products = catalog.contracts.len();
    let domains = catalog.domains().len();
    if data {
        meshql::demo::ensure(&catalog)?;
        let mesh = Mesh::from_catalog(catalog)?;
        let session = mesh.session(Principal::new(user));
        let mut failed = 0;
        for name in mesh.product_names() {
            match runtime.block_on(session.collect(&format!("SELECT * FROM {name} LIMIT 1"))) {
                Ok(_) => eprintln!("ok      {name}"),
                Err(e) => {
                    failed += 1;
                    eprintln!("FAILED  {e}");
                }
            }
        }
        if failed > 0 {
            eprintln!("{failed} of {products} products could not be read");
            return Ok(ExitCode::FAILURE);
        }
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "{}: {} in {}, no problems",
        dir.display(),
        plural(products, "product"),
        plural(domains, "domain")
    );
    Ok(ExitCode::SUCCESS)
}
