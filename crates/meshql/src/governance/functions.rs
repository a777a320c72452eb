//! Policy functions (`current_user()`, `is_member(role)`,
//! `current_attribute(key)`) and mask functions. Their outputs are part of
//! meshql's documented behaviour:
//!
//! | function | output |
//! | --- | --- |
//! | `mask_email(s)` | first character of the local part, `***`, `@`, the domain: `a***@gmail.com`; `***` without an `@` |
//! | `mask_partial(s, keep_first, keep_last, mask_char)` | the first and last characters kept, each other character replaced by `mask_char`; all replaced when the value is not longer than `keep_first + keep_last` |
//! | `mask_card(s)` | every digit but the last four replaced by `*`, separators kept: `************1111` |
//! | `redact(s)` | `[REDACTED]` |
//! | `hash_pseudonym(v)` | HMAC-SHA-256 of the value's text under the mesh's pseudonym secret: 64 hex digits for text; for integers, a non-negative integer of the same type from the first bytes |
//! | `nullify(v)` | NULL of the column's type |
//! | `truncate_date(v, unit)` | the date or timestamp truncated to `year`, `quarter`, `month`, `week` (Monday), `day` or (timestamps) `hour`, same type |
//! | `round_to(v, step)` | the number rounded to the nearest multiple of `step` (halves away from zero), same type |
//!
//! NULL in gives NULL out for every mask.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, StringArray, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use sha2::Sha256;

use crate::principal::Principal;

fn strings(v: &ColumnarValue, n: usize) -> Result<ArrayRef> {
    Ok(cast(&v.to_array(n)?, &DataType::Utf8)?)
}

fn map_strings(
    v: &ColumnarValue,
    n: usize,
    f: impl Fn(&str, usize) -> Result<String>,
) -> Result<ColumnarValue> {
    let arr = strings(v, n)?;
    let arr = arr.as_string::<i32>();
    let out: StringArray = (0..arr.len())
        .map(|i| {
            if arr.is_null(i) {
                Ok(None)
            } else {
                f(arr.value(i), i).map(Some)
            }
        })
        .collect::<Result<_>>()?;
    Ok(ColumnarValue::Array(Arc::new(out)))
}

fn string_type(name: &str, t: &DataType) -> Result<DataType> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => plan_err!("{name} masks text, not {other}"),
    }
}

macro_rules! string_mask {
    ($ty:ident, $name:literal, $f:expr) => {
        #[derive(Debug, PartialEq, Eq, Hash)]
        struct $ty {
            signature: Signature,
        }

        impl $ty {
            fn new() -> Self {
                Self {
                    signature: Signature::any(1, Volatility::Immutable),
                }
            }
        }

        impl ScalarUDFImpl for $ty {
            fn as_any(&self) -> &dyn Any {
                self
            }
            fn name(&self) -> &str {
                $name
            }
            fn signature(&self) -> &Signature {
                &self.signature
            }
            fn return_type(&self, t: &[DataType]) -> Result<DataType> {
                string_type($name, &t[0])
            }
            fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
                map_strings(&args.args[0], args.number_rows, |s, _| Ok($f(s)))
            }
        }
    };
}

/// `ana.lopez@gmail.com` → `a***@gmail.com`.
pub fn mask_email(s: &str) -> String {
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        _ => "***".to_string(),
    }
}

/// Every digit but the last four becomes `*`.
pub fn mask_card(s: &str) -> String {
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen <= digits.saturating_sub(4) {
                    '*'
                } else {
                    c
                }
            } else {
                c
            }
        })
        .collect()
}

pub fn mask_partial(s: &str, keep_first: usize, keep_last: usize, mask: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= keep_first + keep_last {
        return std::iter::repeat_n(mask, chars.len()).collect();
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_first || i >= chars.len() - keep_last {
                *c
            } else {
                mask
            }
        })
        .collect()
}

pub const REDACTED: &str = "[REDACTED]";

string_mask!(MaskEmail, "mask_email", mask_email);
string_mask!(MaskCard, "mask_card", mask_card);
string_mask!(Redact, "redact", |_: &str| REDACTED.to_string());

#[derive(Debug, PartialEq, Eq, Hash)]
struct MaskPartial {
    signature: Signature,
}

impl ScalarUDFImpl for MaskPartial {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "mask_partial"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, t: &[DataType]) -> Result<DataType> {
        if !t[1].is_integer() || !t[2].is_integer() {
            return plan_err!(
                "mask_partial(value, keep_first, keep_last, mask_char): keep_first and keep_last are integers"
            );
        }
        string_type("mask_partial", &t[0])
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let first = cast(&args.args[1].to_array(n)?, &DataType::Int64)?;
        let last = cast(&args.args[2].to_array(n)?, &DataType::Int64)?;
        let mask = strings(&args.args[3], n)?;
        let (first, last) = (
            first.as_primitive::<Int64Type>(),
            last.as_primitive::<Int64Type>(),
        );
        let mask = mask.as_string::<i32>();
        map_strings(&args.args[0], n, |s, i| {
            let c = mask.value(i).chars().next().unwrap_or('*');
            let (f, l) = (
                first.value(i).max(0) as usize,
                last.value(i).max(0) as usize,
            );
            Ok(mask_partial(s, f, l, c))
        })
    }
}

/// HMAC-SHA-256 (RFC 2104) of `msg` under `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HashPseudonym {
    signature: Signature,
    key: Option<Vec<u8>>,
}

impl ScalarUDFImpl for HashPseudonym {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "hash_pseudonym"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, t: &[DataType]) -> Result<DataType> {
        match &t[0] {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Ok(t[0].clone())
            }
            other => string_type("hash_pseudonym", other),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(key) = &self.key else {
            return exec_err!(
                "hash_pseudonym needs a secret: set governance.pseudonymSecret in mesh.yaml or MESHQL_PSEUDONYM_SECRET"
            );
        };
        let n = args.number_rows;
        let t = args.args[0].data_type();
        let digest = |s: &str| hmac_sha256(key, s.as_bytes());
        macro_rules! ints {
            ($arrow:ty, $native:ty) => {{
                let arr = args.args[0].to_array(n)?;
                let arr = arr.as_primitive::<$arrow>();
                let out: PrimitiveArray<$arrow> = arr
                    .iter()
                    .map(|v| {
                        v.map(|v| {
                            let d = digest(&v.to_string());
                            const N: usize = std::mem::size_of::<$native>();
                            let mut b = [0u8; N];
                            b.copy_from_slice(&d[..N]);
                            <$native>::from_be_bytes(b) & <$native>::MAX
                        })
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }};
        }
        match t {
            DataType::Int8 => ints!(Int8Type, i8),
            DataType::Int16 => ints!(Int16Type, i16),
            DataType::Int32 => ints!(Int32Type, i32),
            DataType::Int64 => ints!(Int64Type, i64),
            _ => map_strings(&args.args[0], n, |s, _| {
                Ok(digest(s).iter().map(|b| format!("{b:02x}")).collect())
            }),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Nullify {
    signature: Signature,
}

impl ScalarUDFImpl for Nullify {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "nullify"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, t: &[DataType]) -> Result<DataType> {
        Ok(t[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Array(new_null_array(
            &args.args[0].data_type(),
            args.number_rows,
        )))
    }
}

fn literal_string(v: &ColumnarValue, what: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(s) => match s.try_as_str() {
            Some(Some(s)) => Ok(s.to_ascii_lowercase()),
            _ => exec_err!("{what} must be a text literal"),
        },
        ColumnarValue::Array(_) => exec_err!("{what} must be a literal"),
    }
}

/// Truncates a day number (days since 1970-01-01) to the start of its unit;
/// weeks start on Monday.
fn truncate_days(days: i32, unit: &str) -> Result<i32> {
    use chrono::{Datelike, Days, NaiveDate};
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    let Some(date) = epoch.checked_add_signed(chrono::TimeDelta::days(days.into())) else {
        return exec_err!("truncate_date: day {days} is outside the calendar");
    };
    let start = match unit {
        "day" | "hour" => Some(date),
        "week" => date.checked_sub_days(Days::new(date.weekday().num_days_from_monday().into())),
        "month" => date.with_day(1),
        "quarter" => NaiveDate::from_ymd_opt(date.year(), (date.month() - 1) / 3 * 3 + 1, 1),
        "year" => NaiveDate::from_ymd_opt(date.year(), 1, 1),
        other => {
            return exec_err!(
                "truncate_date: unknown unit `{other}` (year, quarter, month, week, day, hour)"
            );
        }
    };
    match start {
        Some(start) => Ok((start - epoch).num_days() as i32),
        None => exec_err!("truncate_date: day {days} is outside the calendar"),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TruncateDate {
    signature: Signature,
}

impl ScalarUDFImpl for TruncateDate {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "truncate_date"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, t: &[DataType]) -> Result<DataType> {
        match &t[0] {
            DataType::Date32 | DataType::Timestamp(..) => Ok(t[0].clone()),
            other => plan_err!("truncate_date truncates dates and timestamps, not {other}"),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let unit = literal_string(&args.args[1], "truncate_date's unit")?;
        let arr = args.args[0].to_array(args.number_rows)?;
        macro_rules! ts {
            ($arrow:ty, $per_day:expr, $per_hour:expr) => {{
                let a = arr.as_primitive::<$arrow>();
                let out: PrimitiveArray<$arrow> = a
                    .iter()
                    .map(|v| {
                        v.map(|v| -> Result<i64> {
                            let day = v.div_euclid($per_day);
                            if unit == "hour" {
                                return Ok(v.div_euclid($per_hour) * $per_hour);
                            }
                            Ok(i64::from(truncate_days(day as i32, &unit)?) * $per_day)
                        })
                        .transpose()
                    })
                    .collect::<Result<_>>()?;
                Ok(ColumnarValue::Array(Arc::new(
                    out.with_data_type(arr.data_type().clone()),
                )))
            }};
        }
        match arr.data_type() {
            DataType::Date32 => {
                let a = arr.as_primitive::<Date32Type>();
                let out: PrimitiveArray<Date32Type> = a
                    .iter()
                    .map(|v| v.map(|d| truncate_days(d, &unit)).transpose())
                    .collect::<Result<_>>()?;
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            DataType::Timestamp(TimeUnit::Second, _) => ts!(TimestampSecondType, 86_400, 3_600),
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                ts!(TimestampMillisecondType, 86_400_000, 3_600_000)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                ts!(TimestampMicrosecondType, 86_400_000_000, 3_600_000_000)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                ts!(
                    TimestampNanosecondType,
                    86_400_000_000_000,
                    3_600_000_000_000
                )
            }
            other => exec_err!("truncate_date truncates dates and timestamps, not {other}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RoundTo {
    signature: Signature,
}

fn round_i128(v: i128, step: i128) -> i128 {
    let half = step / 2;
    if v >= 0 {
        (v + half) / step * step
    } else {
        -((-v + half) / step * step)
    }
}

impl ScalarUDFImpl for RoundTo {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        "round_to"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, t: &[DataType]) -> Result<DataType> {
        if t[0].is_numeric() {
            Ok(t[0].clone())
        } else {
            plan_err!("round_to rounds numbers, not {}", t[0])
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let step = match &args.args[1] {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(v)) if v > 0.0 => v,
                _ => return exec_err!("round_to's step must be a positive number"),
            },
            ColumnarValue::Array(_) => return exec_err!("round_to's step must be a literal"),
        };
        let arr = args.args[0].to_array(args.number_rows)?;
        macro_rules! ints {
            ($arrow:ty, $native:ty) => {{
                let s = (step.round() as i128).max(1);
                let out: PrimitiveArray<$arrow> = arr
                    .as_primitive::<$arrow>()
                    .iter()
                    .map(|v| v.map(|v| round_i128(v as i128, s) as $native))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }};
        }
        match arr.data_type().clone() {
            DataType::Int8 => ints!(Int8Type, i8),
            DataType::Int16 => ints!(Int16Type, i16),
            DataType::Int32 => ints!(Int32Type, i32),
            DataType::Int64 => ints!(Int64Type, i64),
            DataType::Float32 => {
                let out: PrimitiveArray<Float32Type> = arr
                    .as_primitive::<Float32Type>()
                    .iter()
                    .map(|v| v.map(|v| ((f64::from(v) / step).round() * step) as f32))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            DataType::Float64 => {
                let out: PrimitiveArray<Float64Type> = arr
                    .as_primitive::<Float64Type>()
                    .iter()
                    .map(|v| v.map(|v| (v / step).round() * step))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            t @ DataType::Decimal128(_, scale) => {
                let s = ((step * 10f64.powi(i32::from(scale))).round() as i128).max(1);
                let out: PrimitiveArray<Decimal128Type> = arr
                    .as_primitive::<Decimal128Type>()
                    .iter()
                    .map(|v| v.map(|v| round_i128(v, s)))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out.with_data_type(t))))
            }
            other => exec_err!("round_to rounds numbers, not {other}"),
        }
    }
}

/// `current_user()`, `is_member('role')`, `current_attribute('key')`, bound
/// to a session's principal.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PrincipalFunction {
    name: &'static str,
    signature: Signature,
    user: String,
    roles: Vec<String>,
    attributes: BTreeMap<String, String>,
}

impl PrincipalFunction {
    fn value(&self, arg: Option<&str>) -> ScalarValue {
        match (self.name, arg) {
            ("current_user", _) => ScalarValue::Utf8(Some(self.user.clone())),
            ("is_member", Some(role)) => {
                ScalarValue::Boolean(Some(self.roles.iter().any(|r| r == role)))
            }
            ("current_attribute", Some(key)) => {
                ScalarValue::Utf8(self.attributes.get(key).cloned())
            }
            _ => ScalarValue::Null,
        }
    }
}

impl ScalarUDFImpl for PrincipalFunction {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _t: &[DataType]) -> Result<DataType> {
        Ok(if self.name == "is_member" {
            DataType::Boolean
        } else {
            DataType::Utf8
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.is_empty() {
            return Ok(ColumnarValue::Scalar(self.value(None)));
        }
        let keys = strings(&args.args[0], args.number_rows)?;
        let keys = keys.as_string::<i32>();
        if self.name == "is_member" {
            let out: BooleanArray = keys
                .iter()
                .map(|k| k.map(|k| self.roles.iter().any(|r| r == k)))
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        let out: StringArray = keys
            .iter()
            .map(|k| k.and_then(|k| self.attributes.get(k).cloned()))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn principal_functions(p: &Principal) -> Vec<PrincipalFunction> {
    [
        ("current_user", Signature::exact(vec![], Volatility::Stable)),
        (
            "is_member",
            Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        ),
        (
            "current_attribute",
            Signature::exact(vec![DataType::Utf8], Volatility::Stable),
        ),
    ]
    .into_iter()
    .map(|(name, signature)| PrincipalFunction {
        name,
        signature,
        user: p.user.clone(),
        roles: p.roles.clone(),
        attributes: p.attributes.clone(),
    })
    .collect()
}

/// Registers the mask and policy functions users may call with a session.
/// The keyed functions are not among them: in a user's SQL a call to one
/// is a call to a function that does not exist.
pub(crate) fn register(ctx: &SessionContext, principal: &Principal) {
    for f in masks() {
        ctx.register_udf(f);
    }
    for f in principal_functions(principal) {
        ctx.register_udf(ScalarUDF::from(f));
    }
}

/// Whether `name` is a function governance relies on (a mask, the keyed
/// pseudonym, a principal function): nothing may replace it.
pub(crate) fn is_reserved(name: &str) -> bool {
    let name = name.to_lowercase();
    name == "hash_pseudonym"
        || name == "current_schema"
        || masks().iter().any(|f| f.name() == name)
        || principal_functions(&Principal::new("-"))
            .iter()
            .any(|f| f.name() == name || f.aliases().contains(&name))
}

/// The mask functions, which depend on nothing but their arguments.
fn masks() -> Vec<ScalarUDF> {
    let any = |n| Signature::any(n, Volatility::Immutable);
    vec![
        ScalarUDF::from(MaskEmail::new()),
        ScalarUDF::from(MaskCard::new()),
        ScalarUDF::from(Redact::new()),
        ScalarUDF::from(MaskPartial { signature: any(4) }),
        ScalarUDF::from(Nullify { signature: any(1) }),
        ScalarUDF::from(TruncateDate { signature: any(2) }),
        ScalarUDF::from(RoundTo { signature: any(2) }),
    ]
}

/// The meshql functions a worker registers for one task. A plan fragment
/// names its functions only (datafusion-distributed's codec answers for
/// every function before a user codec is asked), so the worker resolves
/// each name in its own registry: the masks, `hash_pseudonym` under the
/// worker's own key (the coordinator checks that it is the same key, see
/// `cluster::TaskPrincipal`) and the principal functions answering for the
/// principal the task runs for.
pub(crate) fn worker_functions(
    principal: &Principal,
    secret: Option<&[u8]>,
) -> Vec<Arc<ScalarUDF>> {
    let mut fns: Vec<Arc<ScalarUDF>> = masks().into_iter().map(Arc::new).collect();
    fns.push(Arc::new(ScalarUDF::from(HashPseudonym {
        signature: Signature::any(1, Volatility::Immutable),
        key: secret.map(<[u8]>::to_vec),
    })));
    fns.extend(
        principal_functions(principal)
            .into_iter()
            .map(|f| Arc::new(ScalarUDF::from(f))),
    );
    fns
}

/// Registers the functions whose results depend on a secret of the mesh,
/// for the context that parses policy expressions only. A user who could
/// call `hash_pseudonym` could compute the pseudonym of every raw key and
/// map masked values back.
pub(crate) fn register_keyed(ctx: &SessionContext, secret: Option<&[u8]>) {
    ctx.register_udf(ScalarUDF::from(HashPseudonym {
        signature: Signature::any(1, Volatility::Immutable),
        key: secret.map(<[u8]>::to_vec),
    }));
}

/// Replaces calls of the principal functions with their values, so a row
/// filter such as `region = current_attribute('region')` becomes
/// `region = 'EU'` and can prune files.
pub(crate) fn bind_principal(expr: Expr, p: &Principal) -> Result<Expr> {
    let fns = principal_functions(p);
    expr.transform_up(|e| {
        if let Expr::ScalarFunction(call) = &e
            && let Some(f) = fns.iter().find(|f| f.name == call.func.name())
        {
            let arg = match call.args.first() {
                None => None,
                Some(Expr::Literal(v, _)) => match v.try_as_str() {
                    Some(Some(s)) => Some(s.to_string()),
                    _ => return Ok(Transformed::no(e)),
                },
                Some(_) => return Ok(Transformed::no(e)),
            };
            return Ok(Transformed::yes(Expr::Literal(
                f.value(arg.as_deref()),
                None,
            )));
        }
        Ok(Transformed::no(e))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_have_their_documented_output() {
        assert_eq!(mask_email("ana.lopez7@gmail.com"), "a***@gmail.com");
        assert_eq!(mask_email("no-at-sign"), "***");
        assert_eq!(mask_card("4111111111111111"), "************1111");
        assert_eq!(mask_card("3714-496353-98431"), "****-******-*8431");
        assert_eq!(
            mask_partial("+49 151 2345678", 3, 2, '#'),
            "+49##########78"
        );
        assert_eq!(mask_partial("abc", 2, 2, '*'), "***");
        assert_eq!(round_i128(1234, 100), 1200);
        assert_eq!(round_i128(1250, 100), 1300);
        assert_eq!(round_i128(-1250, 100), -1300);
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn dates_truncate_to_their_unit() {
        use chrono::{Datelike, NaiveDate};
        let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
        let day =
            |y, m, d| (NaiveDate::from_ymd_opt(y, m, d).expect("date") - epoch).num_days() as i32;
        let civil = |x: i32| {
            let date = epoch + chrono::TimeDelta::days(x.into());
            (date.year(), date.month(), date.day())
        };
        let d = day(2026, 8, 19); // a Wednesday
        assert_eq!(
            civil(truncate_days(d, "month").expect("unit")),
            (2026, 8, 1)
        );
        assert_eq!(
            civil(truncate_days(d, "quarter").expect("unit")),
            (2026, 7, 1)
        );
        assert_eq!(civil(truncate_days(d, "year").expect("unit")), (2026, 1, 1));
        assert_eq!(
            civil(truncate_days(d, "week").expect("unit")),
            (2026, 8, 17)
        );
        assert!(truncate_days(d, "fortnight").is_err());
    }
}

/// `current_user` is an SQL keyword that takes no parentheses; meshql also
/// accepts `current_user()`, as policy authors write it. Rewrites the call
/// form outside quotes and comments.
pub fn normalize_niladic(sql: &str) -> std::borrow::Cow<'_, str> {
    const NAME: &str = "current_user";
    let lower = sql.to_ascii_lowercase();
    if !lower.contains(NAME) {
        return std::borrow::Cow::Borrowed(sql);
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
        } else if b == b'\'' || b == b'"' {
            quote = Some(b);
        } else if lower[i..].starts_with(NAME)
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            let rest = &sql[i + NAME.len()..];
            let trimmed = rest.trim_start();
            if let Some(after) = trimmed.strip_prefix('(')
                && after.trim_start().starts_with(')')
            {
                out.push_str(&sql[i..i + NAME.len()]);
                let close = sql.len() - after.trim_start().len();
                i = close + 1;
                continue;
            }
        }
        // Copy one whole character.
        let ch = sql[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod niladic_tests {
    use super::normalize_niladic;

    #[test]
    fn current_user_calls_become_the_keyword() {
        assert_eq!(
            normalize_niladic("user = current_user()"),
            "user = current_user"
        );
        assert_eq!(
            normalize_niladic("CURRENT_USER ( ) = 'x'"),
            "CURRENT_USER = 'x'"
        );
        assert_eq!(normalize_niladic("'current_user()'"), "'current_user()'");
        assert_eq!(normalize_niladic("my_current_user()"), "my_current_user()");
        assert_eq!(normalize_niladic("é current_user()"), "é current_user");
    }
}
