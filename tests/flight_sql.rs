//! Flight SQL on Veil's port, replaying the RPC sequence of the Flight SQL
//! JDBC driver (its jar can't be fetched here): a handshake with the bearer
//! token, the full `GetSqlInfo`, a prepared statement created with a `?`
//! placeholder, its parameter bound through `DoPut`, executed and closed,
//! and `getColumns` as `GetTables` with schemas; plus the calls DBeaver
//! makes around them. Every answer is checked against the governed read.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo,
    CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
};
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo};
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;
use veil_tests::{TestServer, row_count, strings};

async fn client(server: &TestServer, token: Option<&str>) -> FlightClient {
    let channel = Channel::from_shared(server.address.replace("grpc://", "http://"))
        .expect("address")
        .connect()
        .await
        .expect("connects");
    let mut c = FlightClient::new(channel);
    if let Some(t) = token {
        c.add_header("authorization", &format!("Bearer {t}"))
            .expect("header");
    }
    // JDBC forwards URL properties it does not know as headers.
    c.add_header("catalog", "veil").expect("header");
    c
}

fn cmd<M: ProstMessageExt>(m: M) -> FlightDescriptor {
    FlightDescriptor::new_cmd(m.as_any().encode_to_vec())
}

async fn read(c: &mut FlightClient, info: FlightInfo) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.expect("a ticket");
        let batches: Vec<RecordBatch> = c
            .do_get(ticket)
            .await
            .expect("DoGet")
            .try_collect()
            .await
            .expect("stream");
        out.extend(batches);
    }
    out
}

/// GetFlightInfo then DoGet every endpoint, checking each stream's schema
/// equals the FlightInfo's exactly.
async fn fetch(c: &mut FlightClient, desc: FlightDescriptor) -> (Schema, Vec<RecordBatch>) {
    let info = c.get_flight_info(desc).await.expect("GetFlightInfo");
    let schema = info.clone().try_decode_schema().expect("schema");
    let batches = read(c, info).await;
    for b in &batches {
        assert_eq!(
            b.schema().as_ref(),
            &schema,
            "stream schema = FlightInfo schema"
        );
    }
    (schema, batches)
}

async fn action(
    c: &mut FlightClient,
    kind: &str,
    body: Vec<u8>,
) -> Result<Vec<bytes::Bytes>, FlightError> {
    c.do_action(Action::new(kind, body))
        .await?
        .try_collect()
        .await
}

fn code(e: &FlightError) -> tonic::Code {
    match e {
        FlightError::Tonic(s) => s.code(),
        other => panic!("not a status: {other}"),
    }
}

async fn prepare(c: &mut FlightClient, query: &str) -> ActionCreatePreparedStatementResult {
    let body = ActionCreatePreparedStatementRequest {
        query: query.into(),
        transaction_id: None,
    }
    .as_any()
    .encode_to_vec();
    let results = action(c, "CreatePreparedStatement", body)
        .await
        .expect("CreatePreparedStatement");
    assert_eq!(results.len(), 1);
    Any::decode(results[0].clone())
        .expect("Any")
        .unpack::<ActionCreatePreparedStatementResult>()
        .expect("decodes")
        .expect("a CreatePreparedStatement result")
}

fn ipc_schema(bytes: &[u8]) -> Schema {
    Schema::try_from(arrow_flight::IpcMessage(bytes.to_vec().into())).expect("an IPC schema")
}

/// Bind one row through DoPut; returns the handle to execute.
async fn bind(
    c: &mut FlightClient,
    handle: bytes::Bytes,
    row: RecordBatch,
) -> Result<bytes::Bytes, FlightError> {
    let desc = cmd(CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    });
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(desc))
        .build(futures::stream::iter([Ok(row)]));
    let results: Vec<_> = c.do_put(data).await?.try_collect().await?;
    assert_eq!(results.len(), 1);
    let bound = DoPutPreparedStatementResult::decode(results[0].app_metadata.clone())
        .expect("a DoPutPreparedStatementResult");
    Ok(bound.prepared_statement_handle.expect("a new handle"))
}

fn one_int(value: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("p1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![value]))],
    )
    .expect("batch")
}

#[tokio::test]
async fn the_jdbc_drivers_sequence_is_served_and_governed() {
    let server = TestServer::demo().await;
    let token = server.token("alice");
    let mut c = client(&server, Some(&token)).await;

    // 1. Handshake with the bearer token: answered, and the token kept.
    c.handshake(bytes::Bytes::new()).await.expect("handshake");

    // 2. All SQL info at once.
    let (_, info) = fetch(&mut c, cmd(CommandGetSqlInfo { info: vec![] })).await;
    let names: Vec<u32> = info
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<arrow::datatypes::UInt32Type>()
                .values()
                .to_vec()
        })
        .collect();
    for wanted in [
        SqlInfo::FlightSqlServerName,
        SqlInfo::FlightSqlServerVersion,
        SqlInfo::FlightSqlServerReadOnly,
        SqlInfo::SqlIdentifierQuoteChar,
        SqlInfo::SqlKeywords,
        SqlInfo::SqlNumericFunctions,
        SqlInfo::SqlStringFunctions,
        SqlInfo::SqlDatetimeFunctions,
    ] {
        assert!(names.contains(&(wanted as u32)), "{wanted:?} answered");
    }
    let (_, one) = fetch(
        &mut c,
        cmd(CommandGetSqlInfo {
            info: vec![SqlInfo::FlightSqlServerName as u32],
        }),
    )
    .await;
    assert_eq!(row_count(&one), 1);
    let value = one[0].column(1).as_union().value(0);
    assert_eq!(value.as_string::<i32>().value(0), "Veil");

    // 3. A prepared statement with a `?` placeholder: its result and
    //    parameter schemas are filled (JDBC takes an empty one for an
    //    UPDATE).
    let prepared = prepare(
        &mut c,
        "SELECT participant_id, ssn, age FROM clinical.trials WHERE age > ? ORDER BY participant_id",
    )
    .await;
    let dataset = ipc_schema(&prepared.dataset_schema);
    assert_eq!(
        dataset
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        ["participant_id", "ssn", "age"]
    );
    let params = ipc_schema(&prepared.parameter_schema);
    assert_eq!(params.fields().len(), 1);

    // 4. Bind through DoPut, execute, read.
    let handle = bind(
        &mut c,
        prepared.prepared_statement_handle.clone(),
        one_int(80),
    )
    .await
    .expect("bind");
    let (schema, rows) = fetch(
        &mut c,
        cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: handle.clone(),
        }),
    )
    .await;
    assert_eq!(&schema, &dataset, "the prepared schema is the served one");
    let own = server
        .connect("alice")
        .await
        .sql("SELECT participant_id, ssn, age FROM clinical.trials WHERE age > 80 ORDER BY participant_id")
        .await
        .expect("own client");
    assert!(row_count(&rows) > 0);
    assert_eq!(
        strings(&rows, "participant_id"),
        strings(&own, "participant_id")
    );
    // Masked exactly as for Veil's own client: alice sees hashed SSNs.
    assert_eq!(strings(&rows, "ssn"), strings(&own, "ssn"));
    assert!(
        strings(&rows, "ssn")
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.len() == 32))
    );

    // Executing the unbound handle says how many values it takes.
    let unbound = c
        .get_flight_info(cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: prepared.prepared_statement_handle.clone(),
        }))
        .await
        .expect_err("no value for ?");
    assert_eq!(code(&unbound), tonic::Code::InvalidArgument);
    assert!(
        unbound.to_string().contains("takes 1 parameters"),
        "{unbound}"
    );

    // 5. Close.
    let close = ActionClosePreparedStatementRequest {
        prepared_statement_handle: handle.clone(),
    };
    action(
        &mut c,
        "ClosePreparedStatement",
        close.as_any().encode_to_vec(),
    )
    .await
    .expect("close");

    // 6. getColumns: GetTables with schemas, filtered by patterns. The
    //    schema is the policy-applied one.
    let (_, tables) = fetch(
        &mut c,
        cmd(CommandGetTables {
            catalog: Some("veil".into()),
            db_schema_filter_pattern: Some("clin%".into()),
            table_name_filter_pattern: Some("tri_ls".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        }),
    )
    .await;
    assert_eq!(row_count(&tables), 1);
    assert_eq!(strings(&tables, "table_name"), [Some("trials".to_string())]);
    let listed = ipc_schema(
        tables[0]
            .column_by_name("table_schema")
            .expect("schema")
            .as_binary::<i32>()
            .value(0),
    );
    let served = server
        .connect("alice")
        .await
        .scan(
            "clinical.trials",
            veil_client::Scan {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("scan");
    // The same columns, each described for getColumns (type name, where
    // it is, read-only).
    let bare: Vec<_> = listed
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_metadata(Default::default()))
        .collect();
    let served_fields: Vec<_> = served[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    assert_eq!(bare, served_fields);
    let meta = |column: &str, key: &str| -> Option<String> {
        listed
            .field_with_name(column)
            .unwrap()
            .metadata()
            .get(&format!("ARROW:FLIGHT:SQL:{key}"))
            .cloned()
    };
    assert_eq!(
        meta("participant_id", "TYPE_NAME").as_deref(),
        Some("BIGINT")
    );
    assert_eq!(meta("ssn", "TYPE_NAME").as_deref(), Some("VARCHAR"));
    assert_eq!(meta("ssn", "TABLE_NAME").as_deref(), Some("trials"));
    assert_eq!(meta("ssn", "DB_SCHEMA_NAME").as_deref(), Some("clinical"));
    assert_eq!(meta("ssn", "IS_READ_ONLY").as_deref(), Some("1"));

    // 7. What DBeaver asks around them.
    let (_, catalogs) = fetch(&mut c, cmd(CommandGetCatalogs {})).await;
    assert_eq!(
        strings(&catalogs, "catalog_name"),
        [Some("veil".to_string())]
    );
    let (_, schemas) = fetch(
        &mut c,
        cmd(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        }),
    )
    .await;
    assert!(strings(&schemas, "db_schema_name").contains(&Some("clinical".to_string())));
    let (_, types) = fetch(&mut c, cmd(CommandGetTableTypes {})).await;
    assert_eq!(strings(&types, "table_type"), [Some("TABLE".to_string())]);
    let (_, xdbc) = fetch(&mut c, cmd(CommandGetXdbcTypeInfo { data_type: None })).await;
    assert!(strings(&xdbc, "type_name").contains(&Some("VARCHAR".to_string())));
    let (_, keys) = fetch(
        &mut c,
        cmd(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("clinical".into()),
            table: "trials".into(),
        }),
    )
    .await;
    assert_eq!(row_count(&keys), 0);
    let schema = c
        .get_schema(cmd(CommandStatementQuery {
            query: "SELECT age FROM clinical.trials".into(),
            transaction_id: None,
        }))
        .await
        .expect("GetSchema");
    assert_eq!(schema.field(0).name(), "age");
    let polled = c
        .poll_flight_info(cmd(CommandStatementQuery {
            query: "SELECT count(*) AS n FROM clinical.trials".into(),
            transaction_id: None,
        }))
        .await
        .expect("PollFlightInfo");
    let counted = read(&mut c, polled.info.expect("complete at once")).await;
    assert_eq!(row_count(&counted), 1);

    // 8. Session end and cancel are accepted.
    action(&mut c, "CloseSession", Vec::new())
        .await
        .expect("CloseSession");

    // Veil's own commands still work on the same connection.
    let listed: Vec<FlightInfo> = c
        .list_flights(bytes::Bytes::new())
        .await
        .expect("ListFlights")
        .try_collect()
        .await
        .expect("list");
    assert!(!listed.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn hidden_datasets_are_absent_and_handles_stay_with_their_user() {
    let server = TestServer::demo().await;
    let mut carol = client(&server, Some(&server.token("carol"))).await;
    let (_, tables) = fetch(
        &mut carol,
        cmd(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        }),
    )
    .await;
    assert!(!strings(&tables, "table_name").contains(&Some("trials".to_string())));
    // Name patterns ignore case, as names do everywhere: a reader finds
    // `clinical.trials` by `CLINICAL`/`TRI%`; carol finds nothing, as for
    // a name that doesn't exist.
    let by_pattern = |schema: &str, table: &str| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: Some(schema.into()),
        table_name_filter_pattern: Some(table.into()),
        table_types: vec![],
        include_schema: false,
    };
    let mut alice = client(&server, Some(&server.token("alice"))).await;
    for (schema, table) in [("CLINICAL", "TRI%"), ("clin%", "Trials"), ("%", "t_ials")] {
        let (_, found) = fetch(&mut alice, cmd(by_pattern(schema, table))).await;
        assert_eq!(
            strings(&found, "table_name"),
            vec![Some("trials".to_string())],
            "{schema}.{table}"
        );
        let (_, found) = fetch(&mut carol, cmd(by_pattern(schema, table))).await;
        assert_eq!(row_count(&found), 0, "{schema}.{table}");
    }
    let (_, found) = fetch(&mut alice, cmd(by_pattern("CLINICAL", "NOTHING%"))).await;
    assert_eq!(row_count(&found), 0);
    let (_, schemas) = fetch(
        &mut alice,
        cmd(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("CLIN_CAL".into()),
        }),
    )
    .await;
    assert_eq!(
        strings(&schemas, "db_schema_name"),
        vec![Some("clinical".to_string())]
    );
    // Preparing over a hidden dataset fails as over a missing one.
    let mut messages = Vec::new();
    for name in ["trials", "nothing"] {
        let body = ActionCreatePreparedStatementRequest {
            query: format!("SELECT * FROM clinical.{name}"),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec();
        let e = action(&mut carol, "CreatePreparedStatement", body)
            .await
            .expect_err("not found");
        assert_eq!(code(&e), tonic::Code::NotFound);
        messages.push(e.to_string().replace(name, "X"));
    }
    assert_eq!(messages[0], messages[1]);

    // bob's handle is bob's: carol can't execute it, and a forged one is
    // refused.
    let mut bob = client(&server, Some(&server.token("bob"))).await;
    let prepared = prepare(&mut bob, "SELECT ssn FROM clinical.trials LIMIT 1").await;
    let stolen = carol
        .get_flight_info(cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: prepared.prepared_statement_handle.clone(),
        }))
        .await
        .expect_err("another user's handle");
    assert_eq!(code(&stolen), tonic::Code::PermissionDenied);
    let mut forged = prepared.prepared_statement_handle.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let e = bob
        .get_flight_info(cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: forged.into(),
        }))
        .await
        .expect_err("forged");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // A handle is not a ticket, nor a ticket a handle.
    let e = bob
        .do_get(arrow_flight::Ticket::new(
            prepared.prepared_statement_handle.clone(),
        ))
        .await
        .expect_err("a handle is no ticket");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn writes_transactions_and_passwords_are_refused_with_reasons() {
    let server = TestServer::demo().await;
    let mut bob = client(&server, Some(&server.token("bob"))).await;
    let update = bob
        .get_flight_info(cmd(CommandStatementUpdate {
            query: "DELETE FROM clinical.trials".into(),
            transaction_id: None,
        }))
        .await
        .expect_err("read-only");
    assert_eq!(code(&update), tonic::Code::Unimplemented);
    assert!(update.to_string().contains("read-only"), "{update}");
    let ingest = bob
        .get_flight_info(cmd(CommandStatementIngest::default()))
        .await
        .expect_err("read-only");
    assert_eq!(code(&ingest), tonic::Code::Unimplemented);
    let e = action(&mut bob, "BeginTransaction", Vec::new())
        .await
        .expect_err("no transactions");
    assert_eq!(code(&e), tonic::Code::Unimplemented);
    // A parameter of the wrong kind, or too many rows, is refused plainly.
    let prepared = prepare(
        &mut bob,
        "SELECT count(*) FROM clinical.trials WHERE age > $1",
    )
    .await;
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("p1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    let e = bind(&mut bob, prepared.prepared_statement_handle.clone(), two)
        .await
        .expect_err("two rows");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // A user name and password: refused, with the way to use a token.
    let mut basic = client(&server, None).await;
    basic
        .add_header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .unwrap();
    let e = basic
        .handshake(bytes::Bytes::new())
        .await
        .expect_err("basic");
    assert_eq!(code(&e), tonic::Code::Unauthenticated);
    assert!(e.to_string().contains("token=<JWT>"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn a_placeholder_is_a_value_never_sql() {
    let server = TestServer::demo().await;
    let mut bob = client(&server, Some(&server.token("bob"))).await;
    let prepared = prepare(
        &mut bob,
        "SELECT count(*) AS n FROM clinical.trials WHERE state = ?",
    )
    .await;
    let row = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("p1", DataType::Utf8, true)])),
        vec![Arc::new(arrow::array::StringArray::from(vec![
            "CA' OR '1'='1",
        ]))],
    )
    .unwrap();
    let handle = bind(&mut bob, prepared.prepared_statement_handle, row)
        .await
        .expect("bind");
    let (_, rows) = fetch(
        &mut bob,
        cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: handle,
        }),
    )
    .await;
    let n = rows[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 0);
    assert!(rows[0].column(0).is_valid(0));
    server.stop().await;
}

#[tokio::test]
async fn row_wise_queries_split_into_endpoints_and_the_rest_do_not() {
    let server = TestServer::demo().await;
    let mut bob = client(&server, Some(&server.token("bob"))).await;
    let statement = |q: &str| {
        cmd(CommandStatementQuery {
            query: q.into(),
            transaction_id: None,
        })
    };
    let split = "SELECT participant_id, upper(state) AS s FROM clinical.trials WHERE age > 30";
    let info = bob.get_flight_info(statement(split)).await.expect("info");
    assert!(info.endpoint.len() > 1, "{} endpoints", info.endpoint.len());
    assert!(!info.ordered);
    let parts = read(&mut bob, info).await;
    let (_, whole) = fetch(
        &mut bob,
        statement(&format!("{split} ORDER BY participant_id")),
    )
    .await;
    assert!(same_ids(&parts, &whole), "the parts hold the query's rows");
    for one in [
        "SELECT participant_id FROM clinical.trials ORDER BY participant_id",
        "SELECT participant_id FROM clinical.trials LIMIT 5",
        "SELECT DISTINCT state FROM clinical.trials",
        "SELECT state, count(*) FROM clinical.trials GROUP BY state",
        "SELECT t.participant_id FROM clinical.trials t JOIN clinical.sites s ON t.state = s.state",
        "SELECT participant_id FROM clinical.trials WHERE age > (SELECT avg(age) FROM clinical.trials)",
    ] {
        let info = bob.get_flight_info(statement(one)).await.expect("info");
        assert_eq!(info.endpoint.len(), 1, "{one}");
        assert!(info.ordered, "{one}");
    }
    // alice's rows are filtered by a row policy: her parts hold exactly
    // her rows.
    let mut alice = client(&server, Some(&server.token("alice"))).await;
    let info = alice
        .get_flight_info(statement("SELECT participant_id, ssn FROM clinical.trials"))
        .await
        .expect("info");
    let parts = read(&mut alice, info).await;
    let own = server
        .connect("alice")
        .await
        .sql("SELECT participant_id, ssn FROM clinical.trials ORDER BY participant_id")
        .await
        .expect("own");
    assert!(same_ids(&parts, &own), "alice's parts hold her rows");
    server.stop().await;
}

/// Do both results hold the same participants (in any order)?
fn same_ids(a: &[RecordBatch], b: &[RecordBatch]) -> bool {
    let sorted = |x: &[RecordBatch]| {
        let mut ids = strings(x, "participant_id");
        ids.sort();
        ids
    };
    let (a, b) = (sorted(a), sorted(b));
    !a.is_empty() && a == b
}

/// Bind raw Flight messages (as a client may craft them).
async fn bind_raw(
    c: &mut FlightClient,
    handle: bytes::Bytes,
    mut messages: Vec<arrow_flight::FlightData>,
) -> Result<bytes::Bytes, FlightError> {
    messages[0].flight_descriptor = Some(cmd(CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    }));
    let results: Vec<_> = c
        .do_put(futures::stream::iter(messages.into_iter().map(Ok)))
        .await?
        .try_collect()
        .await?;
    let bound = DoPutPreparedStatementResult::decode(results[0].app_metadata.clone())
        .expect("a DoPutPreparedStatementResult");
    Ok(bound.prepared_statement_handle.expect("a new handle"))
}

fn encoded(
    row: RecordBatch,
    options: arrow::ipc::writer::IpcWriteOptions,
) -> Vec<arrow_flight::FlightData> {
    let generator = arrow::ipc::writer::IpcDataGenerator::default();
    let mut tracker = arrow::ipc::writer::DictionaryTracker::new(false);
    let schema = arrow_flight::SchemaAsIpc::new(row.schema_ref(), &options).into();
    let (_, batch) = generator
        .encode(&row, &mut tracker, &options, &mut Default::default())
        .expect("encodes");
    vec![schema, batch.into()]
}

#[tokio::test]
async fn parameters_that_would_exhaust_or_crash_the_server_are_refused() {
    let server = TestServer::demo().await;
    let mut carol = client(&server, Some(&server.token("carol"))).await;
    let prepared = prepare(&mut carol, "SELECT ? AS v").await;
    let text = |s: String| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("p", DataType::Utf8, true)])),
            vec![Arc::new(arrow::array::StringArray::from(vec![s]))],
        )
        .unwrap()
    };
    // Compressed buffers state their own decompressed size: refused before
    // anything is decompressed.
    let zstd = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
        .expect("zstd");
    let e = bind_raw(
        &mut carol,
        prepared.prepared_statement_handle.clone(),
        encoded(text("x".repeat(100_000)), zstd),
    )
    .await
    .expect_err("compressed");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    assert!(e.to_string().contains("uncompressed"), "{e}");
    // A truncated body: refused as bad input, no panic, and audited.
    let mut messages = encoded(text("hello".into()), Default::default());
    let body = messages[1].data_body.clone();
    messages[1].data_body = body.slice(..body.len() / 2);
    let e = bind_raw(
        &mut carol,
        prepared.prepared_statement_handle.clone(),
        messages,
    )
    .await
    .expect_err("truncated");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // The same through Veil's own SqlCommand.
    let mut zipped = Vec::new();
    {
        let row = text("y".repeat(100_000));
        let options = arrow::ipc::writer::IpcWriteOptions::default()
            .try_with_compression(Some(arrow::ipc::CompressionType::ZSTD))
            .unwrap();
        let mut w = arrow::ipc::writer::StreamWriter::try_new_with_options(
            &mut zipped,
            &row.schema(),
            options,
        )
        .unwrap();
        w.write(&row).unwrap();
        w.finish().unwrap();
    }
    let native =
        FlightDescriptor::new_cmd(veil_proto::Named::to_any_bytes(&veil_proto::SqlCommand {
            query: "SELECT $1 AS v".into(),
            parameters: zipped,
            ..Default::default()
        }));
    let e = carol.get_flight_info(native).await.expect_err("compressed");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // Two hundred small parameters are fine.
    let many = prepare(
        &mut carol,
        &format!(
            "SELECT {}",
            (0..200).map(|_| "?").collect::<Vec<_>>().join(", ")
        ),
    )
    .await;
    let row = RecordBatch::try_new(
        Arc::new(Schema::new(
            (0..200)
                .map(|i| Field::new(format!("p{i}"), DataType::Int64, true))
                .collect::<Vec<_>>(),
        )),
        (0..200)
            .map(|_| Arc::new(Int64Array::from(vec![1])) as arrow::array::ArrayRef)
            .collect(),
    )
    .unwrap();
    let handle = bind(&mut carol, many.prepared_statement_handle, row)
        .await
        .expect("200 values");
    let (_, rows) = fetch(
        &mut carol,
        cmd(CommandPreparedStatementQuery {
            prepared_statement_handle: handle,
        }),
    )
    .await;
    assert_eq!(rows[0].num_columns(), 200);
    assert_eq!(
        rows[0]
            .column(199)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        1
    );
    // A pathological name pattern is the caller's error, not Veil's.
    let e = carol
        .get_flight_info(cmd(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("%".repeat(20_000)),
        }))
        .await
        .expect_err("too long");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // Cancels with a body that is not a cancel request are refused.
    let e = action(&mut carol, "CancelQuery", b"garbage".to_vec())
        .await
        .expect_err("garbage");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    let e = action(&mut carol, "CancelFlightInfo", Vec::new())
        .await
        .expect_err("no info");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    // The server is still up, and failed binds were audited.
    let mut dave = client(&server, Some(&server.token("dave"))).await;
    let (_, audit) = fetch(
        &mut dave,
        cmd(CommandStatementQuery {
            query: "SELECT status FROM veil.audit WHERE action = 'bind' AND \"user\" = 'carol'"
                .into(),
            transaction_id: None,
        }),
    )
    .await;
    let statuses = strings(&audit, "status");
    assert!(
        statuses
            .iter()
            .filter(|s| s.as_deref() == Some("invalid_argument"))
            .count()
            >= 2,
        "{statuses:?}"
    );
    server.stop().await;
}

/// Every call is audited, metadata and refusals included, and a dataset is
/// named in the audit as the catalog spells it (names are case-insensitive)
/// when the caller may see it, as typed otherwise.
#[tokio::test]
async fn every_call_is_audited_and_datasets_by_their_own_names() {
    let server = TestServer::demo().await;
    let alice = server.connect("alice").await;
    alice
        .scan(
            "Clinical.TRIALS",
            veil_client::Scan::default().with_limit(3),
        )
        .await
        .expect("names are case-insensitive");
    let missing = alice
        .scan("Clinical.Nowhere", veil_client::Scan::default())
        .await
        .expect_err("no such dataset");
    assert_eq!(missing.code(), Some(tonic::Code::NotFound), "{missing}");
    let mut erin = client(&server, Some(&server.token("erin"))).await;
    erin.get_flight_info(cmd(CommandGetTables::default()))
        .await
        .expect("tables");
    erin.get_schema(cmd(CommandGetCatalogs::default()))
        .await
        .expect("catalogs' schema");
    let exchange = erin
        .do_exchange(futures::stream::iter(Vec::<
            Result<arrow_flight::FlightData, FlightError>,
        >::new()))
        .await
        .expect_err("read-only");
    assert_eq!(code(&exchange), tonic::Code::Unimplemented);
    // What a JDBC session does around its reads: a handshake, closing
    // and cancelling (they change nothing Veil keeps, and are recorded).
    erin.handshake(bytes::Bytes::new())
        .await
        .expect("handshake");
    action(&mut erin, "CloseSession", Vec::new())
        .await
        .expect("CloseSession");
    let cancel = ActionCancelQueryRequest {
        info: FlightInfo::new().encode_to_vec().into(),
    };
    action(&mut erin, "CancelQuery", cancel.as_any().encode_to_vec())
        .await
        .expect("CancelQuery");
    // JDBC's `catalog=veil` property: SetSessionOptions at connect. The
    // bodies are Flight.proto's messages written out by hand: a map entry
    // (field 1) of the option's name (1) and its SessionOptionValue (2).
    let entry = |name: &str, value: &[u8]| {
        let mut e = vec![0x0a, name.len() as u8];
        e.extend_from_slice(name.as_bytes());
        e.extend_from_slice(&[0x12, value.len() as u8]);
        e.extend_from_slice(value);
        let mut m = vec![0x0a, e.len() as u8];
        m.extend(e);
        m
    };
    let text = |v: &str| {
        let mut b = vec![0x0a, v.len() as u8];
        b.extend_from_slice(v.as_bytes());
        b
    };
    let set = action(
        &mut erin,
        "SetSessionOptions",
        entry("catalog", &text("veil")),
    )
    .await
    .expect("SetSessionOptions");
    assert_eq!(
        set,
        vec![bytes::Bytes::new()],
        "no errors: the catalog is set"
    );
    let got = action(&mut erin, "GetSessionOptions", Vec::new())
        .await
        .expect("GetSessionOptions");
    assert_eq!(
        got,
        vec![bytes::Bytes::from(entry("catalog", &text("veil")))]
    );
    // A default schema would change what later queries name: refused in
    // the result (INVALID_NAME, 1), as is another catalog (INVALID_VALUE, 2).
    let mut both = entry("schema", &text("clinical"));
    both.extend(entry("catalog", &text("other")));
    let refused = action(&mut erin, "SetSessionOptions", both)
        .await
        .expect("SetSessionOptions answers per option");
    assert_eq!(refused.len(), 1);
    let mut errors = [
        entry("schema", &[0x08, 0x01]),
        entry("catalog", &[0x08, 0x02]),
    ];
    let r = refused[0].to_vec();
    assert!(
        r == [errors[0].clone(), errors[1].clone()].concat() || {
            errors.reverse();
            r == errors.concat()
        },
        "{r:?}"
    );
    // A body that is no SetSessionOptionsRequest: refused, and recorded
    // as the session call it is.
    let e = action(&mut erin, "SetSessionOptions", b"\xff\xff".to_vec())
        .await
        .expect_err("not a request");
    assert_eq!(code(&e), tonic::Code::InvalidArgument);
    let mut dave = client(&server, Some(&server.token("dave"))).await;
    let (_, audit) = fetch(
        &mut dave,
        cmd(CommandStatementQuery {
            query: "SELECT action, dataset, status, message FROM veil.audit \
                    WHERE \"user\" IN ('alice', 'erin') ORDER BY seq"
                .into(),
            transaction_id: None,
        }),
    )
    .await;
    let rows: Vec<(String, String, String, String)> = {
        let col = |name: &str| strings(&audit, name);
        let (a, d, s, m) = (col("action"), col("dataset"), col("status"), col("message"));
        (0..a.len())
            .map(|i| {
                let v = |c: &Vec<Option<String>>| c[i].clone().unwrap_or_default();
                (v(&a), v(&d), v(&s), v(&m))
            })
            .collect()
    };
    let has = |action: &str, dataset: &str, status: &str, message: &str| {
        rows.iter()
            .any(|(a, d, s, m)| a == action && d == dataset && s == status && m.contains(message))
    };
    for action in ["plan", "read.start", "read.end"] {
        assert!(
            has(action, "clinical.trials", "ok", ""),
            "{action}: {rows:#?}"
        );
    }
    assert!(
        !rows.iter().any(|(_, d, _, _)| d == "Clinical.TRIALS"),
        "{rows:#?}"
    );
    assert!(
        has("plan", "Clinical.Nowhere", "not_found", ""),
        "{rows:#?}"
    );
    assert!(has("plan", "", "ok", "CommandGetTables"), "{rows:#?}");
    assert!(has("schema", "", "ok", "CommandGetCatalogs"), "{rows:#?}");
    assert!(has("handshake", "", "ok", ""), "{rows:#?}");
    assert!(
        has("session", "", "invalid_argument", "SetSessionOptions"),
        "{rows:#?}"
    );
    for closed in [
        "CloseSession",
        "CancelQuery",
        "SetSessionOptions",
        "GetSessionOptions",
    ] {
        assert!(has("session", "", "ok", closed), "{rows:#?}");
    }
    assert!(
        has("exchange", "", "unimplemented", "DoExchange"),
        "{rows:#?}"
    );
    server.stop().await;
}
