//! The shell: statements and backslash commands, interactive or from `-c`
//! and `-f`, against one backend.

use std::io::Write;
use std::path::PathBuf;

use arrow::array::{Array, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper, Highlighter, Hinter};

use crate::backend::Backend;
use crate::command::{self, Command};
use crate::exec::{ExecError, run_statement, summary};
use crate::print::PrintFormat;
use crate::split::{is_complete, split_statements};

pub struct Shell {
    pub backend: Box<dyn Backend>,
    pub format: PrintFormat,
    pub timing: bool,
    pub quiet: bool,
    pub out: Box<dyn Write>,
    pub runtime: tokio::runtime::Runtime,
}

/// One unit of a script: a SQL statement or a backslash command, with the
/// line it starts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    Sql(usize, String),
    Meta(usize, String),
}

/// Splits a script into statements and backslash commands. A line that
/// starts with `\` outside a statement is a command.
pub fn parse_script(text: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut chunk = String::new();
    let mut chunk_start = 1;
    let flush = |chunk: &mut String, start: usize, items: &mut Vec<Item>| {
        for (line, sql) in split_statements(chunk) {
            items.push(Item::Sql(start + line - 1, sql));
        }
        chunk.clear();
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim_start().starts_with('\\') && is_complete(&chunk) {
            flush(&mut chunk, chunk_start, &mut items);
            items.push(Item::Meta(n, line.trim().to_string()));
            chunk_start = n + 1;
            continue;
        }
        if chunk.is_empty() {
            chunk_start = n;
        }
        chunk.push_str(line);
        chunk.push('\n');
    }
    flush(&mut chunk, chunk_start, &mut items);
    items
}

pub enum Flow {
    Continue,
    Quit,
}

impl Shell {
    /// Runs one item; errors are returned as the message to print.
    pub fn run_item(&mut self, item: &Item) -> Result<Flow, String> {
        match item {
            Item::Meta(_, text) => self.run_command(text),
            Item::Sql(_, sql) => {
                let result = self.runtime.block_on(run_statement(
                    self.backend.as_ref(),
                    sql,
                    self.format,
                    &mut self.out,
                ));
                match result {
                    Ok(outcome) => {
                        let _ = self.out.flush();
                        if !self.quiet {
                            eprintln!("{}", summary(&outcome, self.timing));
                        }
                        Ok(Flow::Continue)
                    }
                    Err(ExecError::Failed(m)) => Err(m),
                    Err(ExecError::Cancelled) => Err("query cancelled".into()),
                }
            }
        }
    }

    fn print(&mut self, batches: &(SchemaRef, Vec<RecordBatch>)) -> Result<(), String> {
        self.format
            .write_all(&mut self.out, &batches.0, &batches.1)
            .map_err(|e| e.to_string())?;
        self.out.flush().map_err(|e| e.to_string())
    }

    /// Runs a query of the shell's own (over the `meshql` tables) to the end.
    fn query(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
        self.runtime.block_on(async {
            let (schema, stream) = self.backend.execute(sql).await?;
            let batches: Vec<RecordBatch> =
                stream.try_collect().await.map_err(|e| e.to_string())?;
            Ok((schema, batches))
        })
    }

    /// A query's rows as text, by column name.
    fn rows(&self, sql: &str) -> Result<Vec<command::Row>, String> {
        let (schema, batches) = self.query(sql)?;
        let mut rows = Vec::new();
        for batch in &batches {
            let columns: Vec<arrow::array::ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            for i in 0..batch.num_rows() {
                let mut row = command::Row::new();
                for (field, column) in schema.fields().iter().zip(&columns) {
                    let text = column.as_string::<i32>();
                    row.insert(
                        field.name().clone(),
                        text.is_valid(i).then(|| text.value(i).to_string()),
                    );
                }
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// `\d DOMAIN.PRODUCT`, from the `meshql` tables, so that it shows the
    /// same locally and on a server: the columns as the user sees them,
    /// then the product, its freshness and its last checks.
    fn describe(&mut self, name: &str) -> Result<(), String> {
        let wanted = name.trim_matches('"').to_lowercase();
        let wanted = wanted.strip_prefix("mesh.").unwrap_or(&wanted).to_string();
        let missing = || {
            let names = self.backend.product_names();
            let close = meshql::manifest::closest_names(&wanted, names.iter().map(String::as_str));
            match close.first() {
                Some(s) => format!("product `{wanted}` does not exist; did you mean `{s}`?"),
                None => format!("product `{wanted}` does not exist; `\\d` lists the products"),
            }
        };
        let Some((domain, product)) = wanted.split_once('.') else {
            return Err(missing());
        };
        if domain == "meshql" {
            let columns = self.query(&command::system_table_sql(product))?;
            if columns.1.iter().all(|b| b.num_rows() == 0) {
                return Err(format!(
                    "meshql.{product} does not exist; `SELECT table_name FROM information_schema.tables WHERE table_schema = 'meshql'` lists the discovery tables"
                ));
            }
            return self.print(&columns);
        }
        let info = self.rows(&command::product_sql(domain, product))?;
        let Some(info) = info.first() else {
            return Err(missing());
        };
        let columns = self.query(&command::columns_sql(domain, product))?;
        let checks = self.rows(&command::checks_sql(domain, product))?;
        self.print(&columns)?;
        for line in command::describe_lines(&wanted, info, &checks) {
            writeln!(self.out, "{line}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn run_command(&mut self, text: &str) -> Result<Flow, String> {
        let command: Command = text.parse()?;
        match command {
            Command::Quit => return Ok(Flow::Quit),
            Command::Help => println!("{}", command::HELP),
            Command::ListProducts => {
                let batches = self.query(&command::list_products_sql())?;
                self.print(&batches)?;
            }
            Command::ListDomains => {
                let batches = self.query(command::list_domains_sql())?;
                self.print(&batches)?;
            }
            Command::Describe(name) => self.describe(&name)?,
            Command::Timing(v) => {
                self.timing = v.unwrap_or(!self.timing);
                eprintln!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            Command::Format(f) => {
                self.format = f;
                eprintln!("Output format is {f}.");
            }
            Command::Find(term) => {
                let sql = meshql::search_sql(&term);
                return self.run_item(&Item::Sql(0, sql));
            }
            Command::Connect(domain) => {
                let domain = domain.trim_matches('"');
                self.query(&format!("USE \"{}\"", domain.replace('"', "\"\"")))?;
                if !self.quiet {
                    eprintln!("Unqualified names now resolve in domain {domain}.");
                }
            }
        }
        Ok(Flow::Continue)
    }

    /// The interactive loop: line editing, history, completion.
    pub fn interactive(&mut self, history: Option<PathBuf>) -> anyhow::Result<()> {
        let helper = MeshHelper::new(self.backend.as_ref());
        let mut editor: Editor<MeshHelper, rustyline::history::DefaultHistory> = Editor::new()?;
        editor.set_helper(Some(helper));
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        eprintln!(
            "meshql {} — \\? for help, \\q to quit",
            env!("CARGO_PKG_VERSION")
        );
        loop {
            match editor.readline("meshql> ") {
                Ok(line) => {
                    let text = line.trim();
                    if text.is_empty() {
                        continue;
                    }
                    let _ = editor.add_history_entry(text);
                    if let Some(h) = &history {
                        let _ = editor.append_history(h);
                    }
                    let items = if text.starts_with('\\') {
                        vec![Item::Meta(1, text.to_string())]
                    } else {
                        parse_script(text)
                    };
                    for item in &items {
                        match self.run_item(item) {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Quit) => return Ok(()),
                            Err(e) => eprintln!("ERROR: {e}"),
                        }
                    }
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "JOIN",
    "LEFT JOIN",
    "INNER JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "IS NULL",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "WITH",
    "UNION ALL",
    "EXPLAIN",
    "SHOW TABLES",
    "DESCRIBE",
    "DATE_TRUNC",
    "EXTRACT",
    "BETWEEN",
    "LIKE",
    "DESC",
    "ASC",
];
const COMMANDS: &[&str] = &[
    "\\d",
    "\\dn",
    "\\find",
    "\\timing",
    "\\pset format",
    "\\?",
    "\\q",
];

#[derive(Helper, Highlighter, Hinter)]
pub struct MeshHelper {
    domains: Vec<String>,
    products: Vec<(String, String, Vec<String>)>,
    columns: Vec<String>,
}

impl MeshHelper {
    pub fn new(backend: &dyn Backend) -> Self {
        let contracts = backend.contracts();
        let mut domains: Vec<String> = contracts.iter().map(|c| c.domain.clone()).collect();
        domains.dedup();
        let products: Vec<(String, String, Vec<String>)> = contracts
            .iter()
            .map(|c| {
                (
                    c.domain.clone(),
                    c.product.name.clone(),
                    c.product
                        .columns
                        .iter()
                        .map(|col| col.name.clone())
                        .collect(),
                )
            })
            .collect();
        let mut columns: Vec<String> = products.iter().flat_map(|p| p.2.clone()).collect();
        columns.sort();
        columns.dedup();
        Self {
            domains,
            products,
            columns,
        }
    }

    /// Completion candidates for the word `token`.
    pub fn candidates(&self, token: &str) -> Vec<String> {
        let lower = token.to_lowercase();
        if token.starts_with('\\') {
            return COMMANDS
                .iter()
                .filter(|c| c.starts_with(token))
                .map(|c| c.to_string())
                .collect();
        }
        if let Some((prefix, partial)) = lower.rsplit_once('.') {
            let prefix = prefix.strip_prefix("mesh.").unwrap_or(prefix);
            let in_domain: Vec<String> = self
                .products
                .iter()
                .filter(|(d, p, _)| d == prefix && p.starts_with(partial))
                .map(|(d, p, _)| format!("{d}.{p}"))
                .collect();
            if !in_domain.is_empty() {
                return in_domain;
            }
            if let Some((_, _, cols)) = self
                .products
                .iter()
                .find(|(d, p, _)| format!("{d}.{p}") == prefix)
            {
                return cols
                    .iter()
                    .filter(|c| c.starts_with(partial))
                    .map(|c| format!("{prefix}.{c}"))
                    .collect();
            }
            // An alias: any column.
            return self
                .columns
                .iter()
                .filter(|c| c.starts_with(partial))
                .map(|c| format!("{prefix}.{c}"))
                .collect();
        }
        let upper = token.chars().next().is_some_and(char::is_uppercase);
        let mut out: Vec<String> = self
            .domains
            .iter()
            .filter(|d| d.starts_with(&lower))
            .map(|d| format!("{d}."))
            .collect();
        out.extend(
            KEYWORDS
                .iter()
                .filter(|k| k.to_lowercase().starts_with(&lower))
                .map(|k| {
                    if upper {
                        k.to_string()
                    } else {
                        k.to_lowercase()
                    }
                }),
        );
        out.extend(
            self.columns
                .iter()
                .filter(|c| c.starts_with(&lower))
                .cloned(),
        );
        out
    }
}

impl Completer for MeshHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '\\'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let token = &before[start..];
        if token.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let pairs = self
            .candidates(token)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Validator for MeshHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input().trim();
        if input.is_empty() || input.starts_with('\\') || input.ends_with(';') {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_mix_statements_and_commands() {
        let items =
            parse_script("\\timing off\nselect 1;\nselect\n  2;\n\\d sales.orders\nselect 3");
        assert_eq!(
            items,
            vec![
                Item::Meta(1, "\\timing off".into()),
                Item::Sql(2, "select 1".into()),
                Item::Sql(3, "select\n  2".into()),
                Item::Meta(5, "\\d sales.orders".into()),
                Item::Sql(6, "select 3".into()),
            ]
        );
    }
}
