//! Findings of checks: what `meshql check` reports and keeps, and what
//! `meshql.quality` shows of the kept ones.

use std::path::PathBuf;

use meshql_manifest::{Contract, Pos, Quality};
use serde::{Deserialize, Serialize};

use crate::mesh::Mesh;

/// What became of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// One check of one product (or of the mesh as a whole).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    /// `domain.product`, or `None` for checks of the mesh.
    pub product: Option<String>,
    /// The kind of check: `contract`, `naming`, `ownership`, `pii`,
    /// `schema`, `quality`, `freshness`, `evolution`.
    pub check: String,
    /// What exactly was checked, e.g. the quality rule's name.
    pub name: String,
    pub outcome: Outcome,
    /// Why it failed or was skipped; what was measured when it passed.
    pub message: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// The character of the line, counted from 1.
    pub col: Option<usize>,
    /// The contract column the check is about, if one.
    pub column: Option<String>,
}

impl Finding {
    pub(crate) fn new(
        contract: Option<&Contract>,
        check: &str,
        name: impl Into<String>,
    ) -> Finding {
        Finding {
            product: contract.map(Contract::qualified_name),
            check: check.to_string(),
            name: name.into(),
            outcome: Outcome::Passed,
            message: String::new(),
            file: contract.map(|c| c.file.clone()),
            line: contract.map(|c| c.product.pos.line),
            col: contract.map(|c| c.product.pos.col),
            column: None,
        }
    }

    /// A problem of a contract or policy file, as a failed finding.
    pub fn problem(p: &meshql_manifest::Problem, product: Option<String>) -> Finding {
        Finding {
            product,
            check: "contract".into(),
            name: "contract and policies are valid".into(),
            outcome: Outcome::Failed,
            message: p.message.clone(),
            file: Some(p.file.clone()),
            line: Some(p.pos.line),
            col: Some(p.pos.col),
            column: None,
        }
    }

    pub(crate) fn at(mut self, pos: Pos) -> Finding {
        self.line = Some(pos.line);
        self.col = Some(pos.col);
        self
    }

    /// A quality rule of `contract`, at the rule's place.
    pub(crate) fn of_rule(contract: &Contract, rule: &Quality) -> Finding {
        Finding {
            column: rule.column.clone(),
            ..Finding::new(Some(contract), "quality", rule.label()).at(rule.pos)
        }
    }

    /// A check of one column of `contract`, at the column's place.
    pub(crate) fn of_column(
        contract: &Contract,
        check: &str,
        name: impl Into<String>,
        column: &meshql_manifest::Column,
    ) -> Finding {
        Finding {
            column: Some(column.name.clone()),
            ..Finding::new(Some(contract), check, name).at(column.pos)
        }
    }

    pub(crate) fn passed(mut self, message: impl Into<String>) -> Finding {
        self.message = message.into();
        self
    }

    pub(crate) fn failed(mut self, message: impl Into<String>) -> Finding {
        self.outcome = Outcome::Failed;
        self.message = message.into();
        self
    }

    pub(crate) fn skipped(mut self, message: impl Into<String>) -> Finding {
        self.outcome = Outcome::Skipped;
        self.message = message.into();
        self
    }
}

/// One kept result: a data check's finding and when it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptResult {
    #[serde(flatten)]
    pub(crate) finding: Finding,
    /// Milliseconds since the epoch.
    pub(crate) checked_at: i64,
}

/// The file `check.results` names: the last results of each product's
/// data checks, and the results of its earlier runs, newest last.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct KeptResults {
    pub(crate) results: Vec<KeptResult>,
    /// Every run's results, at most [`HISTORY_RUNS`] runs per product (the
    /// last one included). Files kept before meshql kept a history have
    /// none.
    #[serde(default)]
    pub(crate) history: Vec<KeptResult>,
}

/// How many runs of `meshql check` the history keeps per product.
pub const HISTORY_RUNS: usize = 30;

/// The kept results of the data checks, from the file `check.results` of
/// `mesh.yaml` names; none when it names none or none were kept yet.
pub(crate) fn kept_results(mesh: &Mesh) -> Result<KeptResults, String> {
    let Some(path) = &mesh.catalog().mesh.check_results else {
        return Ok(KeptResults::default());
    };
    let text = match read_if_present(path) {
        Ok(Some(t)) => t,
        Ok(None) => return Ok(KeptResults::default()),
        Err(e) => {
            return Err(format!(
                "cannot read the check results {}: {e}",
                path.display()
            ));
        }
    };
    let kept: KeptResults = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the check results {} are not meshql's (line {}, column {}: {e}); run `meshql check` to write them again",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    Ok(kept)
}

/// A file's text, or `None` when there is no such file (nothing written
/// to it yet).
pub(crate) fn read_if_present(path: &std::path::Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
