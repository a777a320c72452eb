//! Results of different engines compared. Column names and types differ
//! between engines (DuckDB averages decimals as doubles, DataFusion as
//! decimals), so values are compared: numbers within a relative tolerance,
//! everything else as text. Rows compare in order where the query orders
//! them, as multisets where it does not.

use std::cmp::Ordering;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// One value of a result.
#[derive(Clone, Debug)]
pub enum Cell {
    Null,
    Number(f64),
    Text(String),
}

impl Cell {
    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Number(a), Cell::Number(b)) => {
                let scale = a.abs().max(b.abs()).max(1.0);
                (a - b).abs() <= 1e-6 * scale
            }
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }

    /// Orders rows for the multiset comparison: numbers rounded to four
    /// decimals so that rounding differences do not change the order.
    fn sort_key(&self) -> String {
        match self {
            Cell::Null => "\u{0}".into(),
            Cell::Number(n) => format!("{:020.4}", n),
            Cell::Text(t) => t.clone(),
        }
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => write!(f, "NULL"),
            Cell::Number(n) => write!(f, "{n}"),
            Cell::Text(t) => write!(f, "{t}"),
        }
    }
}

fn is_number(t: &DataType) -> bool {
    t.is_numeric()
}

/// The rows of `batches` as cells.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    let options = FormatOptions::default();
    for batch in batches {
        let mut columns: Vec<Vec<Cell>> = Vec::with_capacity(batch.num_columns());
        for column in batch.columns() {
            let n = column.len();
            let cells = if is_number(column.data_type()) {
                match cast(column, &DataType::Float64) {
                    Ok(floats) => {
                        let floats = floats.as_primitive::<Float64Type>();
                        (0..n)
                            .map(|i| {
                                if floats.is_null(i) {
                                    Cell::Null
                                } else {
                                    Cell::Number(floats.value(i))
                                }
                            })
                            .collect()
                    }
                    Err(_) => text_cells(column.as_ref(), &options),
                }
            } else {
                text_cells(column.as_ref(), &options)
            };
            columns.push(cells);
        }
        for row in 0..batch.num_rows() {
            out.push(columns.iter().map(|c| c[row].clone()).collect());
        }
    }
    out
}

fn text_cells(column: &dyn Array, options: &FormatOptions<'_>) -> Vec<Cell> {
    match ArrayFormatter::try_new(column, options) {
        Ok(f) => (0..column.len())
            .map(|i| {
                if column.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Text(f.value(i).to_string())
                }
            })
            .collect(),
        Err(e) => vec![Cell::Text(format!("<unformattable: {e}>")); column.len()],
    }
}

fn sort(rows: &mut [Vec<Cell>]) {
    rows.sort_by(|a, b| {
        for (x, y) in a.iter().zip(b) {
            match x.sort_key().cmp(&y.sort_key()) {
                Ordering::Equal => continue,
                other => return other,
            }
        }
        Ordering::Equal
    });
}

/// Whether `sql` orders its result (an `ORDER BY` anywhere in its text,
/// which for TPC-H is the outermost one).
pub fn is_ordered(sql: &str) -> bool {
    sql.to_ascii_lowercase().contains("order by")
}

/// `Ok` when `a` and `b` hold the same rows (in the same order when
/// `ordered`); otherwise what differs first.
pub fn same_results(a: &[RecordBatch], b: &[RecordBatch], ordered: bool) -> Result<(), String> {
    let (mut a, mut b) = (rows(a), rows(b));
    if a.len() != b.len() {
        return Err(format!("{} rows against {}", a.len(), b.len()));
    }
    if !ordered {
        sort(&mut a);
        sort(&mut b);
    }
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if x.len() != y.len() {
            return Err(format!("{} columns against {}", x.len(), y.len()));
        }
        if !x.iter().zip(y).all(|(p, q)| p.same(q)) {
            let show = |r: &Vec<Cell>| {
                r.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            return Err(format!("row {i}: [{}] against [{}]", show(x), show(y)));
        }
    }
    Ok(())
}
