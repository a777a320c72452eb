//! Limits of one statement that DataFusion does not enforce itself: its
//! size and the depth of what is planned, and the values that scalar
//! functions build.
//!
//! A statement is at most [`MAX_STATEMENT_BYTES`] long and has at most
//! [`MAX_TERMS`] operators (`AND`, `OR`, `+`, `=`, `||`, `UNION`, `JOIN`,
//! ...). The parser bounds the nesting of parentheses, calls and
//! subqueries, but a chain of operators parses into a tree as deep as the
//! chain is long, and planning walks it recursively: 20,000 `OR` terms
//! would overflow a thread's stack and abort the process. Planning also
//! runs on a stack of its own ([`DeepStack`]), large enough for any
//! statement within the limits, whatever thread polls it.
//!
//! Operators that buffer (sorts, joins, aggregates) reserve memory from the
//! query's pool and fail with `ResourcesExhausted` over its limit. A scalar
//! function allocates its result without asking: `repeat('x', 1073741824)`
//! or `range(1, 134217728)` builds a gibibyte in one call. The functions
//! whose result can be much larger than their arguments are wrapped here:
//! before they run, the size of what they would build is computed from
//! their arguments, and a result larger than the query may use fails the
//! query instead of being built.

use std::any::Any;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::config::ConfigExtension;
use datafusion::common::{ScalarValue, extensions_options};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::prelude::SessionContext;

/// The longest statement meshql plans: 1 MiB.
pub const MAX_STATEMENT_BYTES: usize = 1024 * 1024;

/// The most operators one statement may have.
pub const MAX_TERMS: usize = 4096;

/// Whether a statement within the limits plans on the thread's own stack
/// or on a [`DeepStack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Few operators: any thread's stack holds its planning.
    Shallow,
    /// Long chains may be deep trees.
    Deep,
}

/// Statements with more operators than this plan on a [`DeepStack`].
const SHALLOW_TERMS: usize = 64;

/// Refuses a statement too large to plan safely, saying where it crosses
/// the limit; says how deep its planning may go.
pub(crate) fn check_statement(sql: &str) -> crate::Result<Depth> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(crate::Error::Sql(format!(
            "the statement is {} bytes long; meshql plans statements of up to {} bytes (1 MiB)",
            sql.len(),
            MAX_STATEMENT_BYTES
        )));
    }
    // Tokenizing is a loop, not a recursion: safe for any input. Syntax
    // errors are left to the parser, which reports them with position.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(Depth::Deep);
    };
    let mut terms = 0usize;
    for t in &tokens {
        let operator = match &t.token {
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::UNION
                    | Keyword::INTERSECT
                    | Keyword::EXCEPT
                    | Keyword::JOIN
            ),
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::ShiftLeft
            | Token::ShiftRight => true,
            _ => false,
        };
        if operator {
            terms += 1;
            if terms > MAX_TERMS {
                return Err(crate::Error::Sql(format!(
                    "the statement has more than {MAX_TERMS} operators (line {}, column {}); write a long list of alternatives as `IN (...)`, or split the statement",
                    t.span.start.line, t.span.start.column
                )));
            }
        }
    }
    Ok(if terms > SHALLOW_TERMS || sql.len() > 64 * 1024 {
        Depth::Deep
    } else {
        Depth::Shallow
    })
}

/// Makes the operators that multiply their input yield to the runtime.
///
/// DataFusion's sources take a share of the runtime's cooperative budget
/// for each batch, so a query gives its thread to others now and then. A
/// join (a cross join above all) or an unnest makes many batches out of
/// each it reads, a sort emits all it has buffered, and the operator above
/// consumes them in a loop that never reaches a source: without a yield point, one such query holds a
/// thread for as long as it runs, other queries wait, and an abort (at the
/// timeout, on cancel) takes effect only when it ends. A cooperative
/// boundary above each one takes budget for every batch it passes up.
/// A query's own memory pool, `pool`, whose errors name its three
/// largest holders.
pub(crate) fn tracked_pool(
    pool: impl datafusion::execution::memory_pool::MemoryPool + 'static,
) -> Arc<dyn datafusion::execution::memory_pool::MemoryPool> {
    let top = std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN);
    Arc::new(datafusion::execution::memory_pool::TrackConsumersPool::new(
        pool, top,
    ))
}

pub(crate) fn yielding(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up(|node| {
        let name = node.name();
        if name.ends_with("JoinExec")
            || matches!(name, "UnnestExec" | "SortExec" | "SortPreservingMergeExec")
        {
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            return Ok(Transformed::yes(wrapped));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The stack planning runs on when the thread's own has less left.
const PLANNING_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Polls a future on a stack of [`PLANNING_STACK_BYTES`] (mapped, and
/// committed only as far as it is used) unless the thread has that much
/// left: planning a statement at the limits recurses deeper than a
/// runtime thread's 2 MiB.
pub(crate) struct DeepStack<F>(pub(crate) Pin<Box<F>>);

impl<F: Future> Future for DeepStack<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self.0.as_mut();
        stacker::maybe_grow(PLANNING_STACK_BYTES / 2, PLANNING_STACK_BYTES, move || {
            inner.poll(cx)
        })
    }
}

/// Runs planning work on a [`DeepStack`] when the statement needs one;
/// small statements, nearly all of them, pay nothing for it.
pub(crate) async fn planning<F: Future>(depth: Depth, work: F) -> F::Output {
    match depth {
        Depth::Shallow => work.await,
        Depth::Deep => DeepStack(Box::pin(work)).await,
    }
}

extensions_options! {
    /// meshql's settings of a query, read by its functions when they run.
    pub struct QueryLimits {
        /// The most bytes one call of a function may build.
        pub max_value_bytes: u64, default = DEFAULT_MAX_VALUE_BYTES
    }
}

impl ConfigExtension for QueryLimits {
    const PREFIX: &'static str = "meshql";
}

/// Without a memory limit for the query, no function call builds more than
/// this (4 GiB): a larger argument would take the process down.
pub(crate) const DEFAULT_MAX_VALUE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// How the size of a function's result follows from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: the string `n` times.
    Repeat,
    /// `lpad(s, n[, fill])`, `rpad`: `n` characters.
    Pad,
    /// `range(stop)`, `range(start, stop[, step])`, `generate_series`.
    Series,
    /// `array_repeat(v, n)`: `n` copies of the value.
    ArrayRepeat,
    /// `array_resize(a, n[, v])`: `n` elements.
    ArrayResize,
    /// `replace(s, from, to)`: `to` for each match; an empty `from` matches
    /// between every two characters.
    Replace,
    /// `regexp_replace(s, pattern, to[, flags])`: like `replace`, any
    /// position may match.
    RegexpReplace,
}

const GROWING: &[(&str, Growth)] = &[
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
];

/// Replaces the growing functions of `ctx` with their bounded versions.
pub(crate) fn register(ctx: &SessionContext) {
    for (name, growth) in GROWING {
        if let Ok(inner) = ctx.udf(name) {
            let inner = inner.as_ref().clone();
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner,
                growth: *growth,
            }));
        }
    }
}

/// A growing function that refuses to build more than the query may use.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let limit = args
            .config_options
            .extensions
            .get::<QueryLimits>()
            .map_or(DEFAULT_MAX_VALUE_BYTES, |l| l.max_value_bytes);
        let size = estimate(self.growth, &args.args, args.number_rows)?;
        if size > limit {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}(...) would build about {} MB, more than the {} MB this query may use",
                self.inner.name(),
                size / (1024 * 1024),
                limit / (1024 * 1024)
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// The longest value of a string or binary argument, in bytes.
fn max_len(v: &ColumnarValue) -> Result<u64> {
    Ok(match v {
        ColumnarValue::Scalar(s) => match s {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => s.len() as u64,
            ScalarValue::Binary(Some(b))
            | ScalarValue::LargeBinary(Some(b))
            | ScalarValue::BinaryView(Some(b)) => b.len() as u64,
            other => other.size() as u64,
        },
        ColumnarValue::Array(a) => {
            let lengths = match a.data_type() {
                DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView => arrow::compute::kernels::length::length(a)?,
                _ => {
                    let rows = a.len().max(1) as u64;
                    return Ok(a.get_array_memory_size() as u64 / rows + 1);
                }
            };
            let lengths = cast(&lengths, &DataType::Int64)?;
            arrow::compute::max(lengths.as_primitive::<Int64Type>()).unwrap_or(0) as u64
        }
    })
}

/// An integer argument's values, NULL and negatives as 0, one per row.
fn counts(v: &ColumnarValue, rows: usize) -> Result<Vec<u64>> {
    Ok(match v {
        ColumnarValue::Scalar(s) => {
            let n = match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(n)) => n.max(0) as u64,
                _ => 0,
            };
            vec![n; rows]
        }
        ColumnarValue::Array(a) => {
            let a = cast(a, &DataType::Int64)?;
            a.as_primitive::<Int64Type>()
                .iter()
                .map(|n| n.unwrap_or(0).max(0) as u64)
                .collect()
        }
    })
}

fn sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

/// An argument as one 64-bit number per row: integers as they are, dates
/// in days, timestamps in their unit, intervals in nanoseconds (months as
/// 30 days).
fn numbers(v: &ColumnarValue, rows: usize) -> Vec<Option<i128>> {
    let one = |s: &ScalarValue| -> Option<i128> {
        match s {
            ScalarValue::IntervalMonthDayNano(Some(i)) => Some(
                (i.months as i128 * 30 + i.days as i128) * 86_400_000_000_000
                    + i.nanoseconds as i128,
            ),
            ScalarValue::IntervalDayTime(Some(i)) => {
                Some((i.days as i128 * 86_400_000 + i.milliseconds as i128) * 1_000_000)
            }
            ScalarValue::IntervalYearMonth(Some(m)) => Some(*m as i128 * 30 * 86_400_000_000_000),
            ScalarValue::Date32(Some(d)) => Some(*d as i128),
            ScalarValue::Date64(Some(d)) => Some(*d as i128 / 86_400_000),
            ScalarValue::TimestampSecond(Some(t), _) => Some(*t as i128 * 1_000_000_000),
            ScalarValue::TimestampMillisecond(Some(t), _) => Some(*t as i128 * 1_000_000),
            ScalarValue::TimestampMicrosecond(Some(t), _) => Some(*t as i128 * 1_000),
            ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t as i128),
            other => match other.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(n)) => n.map(i128::from),
                _ => None,
            },
        }
    };
    match v {
        ColumnarValue::Scalar(s) => vec![one(s); rows],
        ColumnarValue::Array(a) => (0..a.len())
            .map(|i| ScalarValue::try_from_array(a, i).ok().and_then(|s| one(&s)))
            .collect(),
    }
}

/// Elements of `range`/`generate_series` per row.
fn series(args: &[ColumnarValue], rows: usize) -> u64 {
    let cols: Vec<Vec<Option<i128>>> = args.iter().map(|a| numbers(a, rows)).collect();
    // Dates count in days and their step in nanoseconds.
    let dates = matches!(
        args.first().map(ColumnarValue::data_type),
        Some(DataType::Date32 | DataType::Date64)
    );
    let mut total = 0u64;
    for row in 0..rows {
        let get = |i: usize| cols.get(i).and_then(|c| c.get(row).copied().flatten());
        let (start, stop, step) = match cols.len() {
            1 => (Some(0), get(0), Some(1)),
            2 => (get(0), get(1), Some(1)),
            _ => (get(0), get(1), get(2)),
        };
        let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
            continue;
        };
        let mut span = (stop - start).abs();
        if dates && cols.len() > 2 {
            span = span.saturating_mul(86_400_000_000_000);
        }
        let n = span / step.abs().max(1) + 1;
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
    total
}

/// Bytes a call would build, an upper bound.
fn estimate(growth: Growth, args: &[ColumnarValue], rows: usize) -> Result<u64> {
    let arg = |i: usize| args.get(i);
    Ok(match growth {
        Growth::Repeat | Growth::ArrayRepeat => match (arg(0), arg(1)) {
            (Some(v), Some(n)) => max_len(v)?.max(1).saturating_mul(sum(&counts(n, rows)?)),
            _ => 0,
        },
        Growth::Pad => match arg(1) {
            // Up to four bytes a character.
            Some(n) => sum(&counts(n, rows)?).saturating_mul(4),
            None => 0,
        },
        Growth::ArrayResize => match arg(1) {
            Some(n) => sum(&counts(n, rows)?).saturating_mul(16),
            None => 0,
        },
        Growth::Series => series(args, rows).saturating_mul(8),
        Growth::Replace | Growth::RegexpReplace => match (arg(0), arg(2)) {
            (Some(s), Some(to)) => {
                let len = max_len(s)?;
                let to = max_len(to)?;
                // At most one replacement per position, and one at the end.
                (len.saturating_add(1))
                    .saturating_mul(to.saturating_add(1))
                    .saturating_mul(rows as u64)
            }
            _ => 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    #[test]
    fn estimates_follow_the_arguments() {
        let x = scalar(ScalarValue::Utf8(Some("xy".into())));
        let n = scalar(ScalarValue::Int64(Some(1_000)));
        assert_eq!(
            estimate(Growth::Repeat, &[x.clone(), n.clone()], 3).ok(),
            Some(6_000)
        );
        let series = [
            scalar(ScalarValue::Int64(Some(1))),
            scalar(ScalarValue::Int64(Some(134_217_728))),
        ];
        assert_eq!(
            estimate(Growth::Series, &series, 1).ok(),
            Some(134_217_728 * 8)
        );
        let stepped = [
            scalar(ScalarValue::Int64(Some(0))),
            scalar(ScalarValue::Int64(Some(100))),
            scalar(ScalarValue::Int64(Some(-10))),
        ];
        assert_eq!(estimate(Growth::Series, &stepped, 1).ok(), Some(11 * 8));
        let negative = scalar(ScalarValue::Int64(Some(-5)));
        assert_eq!(estimate(Growth::Repeat, &[x, negative], 1).ok(), Some(0));
    }
}
