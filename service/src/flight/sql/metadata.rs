//! Answers to Flight SQL's metadata commands, for one reader: the catalog
//! lists only the datasets they may read, each table's schema is the one
//! their policies produce (masked types, hidden columns gone), and the
//! server's own description (`GetSqlInfo`, `GetXdbcTypeInfo`) is fixed.
//! The result schemas are arrow-rs's builders' (the reference schemas,
//! nullability included), or the spec's for the key commands, which Veil
//! answers empty: virtual datasets declare no keys.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Command as SqlCommandKind, CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes,
    CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
    SqlSupportedSubqueries, SqlSupportedUnions, SqlSupportsConvert, XdbcDataType,
    XdbcDatetimeSubcode,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::engine::{Engine, RequestScope};
use crate::error::{Result, VeilError};

/// The one catalog Veil serves: datasets are `catalog.schema.name`.
pub use crate::engine::principal_catalog::CATALOG;
/// Every dataset is listed as this table type.
pub const TABLE_TYPE: &str = "TABLE";

/// The fixed descriptions, built once per server.
pub struct ServerDescription {
    sql_info: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl std::fmt::Debug for ServerDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerDescription")
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> VeilError {
    VeilError::internal(what, e)
}

impl ServerDescription {
    /// `functions`: every scalar function the engine plans, with the
    /// section its documentation files it under.
    pub fn new(functions: &[(String, Option<String>)]) -> Result<Self> {
        Ok(Self {
            sql_info: sql_info(functions)?,
            xdbc: xdbc_types()?,
        })
    }

    /// The schema of a metadata command's result.
    pub fn schema(&self, command: &SqlCommandKind) -> Result<SchemaRef> {
        Ok(match command {
            SqlCommandKind::CommandGetCatalogs(c) => (*c).into_builder().schema(),
            SqlCommandKind::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
            SqlCommandKind::CommandGetTables(c) => c.clone().into_builder().schema(),
            SqlCommandKind::CommandGetTableTypes(c) => (*c).into_builder().schema(),
            SqlCommandKind::CommandGetSqlInfo(_) => self.sql_info.schema(),
            SqlCommandKind::CommandGetXdbcTypeInfo(_) => self.xdbc.schema(),
            SqlCommandKind::CommandGetPrimaryKeys(_) => primary_keys_schema(),
            SqlCommandKind::CommandGetExportedKeys(_)
            | SqlCommandKind::CommandGetImportedKeys(_)
            | SqlCommandKind::CommandGetCrossReference(_) => foreign_keys_schema(),
            other => {
                return Err(VeilError::Internal(format!(
                    "{} is not a metadata command",
                    other.type_url()
                )));
            }
        })
    }

    /// A metadata command's result for the scope's reader.
    pub fn answer(
        &self,
        engine: &Engine,
        scope: &Arc<RequestScope>,
        command: &SqlCommandKind,
    ) -> Result<RecordBatch> {
        check_patterns(command)?;
        let built = match command {
            SqlCommandKind::CommandGetCatalogs(c) => catalogs(c),
            SqlCommandKind::CommandGetDbSchemas(c) => db_schemas(engine, scope, c),
            SqlCommandKind::CommandGetTables(c) => tables(engine, scope, c),
            SqlCommandKind::CommandGetTableTypes(c) => table_types(c),
            SqlCommandKind::CommandGetSqlInfo(c) => c
                .clone()
                .into_builder(&self.sql_info)
                .build()
                .map_err(|e| failed("GetSqlInfo", e)),
            SqlCommandKind::CommandGetXdbcTypeInfo(c) => (*c)
                .into_builder(&self.xdbc)
                .build()
                .map_err(|e| failed("GetXdbcTypeInfo", e)),
            _ => Ok(RecordBatch::new_empty(self.schema(command)?)),
        }?;
        Ok(built)
    }
}

/// Longest name pattern (`LIKE` syntax) accepted.
const MAX_PATTERN_CHARS: usize = 256;

/// Refuse name patterns too long to match in reasonable time.
pub fn check_patterns(command: &SqlCommandKind) -> Result<()> {
    let patterns: Vec<&str> = match command {
        SqlCommandKind::CommandGetDbSchemas(c) => c
            .db_schema_filter_pattern
            .iter()
            .map(String::as_str)
            .collect(),
        SqlCommandKind::CommandGetTables(c) => c
            .db_schema_filter_pattern
            .iter()
            .chain(&c.table_name_filter_pattern)
            .map(String::as_str)
            .collect(),
        _ => Vec::new(),
    };
    if patterns
        .iter()
        .any(|p| p.chars().count() > MAX_PATTERN_CHARS)
    {
        return Err(VeilError::InvalidArgument(format!(
            "a name pattern may have at most {MAX_PATTERN_CHARS} characters"
        )));
    }
    Ok(())
}

/// A builder's failure on a name pattern: the pattern is the caller's.
fn bad_pattern(e: impl std::fmt::Display) -> VeilError {
    VeilError::InvalidArgument(VeilError::detailed(
        "the name pattern can't be matched; use a shorter pattern with fewer wildcards",
        e,
    ))
}

fn catalogs(c: &CommandGetCatalogs) -> Result<RecordBatch> {
    let mut b = (*c).into_builder();
    b.append(CATALOG);
    b.build().map_err(|e| failed("GetCatalogs", e))
}

/// The readable datasets' `(schema, name)`, sorted.
fn readable_names(engine: &Engine, scope: &Arc<RequestScope>) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = engine
        .list(scope, false)
        .into_iter()
        .map(|(d, _)| split(&d.name))
        .collect();
    names.sort();
    names
}

fn split(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => (String::new(), name.to_string()),
    }
}

/// Which of `names` a `LIKE` pattern matches, ignoring case as Veil's
/// names do everywhere (`None`: every name).
fn matching(pattern: Option<&str>, names: &[&str]) -> Result<Vec<bool>> {
    use datafusion::arrow::array::{Array, Scalar, StringArray};
    let Some(pattern) = pattern else {
        return Ok(vec![true; names.len()]);
    };
    let found = datafusion::arrow::compute::kernels::comparison::ilike(
        &StringArray::from(names.to_vec()),
        &Scalar::new(StringArray::from(vec![pattern])),
    )
    .map_err(bad_pattern)?;
    Ok((0..names.len())
        .map(|i| found.is_valid(i) && found.value(i))
        .collect())
}

fn db_schemas(
    engine: &Engine,
    scope: &Arc<RequestScope>,
    c: &CommandGetDbSchemas,
) -> Result<RecordBatch> {
    // The pattern is matched here, without case; the builder filters
    // nothing more.
    let mut b = CommandGetDbSchemas {
        db_schema_filter_pattern: None,
        ..c.clone()
    }
    .into_builder();
    let schemas: Vec<String> = readable_names(engine, scope)
        .into_iter()
        .map(|(s, _)| s)
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    let names: Vec<&str> = schemas.iter().map(String::as_str).collect();
    let keep = matching(c.db_schema_filter_pattern.as_deref(), &names)?;
    for (s, keep) in schemas.iter().zip(keep) {
        if keep {
            b.append(CATALOG, s);
        }
    }
    b.build().map_err(bad_pattern)
}

fn tables(engine: &Engine, scope: &Arc<RequestScope>, c: &CommandGetTables) -> Result<RecordBatch> {
    // Name patterns are matched here, without case; the builder filters
    // by catalog and table type.
    let mut b = CommandGetTables {
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        ..c.clone()
    }
    .into_builder();
    let mut rows: Vec<((String, String), Schema)> = Vec::new();
    for (d, policy) in engine.list(scope, false) {
        // A dataset whose policies can't be evaluated is listed without
        // columns (as ListFlights does); reading it fails closed.
        let schema =
            match policy.and_then(|pol| crate::policy::secure_view::output_schema(&d, &pol)) {
                Ok(s) => s,
                Err(_) => Schema::empty(),
            };
        rows.push((split(&d.name), schema));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let schemas: Vec<&str> = rows.iter().map(|((s, _), _)| s.as_str()).collect();
    let tables: Vec<&str> = rows.iter().map(|((_, t), _)| t.as_str()).collect();
    let in_schema = matching(c.db_schema_filter_pattern.as_deref(), &schemas)?;
    let named = matching(c.table_name_filter_pattern.as_deref(), &tables)?;
    let mut keep = in_schema.into_iter().zip(named).map(|(a, b)| a && b);
    rows.retain(|_| keep.next().unwrap_or(false));
    for ((s, t), schema) in rows {
        let described = described_columns(&schema, &s, &t);
        b.append(CATALOG, s, t, TABLE_TYPE, &described)
            .map_err(|e| failed("GetTables", e))?;
    }
    b.build().map_err(bad_pattern)
}

/// A table's schema as `GetTables` lists it: each column with Flight SQL's
/// column metadata (where it is, its SQL type name, read-only), which JDBC's
/// `getColumns` and ADBC's `get_objects` show as the type name.
fn described_columns(schema: &Schema, db_schema: &str, table: &str) -> Schema {
    const KEY: &str = "ARROW:FLIGHT:SQL:";
    let fields = schema.fields().iter().map(|f| {
        let mut m = f.metadata().clone();
        let mut put = |k: &str, v: String| {
            m.insert(format!("{KEY}{k}"), v);
        };
        put("CATALOG_NAME", CATALOG.into());
        put("DB_SCHEMA_NAME", db_schema.into());
        put("TABLE_NAME", table.into());
        put("TYPE_NAME", sql_type_name(f.data_type()).into());
        if let DataType::Decimal128(p, s) | DataType::Decimal256(p, s) = f.data_type() {
            put("PRECISION", p.to_string());
            put("SCALE", s.to_string());
        }
        put("IS_READ_ONLY", "1".into());
        put("IS_SEARCHABLE", "1".into());
        put("IS_AUTO_INCREMENT", "0".into());
        Arc::new(f.as_ref().clone().with_metadata(m))
    });
    Schema::new_with_metadata(fields.collect::<Vec<_>>(), schema.metadata().clone())
}

/// The SQL name of an Arrow type, as queries write it (and as
/// `GetXdbcTypeInfo` lists the common ones).
fn sql_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Null => "NULL",
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 => "TINYINT",
        DataType::Int16 => "SMALLINT",
        DataType::Int32 => "INTEGER",
        DataType::Int64 => "BIGINT",
        DataType::UInt8 => "TINYINT UNSIGNED",
        DataType::UInt16 => "SMALLINT UNSIGNED",
        DataType::UInt32 => "INTEGER UNSIGNED",
        DataType::UInt64 => "BIGINT UNSIGNED",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "DECIMAL",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BINARY",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(_, None) => "TIMESTAMP",
        DataType::Timestamp(_, Some(_)) => "TIMESTAMP WITH TIME ZONE",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "ARRAY",
        DataType::Struct(_) | DataType::Union(..) => "STRUCT",
        DataType::Map(..) => "MAP",
        DataType::Dictionary(_, v) => sql_type_name(v),
        DataType::RunEndEncoded(_, v) => sql_type_name(v.data_type()),
    }
}

fn table_types(c: &CommandGetTableTypes) -> Result<RecordBatch> {
    let mut b = (*c).into_builder();
    b.append(TABLE_TYPE);
    b.build().map_err(|e| failed("GetTableTypes", e))
}

fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Function names by the JDBC category their documentation section maps to.
fn functions_in(functions: &[(String, Option<String>)], sections: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = functions
        .iter()
        .filter(|(_, s)| s.as_deref().is_some_and(|s| sections.contains(&s)))
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn sql_info(functions: &[(String, Option<String>)]) -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Veil");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    // 0: no transactions.
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(super::prepared::HANDLE_TTL_MS).unwrap_or(i32::MAX),
    );
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    // Unquoted names are folded to lower case; quoted ones kept as written.
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        // Kept exactly as written, which the enum has no word for.
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    // ASC puts nulls last and DESC first: nulls sort as the highest value.
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    let keywords: Vec<String> = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(
        SqlInfo::SqlNumericFunctions,
        functions_in(functions, &["Math Functions"]),
    );
    b.append(
        SqlInfo::SqlStringFunctions,
        functions_in(
            functions,
            &[
                "String Functions",
                "Regular Expression Functions",
                "Binary String Functions",
            ],
        ),
    );
    b.append(
        SqlInfo::SqlSystemFunctions,
        functions_in(
            functions,
            &[
                "Conditional Functions",
                "Other Functions",
                "Hashing Functions",
            ],
        ),
    );
    b.append(
        SqlInfo::SqlDatetimeFunctions,
        functions_in(functions, &["Time and Date Functions"]),
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(
        SqlInfo::SqlSupportsConvert,
        std::collections::BTreeMap::from([(
            SqlSupportsConvert::SqlConvertVarchar as i32,
            vec![
                SqlSupportsConvert::SqlConvertBigint as i32,
                SqlSupportsConvert::SqlConvertDate as i32,
                SqlSupportsConvert::SqlConvertDecimal as i32,
                SqlSupportsConvert::SqlConvertFloat as i32,
                SqlSupportsConvert::SqlConvertInteger as i32,
                SqlSupportsConvert::SqlConvertTimestamp as i32,
            ],
        )]),
    );
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    // SQL_GROUP_BY_UNRELATED
    b.append(SqlInfo::SqlSupportedGroupBy, 0b10i32);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    // Minimum and core grammar, ANSI-92 entry level.
    b.append(SqlInfo::SqlSupportedGrammar, 0b011i32);
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b001i32);
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    // SQL_FULL_OUTER_JOINS
    b.append(SqlInfo::SqlOuterJoinsSupportLevel, 2i32);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        (1 << SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32)
            | (1 << SqlSupportedSubqueries::SqlSubqueriesInExists as i32)
            | (1 << SqlSupportedSubqueries::SqlSubqueriesInIns as i32)
            | (1 << SqlSupportedSubqueries::SqlSubqueriesInQuantifieds as i32),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        (1 << SqlSupportedUnions::SqlUnion as i32) | (1 << SqlSupportedUnions::SqlUnionAll as i32),
    );
    // 0: no fixed limit. Veil's own bounds are on bytes and depth.
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0i64);
    }
    b.append(
        SqlInfo::SqlMaxStatementLength,
        crate::sql::limits::MAX_SQL_BYTES as i64,
    );
    b.append(
        SqlInfo::SqlMaxTablesInSelect,
        crate::sql::limits::MAX_TABLES as i64,
    );
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i32);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    // SQL_RESULT_SET_TYPE_FORWARD_ONLY
    b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32);
    for concurrency in [
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
    ] {
        // SQL_RESULT_SET_CONCURRENCY_READ_ONLY
        b.append(concurrency, 0b10i32);
    }
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build().map_err(|e| failed("building the SQL info", e))
}

/// The types Veil serves, as ODBC/JDBC know them.
fn xdbc_types() -> Result<XdbcTypeInfoData> {
    let ty = |name: &str, data_type: XdbcDataType, size: Option<i32>, quoted: bool| XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size: size,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: None,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: quoted,
        searchable: Searchable::Full,
        unsigned_attribute: (!quoted).then_some(false),
        fixed_prec_scale: false,
        auto_increment: Some(false),
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: (!quoted).then_some(10),
        interval_precision: None,
    };
    let mut b = XdbcTypeInfoDataBuilder::new();
    b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false));
    b.append(ty("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false));
    b.append(ty("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false));
    b.append(ty("INTEGER", XdbcDataType::XdbcInteger, Some(10), false));
    b.append(ty("BIGINT", XdbcDataType::XdbcBigint, Some(19), false));
    b.append(ty("REAL", XdbcDataType::XdbcReal, Some(7), false));
    b.append(ty("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false));
    let mut decimal = ty("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false);
    decimal.create_params = Some(vec!["precision".into(), "scale".into()]);
    decimal.fixed_prec_scale = true;
    decimal.minimum_scale = Some(0);
    decimal.maximum_scale = Some(38);
    b.append(decimal);
    b.append(ty("VARCHAR", XdbcDataType::XdbcVarchar, None, true));
    let mut binary = ty("BINARY", XdbcDataType::XdbcBinary, None, true);
    binary.literal_prefix = Some("X'".into());
    binary.case_sensitive = false;
    b.append(binary);
    let mut date = ty("DATE", XdbcDataType::XdbcDate, Some(10), true);
    date.literal_prefix = Some("DATE '".into());
    date.sql_data_type = XdbcDataType::XdbcDatetime;
    // 1, SQL_CODE_DATE (prost names the alias after YEAR).
    date.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeYear);
    b.append(date);
    let mut timestamp = ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(29), true);
    timestamp.literal_prefix = Some("TIMESTAMP '".into());
    timestamp.sql_data_type = XdbcDataType::XdbcDatetime;
    timestamp.datetime_subcode = Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp);
    b.append(timestamp);
    b.build().map_err(|e| failed("building the type info", e))
}
