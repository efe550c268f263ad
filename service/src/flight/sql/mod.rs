//! Flight SQL, the second protocol on Veil's Flight port: a decoder from
//! Flight SQL's commands and actions into what Veil already does. A query
//! becomes Veil's own [`SqlCommand`] and is planned, ticketed, audited and
//! streamed by the same code as a Veil client's (`flight::service`);
//! metadata is answered from the reader's own catalog ([`metadata`]);
//! prepared statements are signed handles ([`prepared`]). No rule lives
//! here.

pub mod metadata;
pub mod prepared;
pub mod session;

use std::sync::Arc;

use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any as SqlAny,
    Command as SqlCommandKind, DoPutPreparedStatementResult, ProstMessageExt,
};
use arrow_flight::{
    Action as FlightAction, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightData, IpcMessage, SchemaAsIpc,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use veil_proto::SqlCommand;

use crate::engine::{Engine, RequestScope};
use crate::error::{Result, VeilError};
use crate::flight::tickets::TicketSigner;
use crate::model::identity::Principal;
use crate::sql::parameters;

pub use metadata::ServerDescription;

/// Type URLs of Flight SQL's messages start with this.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// The Flight SQL actions Veil answers (`DoAction` type names), with what
/// each does here.
pub const ACTION_TYPES: &[(&str, &str)] = &[
    (
        "CreatePreparedStatement",
        "Flight SQL: plan a query for you and return a signed handle with its result and parameter schemas.",
    ),
    (
        "ClosePreparedStatement",
        "Flight SQL: accepted; handles hold no server state.",
    ),
    (
        "CloseSession",
        "Flight SQL: accepted; Veil keeps no sessions.",
    ),
    (
        "CancelFlightInfo",
        "Flight: accepted; a query stops when its client stops reading.",
    ),
    (
        "CancelQuery",
        "Flight SQL: accepted; a query stops when its client stops reading.",
    ),
    (
        "BeginTransaction",
        "Flight SQL: refused; Veil has no transactions.",
    ),
    (
        "EndTransaction",
        "Flight SQL: refused; Veil has no transactions.",
    ),
    (
        "BeginSavepoint",
        "Flight SQL: refused; Veil has no transactions.",
    ),
    (
        "EndSavepoint",
        "Flight SQL: refused; Veil has no transactions.",
    ),
    (
        "CreatePreparedSubstraitPlan",
        "Flight SQL: refused; Veil takes SQL text.",
    ),
    (
        "SetSessionOptions",
        "Flight: the catalog may be set to veil (what every call reads); other options are refused per option.",
    ),
    (
        "GetSessionOptions",
        "Flight: the catalog, veil; Veil keeps no other session options.",
    ),
];

/// The names of [`ACTION_TYPES`].
pub const ACTIONS: [&str; 12] = {
    let mut names = [""; 12];
    let mut i = 0;
    while i < ACTION_TYPES.len() {
        names[i] = ACTION_TYPES[i].0;
        i += 1;
    }
    names
};

/// What a Flight SQL descriptor asks for.
#[derive(Debug)]
pub enum Requested {
    /// A query, as Veil's own command (placeholders numbered, parameters
    /// bound).
    Query(SqlCommand),
    /// A metadata command, answered for the reader at `DoGet`.
    Metadata(SqlCommandKind),
}

/// The Flight SQL command in a descriptor's or ticket's bytes: `None` when
/// they are not a Flight SQL message at all.
pub fn decode(bytes: &[u8]) -> Option<Result<SqlCommandKind>> {
    let any = SqlAny::decode(bytes).ok()?;
    if !any.type_url.starts_with(TYPE_URL_PREFIX) {
        return None;
    }
    Some(
        SqlCommandKind::try_from(any).map_err(|_| {
            VeilError::InvalidArgument("the Flight SQL command does not decode".into())
        }),
    )
}

fn read_only(what: &str) -> VeilError {
    VeilError::Unimplemented(format!(
        "{what}: Veil serves governed data read-only; write to the source and register it as a dataset"
    ))
}

fn no_transactions() -> VeilError {
    VeilError::Unimplemented(
        "Veil has no transactions: every query reads the data as it is when it runs; run without one"
            .into(),
    )
}

/// `CloseSession`'s result (`arrow.flight.protocol.CloseSessionResult`,
/// which arrow-rs does not generate).
#[derive(Clone, PartialEq, prost::Message)]
struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `CloseSession`'s request (`arrow.flight.protocol.CloseSessionRequest`):
/// no fields.
#[derive(Clone, PartialEq, prost::Message)]
struct CloseSessionRequest {}

/// `CloseSessionResult.Status.CLOSED`
const SESSION_CLOSED: i32 = 1;
/// `ActionCancelQueryResult.CancelResult.CANCEL_RESULT_CANCELLED`
const QUERY_CANCELLED: i32 = 1;

/// The Flight SQL adapter's state: what it needs to decode, sign handles
/// and describe the server.
#[derive(Debug)]
pub struct FlightSql {
    engine: Arc<Engine>,
    signer: TicketSigner,
    description: ServerDescription,
}

/// A `DoAction` outcome: result bodies, and the audit record's words.
#[derive(Debug)]
pub struct ActionOutcome {
    pub bodies: Vec<Vec<u8>>,
    /// The query a prepared statement was made for, and what it reads
    /// (audited as planned).
    pub prepared: Option<(String, crate::engine::DescribedQuery)>,
}

impl FlightSql {
    pub fn new(engine: Arc<Engine>, signer: TicketSigner) -> Result<Self> {
        let description = ServerDescription::new(&engine.scalar_functions())?;
        Ok(Self {
            engine,
            signer,
            description,
        })
    }

    /// What a `GetFlightInfo`, `PollFlightInfo` or `GetSchema` descriptor's
    /// Flight SQL command asks for.
    pub fn request(&self, p: &Principal, command: SqlCommandKind) -> Result<Requested> {
        match command {
            SqlCommandKind::CommandStatementQuery(q) => {
                if q.transaction_id.is_some() {
                    return Err(no_transactions());
                }
                Ok(Requested::Query(SqlCommand {
                    query: q.query,
                    parameters: Vec::new(),
                    ..Default::default()
                }))
            }
            SqlCommandKind::CommandPreparedStatementQuery(h) => Ok(Requested::Query(
                prepared::open(&self.signer, &h.prepared_statement_handle, p, now_ms())?.0,
            )),
            c @ (SqlCommandKind::CommandGetCatalogs(_)
            | SqlCommandKind::CommandGetDbSchemas(_)
            | SqlCommandKind::CommandGetTables(_)
            | SqlCommandKind::CommandGetTableTypes(_)
            | SqlCommandKind::CommandGetSqlInfo(_)
            | SqlCommandKind::CommandGetXdbcTypeInfo(_)
            | SqlCommandKind::CommandGetPrimaryKeys(_)
            | SqlCommandKind::CommandGetExportedKeys(_)
            | SqlCommandKind::CommandGetImportedKeys(_)
            | SqlCommandKind::CommandGetCrossReference(_)) => {
                metadata::check_patterns(&c)?;
                Ok(Requested::Metadata(c))
            }
            SqlCommandKind::CommandStatementUpdate(_)
            | SqlCommandKind::CommandPreparedStatementUpdate(_) => {
                Err(read_only("UPDATE, INSERT and DELETE statements"))
            }
            SqlCommandKind::CommandStatementIngest(_) => Err(read_only("bulk ingestion")),
            SqlCommandKind::CommandStatementSubstraitPlan(_) => Err(VeilError::Unimplemented(
                "Veil takes SQL text, not Substrait plans: send a CommandStatementQuery".into(),
            )),
            other => Err(VeilError::InvalidArgument(format!(
                "{} is not a command to plan; send a statement, a prepared statement or a metadata command",
                other.type_url().trim_start_matches(TYPE_URL_PREFIX)
            ))),
        }
    }

    /// The schema of a metadata command's result.
    pub fn metadata_schema(&self, command: &SqlCommandKind) -> Result<SchemaRef> {
        self.description.schema(command)
    }

    /// A metadata command's result for the scope's reader.
    pub fn metadata(
        &self,
        scope: &Arc<RequestScope>,
        command: &SqlCommandKind,
    ) -> Result<RecordBatch> {
        self.description.answer(&self.engine, scope, command)
    }

    /// Is this a Flight SQL action?
    pub fn handles(action: &str) -> bool {
        ACTIONS.contains(&action)
    }

    /// Run a Flight SQL action ([`Self::handles`]).
    pub async fn action(
        &self,
        scope: &Arc<RequestScope>,
        action: &FlightAction,
    ) -> Result<ActionOutcome> {
        let done = |bodies| ActionOutcome {
            bodies,
            prepared: None,
        };
        match action.r#type.as_str() {
            "CreatePreparedStatement" => {
                let request: ActionCreatePreparedStatementRequest = unpack(&action.body)?;
                if request.transaction_id.is_some() {
                    return Err(no_transactions());
                }
                let query = request.query;
                let described = self.engine.describe_sql(scope, &query).await?;
                let now = now_ms();
                let handle = prepared::issue(
                    &self.signer,
                    scope.principal(),
                    scope.version(),
                    SqlCommand {
                        query: query.clone(),
                        parameters: Vec::new(),
                        ..Default::default()
                    },
                    now,
                    now.saturating_add(prepared::HANDLE_TTL_MS),
                );
                let result = ActionCreatePreparedStatementResult {
                    prepared_statement_handle: handle.into(),
                    dataset_schema: ipc_schema(&described.schema)?.into(),
                    parameter_schema: ipc_schema(&parameter_schema(&described.parameters))?.into(),
                };
                Ok(ActionOutcome {
                    bodies: vec![result.as_any().encode_to_vec()],
                    prepared: Some((query, described)),
                })
            }
            "ClosePreparedStatement" => {
                // Nothing is held for a handle; a well-formed request is
                // enough (a handle of another user's opens nothing here).
                let _: ActionClosePreparedStatementRequest = unpack(&action.body)?;
                Ok(done(Vec::new()))
            }
            "CloseSession" => {
                CloseSessionRequest::decode(action.body.as_ref()).map_err(|_| {
                    VeilError::InvalidArgument(
                        "the action body is not a CloseSessionRequest".into(),
                    )
                })?;
                Ok(done(vec![
                    CloseSessionResult {
                        status: SESSION_CLOSED,
                    }
                    .encode_to_vec(),
                ]))
            }
            // A query runs only while its client reads its endpoints, and
            // stops when the client stops: nothing runs for a FlightInfo
            // that is not being read, so the cancellation is complete.
            "CancelFlightInfo" => {
                let request = CancelFlightInfoRequest::decode(action.body.as_ref())
                    .ok()
                    .filter(|r| r.info.is_some())
                    .ok_or_else(|| {
                        VeilError::InvalidArgument(
                            "the action body is not a CancelFlightInfoRequest with a FlightInfo"
                                .into(),
                        )
                    })?;
                drop(request);
                Ok(done(vec![
                    CancelFlightInfoResult::new(CancelStatus::Cancelled).encode_to_vec(),
                ]))
            }
            "CancelQuery" => {
                let _: ActionCancelQueryRequest = unpack(&action.body)?;
                Ok(done(vec![
                    ActionCancelQueryResult {
                        result: QUERY_CANCELLED,
                    }
                    .as_any()
                    .encode_to_vec(),
                ]))
            }
            "BeginTransaction" | "EndTransaction" | "BeginSavepoint" | "EndSavepoint" => {
                Err(no_transactions())
            }
            "CreatePreparedSubstraitPlan" => Err(VeilError::Unimplemented(
                "Veil takes SQL text, not Substrait plans: prepare the SQL instead".into(),
            )),
            "SetSessionOptions" => Ok(done(vec![session::set(&action.body)?])),
            "GetSessionOptions" => Ok(done(vec![session::get(&action.body)?])),
            other => Err(VeilError::Internal(format!(
                "'{other}' is not a Flight SQL action"
            ))),
        }
    }

    /// Bind parameters to a prepared statement (`DoPut` with a
    /// `CommandPreparedStatementQuery`): returns the new handle, which
    /// carries the query and the values. The caller reads the data with it.
    pub async fn bind<S>(
        &self,
        scope: &Arc<RequestScope>,
        handle: &[u8],
        data: S,
    ) -> Result<(Vec<u8>, SqlCommand)>
    where
        S: Stream<Item = std::result::Result<FlightData, arrow_flight::error::FlightError>>
            + Send
            + Unpin
            + 'static,
    {
        let p = scope.principal();
        let (mut command, expires_at_ms) = prepared::open(&self.signer, handle, p, now_ms())?;
        // The raw messages, bounded in count, bytes and time, never decoded
        // as they come: the bytes are checked before anything is decoded
        // (`parameters::read_batches`).
        let limit = std::time::Duration::from_secs(self.engine.config().plan_timeout_secs.max(1));
        let stream = tokio::time::timeout(limit, receive(data))
            .await
            .map_err(|_| {
                VeilError::ResourceExhausted(format!(
                    "the parameters did not arrive within {} s; send them at once",
                    limit.as_secs()
                ))
            })??;
        let batches = parameters::read_batches(&stream)?;
        let rows: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
        let count: usize = rows.iter().map(|b| b.num_rows()).sum();
        command.parameters = match (count, rows.first()) {
            (0, _) | (_, None) => Vec::new(),
            (1, Some(row)) => parameters::encode(row)?,
            (n, _) => {
                return Err(VeilError::InvalidArgument(format!(
                    "bind one row of parameters to a query (got {n}); run the statement once per row"
                )));
            }
        };
        // The handle keeps its expiry: binding does not extend it.
        let handle = prepared::issue(
            &self.signer,
            p,
            scope.version(),
            command.clone(),
            now_ms(),
            expires_at_ms,
        );
        Ok((handle, command))
    }

    /// `PutResult.app_metadata` for a bind: the new handle.
    pub fn bound(handle: Vec<u8>) -> Vec<u8> {
        DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        }
        .encode_to_vec()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A Flight SQL action body: the request wrapped in `Any`.
fn unpack<M: ProstMessageExt>(body: &[u8]) -> Result<M> {
    let bad = || {
        VeilError::InvalidArgument(format!(
            "the action body is not a {}",
            M::type_url().trim_start_matches(TYPE_URL_PREFIX)
        ))
    };
    SqlAny::decode(body)
        .map_err(|_| bad())?
        .unpack::<M>()
        .map_err(|_| bad())?
        .ok_or_else(bad)
}

/// A schema as Flight SQL carries it: an encapsulated IPC message.
fn ipc_schema(schema: &Schema) -> Result<Vec<u8>> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| VeilError::internal("encoding a schema", e))?;
    Ok(bytes.to_vec())
}

/// A prepared statement's parameter schema: `$1..$n` as fields named by
/// their number, typed as the query uses them (null type where nothing
/// fixes it: any value is taken as given).
fn parameter_schema(parameters: &[(usize, Option<DataType>)]) -> Schema {
    let highest = parameters.last().map_or(0, |(i, _)| *i);
    Schema::new(
        (1..=highest)
            .map(|i| {
                let ty = parameters
                    .iter()
                    .find(|(n, _)| *n == i)
                    .and_then(|(_, t)| t.clone())
                    .unwrap_or(DataType::Null);
                Field::new(format!("${i}"), ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// A bind's messages as one IPC stream, at most [`MAX_BIND_MESSAGES`]
/// messages and [`parameters::MAX_PARAMETER_BYTES`].
async fn receive<S>(mut data: S) -> Result<Vec<u8>>
where
    S: Stream<Item = std::result::Result<FlightData, arrow_flight::error::FlightError>> + Unpin,
{
    let mut stream = Vec::new();
    let mut messages = 0usize;
    while let Some(m) = data.try_next().await.map_err(|e| {
        VeilError::InvalidArgument(VeilError::detailed(
            "the parameters could not be received",
            e,
        ))
    })? {
        messages += 1;
        if messages > MAX_BIND_MESSAGES {
            return Err(VeilError::InvalidArgument(format!(
                "send one row of parameters in at most {MAX_BIND_MESSAGES} messages"
            )));
        }
        append_ipc(&mut stream, &m);
        if stream.len() > parameters::MAX_PARAMETER_BYTES {
            return Err(VeilError::InvalidArgument(format!(
                "query parameters may take at most {} KiB",
                parameters::MAX_PARAMETER_BYTES / 1024
            )));
        }
    }
    Ok(stream)
}

/// Most messages a bind may send (schema, dictionaries, the row).
const MAX_BIND_MESSAGES: usize = 16;

/// Append a Flight message to an IPC stream: the framing Flight leaves out
/// (continuation marker, padded header length), the header, the body.
fn append_ipc(stream: &mut Vec<u8>, m: &FlightData) {
    if m.data_header.is_empty() {
        return;
    }
    let padded = m.data_header.len().next_multiple_of(8);
    stream.extend_from_slice(&u32::MAX.to_le_bytes());
    stream.extend_from_slice(&u32::try_from(padded).unwrap_or(u32::MAX).to_le_bytes());
    stream.extend_from_slice(&m.data_header);
    stream.resize(stream.len() + (padded - m.data_header.len()), 0);
    stream.extend_from_slice(&m.data_body);
}

/// A Flight SQL command as the `Any` bytes a descriptor or ticket carries.
pub fn pack(command: SqlCommandKind) -> Vec<u8> {
    command.into_any().encode_to_vec()
}

/// A `DoPut`'s messages as the stream [`FlightSql::bind`] reads.
pub fn flight_data_stream<S>(
    s: S,
) -> impl Stream<Item = std::result::Result<FlightData, arrow_flight::error::FlightError>>
where
    S: Stream<Item = std::result::Result<FlightData, tonic::Status>>,
{
    s.map(|r| r.map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e))))
}
