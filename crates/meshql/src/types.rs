//! Contract column types as Arrow types, and the check of a product's data
//! against its contract.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use meshql_manifest::{ColumnType, Contract};

/// The Arrow type a contract column type is delivered as: in results, in
/// `Session::product_schema`, to Flight SQL clients.
pub(crate) fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Int8 => DataType::Int8,
        ColumnType::Int16 => DataType::Int16,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        ColumnType::String => DataType::Utf8,
        ColumnType::Binary => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// The Arrow type a contract column type is read and computed in inside a
/// query: strings as views (`Utf8View`), which Parquet decodes without
/// copying and which compare, hash and group faster; results are cast back
/// to [`arrow_type`] at the edge (see [`delivered_schema`]).
pub(crate) fn scan_type(t: ColumnType) -> DataType {
    match arrow_type(t) {
        DataType::Utf8 => DataType::Utf8View,
        other => other,
    }
}

/// The type a value computed inside a query is delivered as: string views
/// as plain strings, everything else as it is.
pub(crate) fn delivered_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        _ => None,
    }
}

/// `schema` with every column of an internal-only type in its delivered
/// type (see [`delivered_type`]).
pub(crate) fn delivered_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match delivered_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The schema a statement's results are delivered in: [`delivered_schema`]
/// with every column nullable. Whether a computed column can be NULL is
/// known only after physical planning, and DataFusion's logical and
/// physical plans disagree about it (an aliased scalar subquery is NOT NULL
/// in one and nullable in the other): the schema a client is told before a
/// query runs (Flight SQL's `GetFlightInfo`, a prepared statement) must be
/// the one its results come in, so results say nothing of nullability. The
/// contract's NOT NULL columns say it in the table metadata.
pub(crate) fn result_schema(schema: &Schema) -> SchemaRef {
    let delivered = delivered_schema(schema);
    let fields: Vec<Field> = delivered
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(
        fields,
        delivered.metadata().clone(),
    ))
}

/// The product's schema as its contract declares it, in the types queries
/// compute in ([`scan_type`]): the schema every principal's queries are
/// planned against, before any storage is touched.
pub(crate) fn contract_schema(contract: &Contract) -> SchemaRef {
    let fields: Vec<Field> = contract
        .product
        .columns
        .iter()
        .map(|c| Field::new(&c.name, scan_type(c.data_type), !c.required))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Whether every value of type `old` fits type `new` (a contract change
/// from `old` to `new` keeps old data readable).
pub(crate) fn widens(new: &DataType, old: &DataType) -> bool {
    compatible(new, old)
}

/// Whether data of type `actual` can be read as the declared type without
/// losing information.
fn compatible(declared: &DataType, actual: &DataType) -> bool {
    use DataType::*;
    if declared == actual {
        return true;
    }
    match (declared, actual) {
        (Utf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary, Binary | LargeBinary | BinaryView | FixedSizeBinary(_)) => true,
        (Int64, Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32) => true,
        (Int32, Int8 | Int16 | UInt8 | UInt16) => true,
        (Int16, Int8 | UInt8) => true,
        (Float64, Float16 | Float32) => true,
        (Decimal128(p, s), Decimal128(p2, s2)) => s == s2 && p2 <= p,
        (Decimal128(p, s), Decimal32(p2, s2) | Decimal64(p2, s2)) => s == s2 && p2 <= p,
        (Timestamp(_, tz), Timestamp(_, tz2)) => tz.is_some() == tz2.is_some(),
        (Date32, Date64) => true,
        (Time64(_), Time32(_) | Time64(_)) => true,
        _ => false,
    }
}

pub(crate) fn sql_name(t: &DataType) -> String {
    use DataType::*;
    match t {
        Utf8 | LargeUtf8 | Utf8View => "varchar".into(),
        Int8 => "tinyint".into(),
        Int16 => "smallint".into(),
        Int32 => "int".into(),
        Int64 => "bigint".into(),
        Float32 => "real".into(),
        Float64 => "double".into(),
        Decimal128(p, s) | Decimal32(p, s) | Decimal64(p, s) => format!("decimal({p},{s})"),
        Date32 | Date64 => "date".into(),
        Timestamp(_, None) => "timestamp".into(),
        Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        Boolean => "boolean".into(),
        other => other.to_string(),
    }
}

/// Checks the data's schema against the contract. Columns the data has but
/// the contract does not declare are not published; declared columns must be
/// present with a compatible type.
pub(crate) fn check_data_schema(declared: &Schema, data: &Schema) -> Result<(), String> {
    let problems: Vec<String> = declared
        .fields()
        .iter()
        .filter_map(|field| column_problem(field, data))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the data does not match the contract: {}",
            problems.join("; ")
        ))
    }
}

/// What is wrong with one declared column in the data, if anything: it is
/// missing (with the closest name the data has), or its type cannot be
/// read as the declared one.
pub(crate) fn column_problem(field: &Field, data: &Schema) -> Option<String> {
    match data.field_with_name(field.name()) {
        Err(_) => {
            let hint = meshql_manifest::closest_names(
                field.name(),
                data.fields().iter().map(|f| f.name().as_str()),
            );
            let hint = match hint.first() {
                Some(h) => format!(" (the data has `{h}`)"),
                None => String::new(),
            };
            Some(format!(
                "column `{}` is declared in the contract but missing from the data{hint}",
                field.name()
            ))
        }
        Ok(actual) if !compatible(field.data_type(), actual.data_type()) => Some(format!(
            "column `{}`: the contract declares {}, the data has {}",
            field.name(),
            sql_name(field.data_type()),
            sql_name(actual.data_type())
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_views_and_narrower_integers_are_compatible() {
        let declared = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("c", DataType::Decimal128(12, 2), true),
        ]);
        let data = Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Int32, true),
            Field::new("c", DataType::Decimal128(10, 2), true),
            Field::new("extra", DataType::Int32, true),
        ]);
        assert_eq!(check_data_schema(&declared, &data), Ok(()));
    }

    #[test]
    fn mismatches_name_each_column() {
        let declared = Schema::new(vec![
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("customer_id", DataType::Int64, true),
        ]);
        let data = Schema::new(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("customerid", DataType::Int64, true),
        ]);
        let err = check_data_schema(&declared, &data).expect_err("mismatch");
        assert!(
            err.contains(
                "column `amount`: the contract declares decimal(12,2), the data has double"
            ),
            "{err}"
        );
        assert!(err.contains("column `customer_id` is declared in the contract but missing from the data (the data has `customerid`)"), "{err}");
    }
}
