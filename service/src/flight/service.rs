//! The Flight service: converts Flight requests into engine calls and engine
//! errors into statuses. Every handler finds the caller's [`Principal`] in
//! the request extensions, put there by the auth layer; a request without one
//! is refused (fail closed), whatever route it took.

use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::stream::{BoxStream, StreamExt};
use futures::{FutureExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use veil_proto::{Any, ScanCommand, SqlCommand, TicketBody, TicketCommand};

use super::actions::FlightActions;
use super::batch_messages::{self, Outgoing};
use super::gate::Gated;
use super::sql::{self as flight_sql, FlightSql, Requested};
use super::status::to_status;
use super::tickets::{TicketSigner, body_for};
use super::zero_copy_do_get::{DoGetMessages, MESSAGE_HARD_CAP_BYTES, checked_len};
use crate::audit::{AuditEventExt, AuditLog, query_fingerprint};
use crate::auth::authenticator::Authenticated;
use crate::engine::DatasetRead;
use crate::engine::{Command, Engine, PlannedQuery, RequestScope};
use crate::error::{Result, VeilError};
use crate::model::audit::AuditEvent;
use crate::model::identity::Principal;
use arrow_flight::sql::Command as SqlCommandKind;

#[derive(Debug, Clone)]
pub struct VeilFlight {
    engine: Arc<Engine>,
    signer: TicketSigner,
    audit: AuditLog,
    actions: Arc<FlightActions>,
    /// The Flight SQL adapter: the second protocol on this port.
    sql: Arc<FlightSql>,
    /// Where endpoints may be read (round-robin); empty: here.
    locations: Vec<String>,
}

/// The authenticated caller of a request.
pub fn principal_of<T>(req: &Request<T>) -> std::result::Result<Arc<Principal>, Status> {
    req.extensions()
        .get::<Arc<Principal>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated identity on this call"))
}

/// The call's scope: the caller and the state the authenticator read for
/// this very call, so the whole RPC is decided at one state version.
fn scope_of<T>(
    engine: &Engine,
    req: &Request<T>,
) -> std::result::Result<Arc<RequestScope>, Status> {
    let a = req
        .extensions()
        .get::<Authenticated>()
        .ok_or_else(|| Status::unauthenticated("no authenticated identity on this call"))?;
    Ok(engine.scope_at(&a.principal, Arc::clone(&a.snapshot)))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a descriptor asks for, in either protocol.
#[derive(Debug)]
enum Asked {
    /// A read: Veil's own command, or a Flight SQL query decoded into one.
    Read(Command),
    /// A Flight SQL metadata command.
    Metadata(SqlCommandKind),
}

/// The command a descriptor names.
pub fn command_of(desc: &FlightDescriptor) -> Result<Command> {
    match DescriptorType::try_from(desc.r#type) {
        Ok(DescriptorType::Path) => {
            let name = match desc.path.as_slice() {
                [one] => one.clone(),
                [schema, table] => format!("{schema}.{table}"),
                _ => {
                    return Err(VeilError::InvalidArgument(
                        "a path descriptor is [\"schema\", \"name\"] or [\"schema.name\"]".into(),
                    ));
                }
            };
            Ok(Command::Scan(ScanCommand {
                dataset: name,
                ..Default::default()
            }))
        }
        Ok(DescriptorType::Cmd) => packed_command(&desc.cmd),
        _ => Err(VeilError::InvalidArgument("unknown descriptor type".into())),
    }
}

/// Veil's own command, as a descriptor (or a direct read's ticket) carries
/// it: a `ScanCommand` or `SqlCommand` wrapped in `google.protobuf.Any`.
fn packed_command(bytes: &[u8]) -> Result<Command> {
    let bad = || {
        VeilError::InvalidArgument(format!(
            "unknown command: send a {}ScanCommand or SqlCommand wrapped in google.protobuf.Any",
            veil_proto::TYPE_URL_PREFIX
        ))
    };
    let any = Any::decode(bytes).map_err(|_| bad())?;
    if let Some(scan) = any.unpack::<ScanCommand>() {
        return Ok(Command::Scan(scan.map_err(|_| bad())?));
    }
    if let Some(sql) = any.unpack::<SqlCommand>() {
        return Ok(Command::Sql(sql.map_err(|_| bad())?));
    }
    Err(bad())
}

/// What a `DoGet` reads: a part of a plan from a signed ticket, or a whole
/// command from a direct read's ticket (`veil_proto::DIRECT_TICKET_PREFIX`).
struct ReadOf {
    cmd: Command,
    /// The signed ticket's body (`None`: a direct read).
    body: Option<TicketBody>,
}

/// The audit event for a request on a command. A scan's dataset is named
/// as the catalog spells it when the caller may see it (names are
/// case-insensitive: `Ledger.Payouts` is recorded as `ledger.payouts`), and
/// as typed otherwise, so a hidden dataset leaves the trail of a missing one.
fn event_for(action: &str, scope: &RequestScope, cmd: &Command) -> AuditEvent {
    let mut e = AuditEvent::new(action, Some(scope.principal()));
    match cmd {
        Command::Scan(s) => {
            let name = match scope.visible(&s.dataset) {
                Some((d, _)) => d.name.clone(),
                None => s.dataset.chars().take(256).collect(),
            };
            e.columns = s.columns.clone();
            e.query_fingerprint = query_fingerprint(&format!("scan {name} where {}", s.filter));
            e.dataset = Some(name);
        }
        Command::Sql(s) => e.query_fingerprint = query_fingerprint(&s.query),
    }
    e
}

/// The audit words of a Flight SQL metadata command.
fn metadata_words(c: &SqlCommandKind) -> String {
    format!(
        "Flight SQL {}",
        c.type_url().trim_start_matches(flight_sql::TYPE_URL_PREFIX)
    )
}

fn describe_reads(e: &mut AuditEvent, planned: &PlannedQuery) {
    describe(e, &planned.reads, &planned.schema);
}

/// The audit words of what a request reads: datasets, policies, masked
/// columns, whether rows are filtered, and the columns served.
/// A dataset a query reads twice (a self-join; a DP answer, planned and
/// then rebuilt from its accepted shape) is named once.
fn describe(e: &mut AuditEvent, reads: &[DatasetRead], schema: &Schema) {
    for r in reads {
        for policy in &r.policy.applied {
            push_new(&mut e.policies, policy.clone());
        }
        for c in r.policy.masked_columns().iter() {
            push_new(&mut e.masked_columns, format!("{}.{c}", r.dataset));
        }
    }
    if e.dataset.is_none() {
        e.dataset = Some(distinct_datasets(reads.iter()).join(","));
    }
    e.rows_filtered = reads.iter().any(|r| r.policy.rows_filtered());
    let mut served: Vec<String> = Vec::new();
    for r in reads {
        if let Some(s) = &r.served {
            push_new(&mut served, format!("{}: {s}", r.dataset));
        }
    }
    if !served.is_empty() && e.message.is_empty() {
        e.message = served.join("; ");
    }
    if e.columns.is_empty() {
        // An unaliased expression is named by its text, literals and all.
        e.columns = schema
            .fields()
            .iter()
            .map(|f| crate::audit::column_words(f.name()))
            .collect();
    }
}

fn push_new(to: &mut Vec<String>, value: String) {
    if !to.contains(&value) {
        to.push(value);
    }
}

/// The datasets `reads` names, each once, in the order first read.
fn distinct_datasets<'a>(reads: impl Iterator<Item = &'a DatasetRead>) -> Vec<String> {
    let mut names = Vec::new();
    for r in reads {
        push_new(&mut names, r.dataset.clone());
    }
    names
}

impl VeilFlight {
    pub fn new(
        engine: Arc<Engine>,
        signer: TicketSigner,
        audit: AuditLog,
        actions: Arc<FlightActions>,
        locations: Vec<String>,
    ) -> Result<Self> {
        let sql = Arc::new(FlightSql::new(Arc::clone(&engine), signer.clone())?);
        Ok(Self {
            engine,
            signer,
            audit,
            actions,
            sql,
            locations,
        })
    }

    /// Record a failure and return its status; if even that can't be
    /// recorded, the answer is `Unavailable`.
    async fn fail(&self, event: AuditEvent, e: VeilError) -> Status {
        match self.audit.record(event.failed(&e)).await {
            Ok(()) => to_status(&e),
            Err(audit_err) => to_status(&audit_err),
        }
    }

    /// What a descriptor asks for: a Flight SQL command if it is one,
    /// Veil's own otherwise. A bad one is audited under `action`.
    async fn asked(
        &self,
        action: &str,
        p: &Principal,
        desc: &FlightDescriptor,
    ) -> std::result::Result<Asked, Status> {
        let decoded = match DescriptorType::try_from(desc.r#type) {
            Ok(DescriptorType::Cmd) => flight_sql::decode(&desc.cmd),
            _ => None,
        };
        let asked = match decoded {
            Some(command) => command
                .and_then(|c| self.sql.request(p, c))
                .map(|r| match r {
                    Requested::Query(q) => Asked::Read(Command::Sql(q)),
                    Requested::Metadata(m) => Asked::Metadata(m),
                }),
            None => command_of(desc).map(Asked::Read),
        };
        match asked {
            Ok(a) => Ok(a),
            Err(e) => Err(self.fail(AuditEvent::new(action, Some(p)), e).await),
        }
    }

    /// The FlightInfo of whatever a descriptor asks for.
    async fn info(
        &self,
        scope: &Arc<RequestScope>,
        desc: FlightDescriptor,
    ) -> std::result::Result<FlightInfo, Status> {
        match self.asked("plan", scope.principal(), &desc).await? {
            Asked::Read(cmd) => self.plan_info(scope, cmd, desc).await,
            Asked::Metadata(m) => self.metadata_info(scope, m, desc).await,
        }
    }

    /// A metadata command's FlightInfo: its schema and one endpoint whose
    /// ticket carries the command, answered for the reader at `DoGet`.
    async fn metadata_info(
        &self,
        scope: &Arc<RequestScope>,
        command: SqlCommandKind,
        desc: FlightDescriptor,
    ) -> std::result::Result<FlightInfo, Status> {
        let p = scope.principal();
        let mut event = AuditEvent::new("plan", Some(p));
        event.message = metadata_words(&command);
        let schema = match self.sql.metadata_schema(&command) {
            Ok(s) => s,
            Err(e) => return Err(self.fail(event, e).await),
        };
        self.audit.record(event).await.map_err(|e| to_status(&e))?;
        let expires = now_ms() + self.engine.config().ticket_ttl_secs as i64 * 1000;
        let ticket = self.signer.sign(TicketBody {
            part_count: 1,
            query_id: uuid::Uuid::new_v4().to_string(),
            ..body_for(
                p,
                scope.version(),
                expires,
                TicketCommand::FlightSqlMetadata(flight_sql::pack(command)),
            )
        });
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))
            .map(|info| {
                info.with_descriptor(desc)
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                    .with_total_records(-1)
            })
    }

    async fn plan_info(
        &self,
        scope: &Arc<RequestScope>,
        cmd: Command,
        desc: FlightDescriptor,
    ) -> std::result::Result<FlightInfo, Status> {
        let p = scope.principal();
        let mut event = event_for("plan", scope, &cmd);
        let result = async {
            let planned = self.engine.plan(scope, &cmd, None, None).await?;
            let (parts, total) = match &cmd {
                Command::Scan(scan) => {
                    let layout = self.engine.layout(scope, scan, &planned).await?;
                    (layout.parts, layout.total_records)
                }
                Command::Sql(_) => {
                    let layout = self.engine.sql_layout(scope, &planned).await?;
                    (layout.parts, layout.total_records)
                }
            };
            Ok::<_, VeilError>((planned, parts, total))
        }
        .await;
        let (planned, parts, total) = match result {
            Ok(v) => v,
            Err(e) => return Err(self.fail(event, e).await),
        };
        describe_reads(&mut event, &planned);
        let query_id = uuid::Uuid::new_v4().to_string();
        let expires = now_ms() + self.engine.config().ticket_ttl_secs as i64 * 1000;
        let count = parts.len() as u32;
        // Dealt endpoints that hold their runs whole (nothing filters the
        // view's rows): clients can put them back in the files' order.
        let dealt_rows = match parts.first() {
            Some(Some(part)) if planned.keeps_view_rows() => {
                part.deal.as_ref().map_or(0, |d| d.rows)
            }
            _ => 0,
        };
        let command = match &cmd {
            Command::Scan(s) => TicketCommand::Scan(s.clone()),
            Command::Sql(s) => TicketCommand::Sql(s.clone()),
        };
        let endpoints: Vec<FlightEndpoint> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let ticket = self.signer.sign(TicketBody {
                    part,
                    part_index: i as u32,
                    part_count: count,
                    query_id: query_id.clone(),
                    planned_at_ms: planned.planned_at.timestamp_millis(),
                    ..body_for(p, planned.version, expires, command.clone())
                });
                let mut ep = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
                if !self.locations.is_empty() {
                    ep = ep.with_location(&self.locations[i % self.locations.len()]);
                }
                ep.expiration_time = Some(prost_types::Timestamp {
                    seconds: expires / 1000,
                    nanos: ((expires % 1000) * 1_000_000) as i32,
                });
                ep
            })
            .collect();
        let info = FlightInfo::new()
            .try_with_schema(&planned.schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_descriptor(desc)
            .with_endpoints(endpoints)
            .with_total_records(total)
            // One SQL stream keeps the query's order; parts of one don't.
            .with_ordered(matches!(cmd, Command::Sql(_)) && count == 1)
            .with_app_metadata(
                veil_proto::ReadNotes {
                    // A differentially private answer with no rows is
                    // its noise's doing (HAVING over it, private keys held
                    // back), not the row policy's: no note.
                    row_filtered: distinct_datasets(
                        planned
                            .reads
                            .iter()
                            .filter(|r| r.policy.rows_filtered() && r.policy.dp.is_none()),
                    ),
                    masked: planned
                        .reads
                        .iter()
                        .filter(|r| r.policy.dp.is_none())
                        .flat_map(|r| r.policy.masked_columns())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    dealt_rows,
                }
                .encode_to_vec(),
            );
        // A plan sends no rows: its event is committed before the answer
        // but not flushed on its own; it reaches disk with the next durable
        // event (at the latest the start of a read of this plan, before its
        // first batch) or within a second.
        self.audit
            .record_trailing(event)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(info)
    }

    /// A Flight SQL metadata command's answer for the reader, audited as a
    /// listing.
    async fn metadata_stream(
        &self,
        scope: &Arc<RequestScope>,
        command: &[u8],
    ) -> std::result::Result<Response<Stream<Outgoing>>, Status> {
        let p = scope.principal();
        let mut event = AuditEvent::new("list", Some(p));
        let answer = match flight_sql::decode(command) {
            Some(Ok(c)) => {
                event.message = metadata_words(&c);
                self.sql
                    .metadata(scope, &c)
                    .map(|batch| (self.sql.metadata_schema(&c), batch))
            }
            _ => Err(VeilError::InvalidArgument(
                "the ticket names no Flight SQL command".into(),
            )),
        };
        let (schema, batch) = match answer {
            Ok((Ok(schema), batch)) => (schema, batch),
            Ok((Err(e), _)) | Err(e) => return Err(self.fail(event, e).await),
        };
        event.rows = Some(batch.num_rows() as u64);
        self.audit.record(event).await.map_err(|e| to_status(&e))?;
        let encoded = batch_messages::encode(
            schema,
            futures::stream::iter([Ok(batch)]).boxed(),
            self.engine.config().max_message_bytes,
        )
        .map_err(|e| to_status(&from_flight_error(e)));
        Ok(Response::new(encoded.boxed()))
    }

    /// A Flight SQL action, audited: preparing a statement plans its query
    /// (recorded as `prepare`); the rest change nothing Veil keeps and are
    /// recorded as `session`, answered or refused.
    async fn sql_action(
        &self,
        scope: &Arc<RequestScope>,
        action: &Action,
    ) -> std::result::Result<Vec<Vec<u8>>, Status> {
        let p = scope.principal();
        let outcome = match self.sql.action(scope, action).await {
            Ok(o) => o,
            Err(e) => {
                // Recorded under the word its success would be.
                let word = match action.r#type.as_str() {
                    "CreatePreparedStatement" => "prepare",
                    _ => "session",
                };
                let mut event = AuditEvent::new(word, Some(p));
                event.message = format!("Flight SQL {}", action.r#type);
                return Err(self.fail(event, e).await);
            }
        };
        if let Some((query, described)) = &outcome.prepared {
            let mut event = event_for(
                "prepare",
                scope,
                &Command::Sql(veil_proto::SqlCommand {
                    query: query.clone(),
                    parameters: Vec::new(),
                    ..Default::default()
                }),
            );
            describe(&mut event, &described.reads, &described.schema);
            self.audit.record(event).await.map_err(|e| to_status(&e))?;
        } else {
            // Closing and cancelling change nothing Veil keeps, but every
            // call is on the trail.
            let mut event = AuditEvent::new("session", Some(p));
            event.message = format!("Flight SQL {}", action.r#type);
            self.audit.record(event).await.map_err(|e| to_status(&e))?;
        }
        Ok(outcome.bodies)
    }
}

impl VeilFlight {
    /// What a ticket reads (`Err`: a packed Flight SQL metadata command). A
    /// rejected ticket is audited and answered `INVALID_ARGUMENT`.
    async fn read_of(
        &self,
        request: &Request<Ticket>,
        p: &Principal,
    ) -> std::result::Result<std::result::Result<ReadOf, Vec<u8>>, Status> {
        let ticket = &request.get_ref().ticket;
        let mut denied = AuditEvent::new("read.start", Some(p));
        if let Some(packed) = ticket.strip_prefix(veil_proto::DIRECT_TICKET_PREFIX) {
            return match packed_command(packed) {
                Ok(cmd) => Ok(Ok(ReadOf { cmd, body: None })),
                Err(e) => {
                    denied.message = "direct read's command rejected".into();
                    Err(self.fail(denied, e).await)
                }
            };
        }
        let body = match self.signer.verify(ticket, p, now_ms()) {
            Ok(b) => b,
            Err(e) => {
                denied.message = "ticket rejected".into();
                return Err(self.fail(denied, e).await);
            }
        };
        let cmd = match body.command.clone() {
            Some(TicketCommand::Scan(s)) => Command::Scan(s),
            Some(TicketCommand::Sql(s)) => Command::Sql(s),
            Some(TicketCommand::FlightSqlMetadata(m)) => return Ok(Err(m)),
            None => return Err(Status::invalid_argument("the ticket names no command")),
        };
        Ok(Ok(ReadOf {
            cmd,
            body: Some(body),
        }))
    }

    /// A direct read is served in one stream only when its layout has one
    /// part; otherwise it is declined (`READ_IN_PARTS`, audited as a plan:
    /// the caller learns the number of parts, as from `GetFlightInfo`).
    async fn one_part(
        &self,
        scope: &Arc<RequestScope>,
        cmd: &Command,
        planned: &PlannedQuery,
    ) -> std::result::Result<(), Status> {
        let mut event = event_for("plan", scope, cmd);
        let layout = match cmd {
            Command::Scan(scan) => self.engine.layout(scope, scan, planned).await,
            Command::Sql(_) => self.engine.sql_layout(scope, planned).await,
        };
        let parts = match layout {
            Ok(l) => l.parts.len(),
            Err(e) => return Err(self.fail(event, e).await),
        };
        if parts <= 1 {
            return Ok(());
        }
        describe_reads(&mut event, planned);
        event.message = format!("direct read declined: {parts} parts");
        self.audit
            .record_trailing(event)
            .await
            .map_err(|e| to_status(&e))?;
        Err(Status::failed_precondition(format!(
            "{} this read has {parts} parts: ask GetFlightInfo for them and read its endpoints (in parallel)",
            veil_proto::READ_IN_PARTS
        )))
    }
}

#[tonic::async_trait]
impl DoGetMessages for VeilFlight {
    async fn do_get_messages(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Stream<Outgoing>>, Status> {
        let p = principal_of(&request)?;
        let ReadOf { cmd, body } = match self.read_of(&request, &p).await? {
            Ok(read) => read,
            Err(m) => {
                let scope = scope_of(&self.engine, &request)?;
                return self.metadata_stream(&scope, &m).await;
            }
        };
        let scope = scope_of(&self.engine, &request)?;
        let mut event = event_for("read.start", &scope, &cmd);
        // Every DoGet plans afresh under the current policies and identity;
        // a ticket from an older policy version or another identity
        // fingerprint is re-authorised here, never trusted.
        // Time windows are measured from when the read was planned, so
        // every endpoint (and retry) of one read sees the same rows.
        let at = body
            .as_ref()
            .filter(|b| b.planned_at_ms > 0)
            .and_then(|b| chrono::DateTime::from_timestamp_millis(b.planned_at_ms));
        let part = body.as_ref().and_then(|b| b.part.clone());
        let planned = match self.engine.plan(&scope, &cmd, part, at).await {
            Ok(q) => q,
            Err(e) => return Err(self.fail(event, e).await),
        };
        describe_reads(&mut event, &planned);
        match &body {
            Some(body) => {
                if body.policy_version != planned.version
                    || body.identity_fingerprint != p.fingerprint
                {
                    tracing::debug!(query_id = %body.query_id, "ticket from an older policy version or identity: re-authorised and re-planned");
                }
                let of_query = format!(
                    "part {}/{} of query {}",
                    body.part_index + 1,
                    body.part_count.max(1),
                    body.query_id
                );
                // What the plan noted (an accelerated copy served) stays.
                event.message = match event.message.is_empty() {
                    true => of_query,
                    false => format!("{of_query}; {}", event.message),
                };
            }
            None => {
                self.one_part(&scope, &cmd, &planned).await?;
                // What the plan noted (an accelerated copy served) stays.
                let id = uuid::Uuid::new_v4();
                event.message = match event.message.is_empty() {
                    true => format!("direct read {id}"),
                    false => format!("direct read {id}; {}", event.message),
                };
            }
        }
        let mut end = event.clone();
        end.event_id = uuid::Uuid::new_v4().to_string();
        end.action = "read.end".into();
        // Audit before data: nothing is streamed unless the start is
        // durable. It is queued now (so it is committed before anything
        // this read records later) and the plan runs while it commits; its
        // messages wait for the commit (`gate`).
        let recorded = self
            .audit
            .record_queued(event)
            .await
            .map_err(|e| to_status(&e))?;
        let batches = match planned.execute() {
            Ok(s) => s,
            Err(e) => {
                recorded.await.map_err(|e| to_status(&e))?;
                let _ = self.audit.record(end.failed(&e)).await;
                return Err(to_status(&e));
            }
        };
        let schema = Arc::clone(&planned.schema);
        // The client's status may quote values it may read; the read's
        // audit record keeps the error's audit form instead.
        let failure = FailureNote::default();
        let noted = failure.clone();
        let counted = batches.map_err(move |e| {
            let e = crate::error::query::from_datafusion(e);
            noted.note(&e);
            FlightError::Tonic(Box::new(to_status(&e)))
        });
        let failure_encode = failure.clone();
        let failure_size = failure.clone();
        let encoded = batch_messages::encode(
            schema,
            counted.boxed(),
            self.engine.config().max_message_bytes,
        )
        .map_err(move |e| match e {
            FlightError::Tonic(s) => *s,
            other => {
                let e = from_flight_error(other);
                failure_encode.note(&e);
                to_status(&e)
            }
        })
        .and_then(move |message| {
            // A message's size is the data's: the caller reads it, the
            // audit only that the limit was hit.
            let checked = checked_len(&message, MESSAGE_HARD_CAP_BYTES).map_err(|status| {
                failure_size.note(&VeilError::InvalidArgument(
                    "a Flight message exceeded Veil's size limit".into(),
                ));
                status
            });
            futures::future::ready(checked.map(|_| message))
        });
        // On request, a DP answer's receipt follows its data.
        let receipt = match (&cmd, &planned.dp) {
            (Command::Sql(sql), Some(slot)) if sql.privacy_receipt => Some(Arc::clone(slot)),
            _ => None,
        };
        let encoded = match receipt {
            None => encoded.boxed(),
            Some(slot) => encoded
                .chain(futures::stream::once(async move {
                    let receipt = slot.lock().ok().and_then(|r| r.clone());
                    let body = serde_json::to_vec(&receipt).map_err(|e| {
                        to_status(&VeilError::internal("encoding a privacy receipt", e))
                    })?;
                    Ok(Outgoing::from(FlightData {
                        app_metadata: body.into(),
                        ..Default::default()
                    }))
                }))
                .boxed(),
        };
        let guarded = AuditedStream {
            inner: Gated::new(recorded.boxed(), encoded).boxed(),
            audit: Some((self.audit.clone(), end)),
            ended: false,
            rows: 0,
            bytes: 0,
            started: Instant::now(),
            planned: Some(planned),
            failure,
            _in_flight: crate::memory::in_flight(),
        };
        Ok(Response::new(guarded.boxed()))
    }
}

/// Only a prepared statement's parameters may be put.
fn read_only_put() -> VeilError {
    VeilError::Unimplemented(
        "Veil serves governed data read-only: DoPut only binds a prepared statement's parameters"
            .into(),
    )
}

type Stream<T> = BoxStream<'static, std::result::Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for VeilFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    /// The caller's token was verified on the way in (the auth layer):
    /// the handshake only confirms it. No `authorization` header is sent
    /// back, so the client keeps its own token.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        let p = principal_of(&request)?;
        self.audit
            .record(AuditEvent::new("handshake", Some(&p)))
            .await
            .map_err(|e| to_status(&e))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(futures::stream::iter([Ok(reply)]).boxed()))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        let scope = scope_of(&self.engine, &request)?;
        let event = AuditEvent::new("list", Some(scope.principal()));
        // Criteria `requestable` lists the datasets open on request that
        // the caller may not read yet.
        let requestable = request.get_ref().expression.as_ref() == b"requestable";
        let datasets = self.engine.list(&scope, requestable);
        let mut infos = Vec::with_capacity(datasets.len());
        for (d, policy) in datasets {
            // A dataset whose policies can't be evaluated is listed without
            // a schema rather than hidden: the caller may know it exists.
            let schema =
                match policy.and_then(|pol| crate::policy::secure_view::output_schema(&d, &pol)) {
                    Ok(s) => s,
                    Err(_) => Schema::empty(),
                };
            let (s, t) = d.name.split_once('.').unwrap_or(("", &d.name));
            let info = FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(|e| Status::internal(format!("cannot encode a schema: {e}")))?
                .with_descriptor(FlightDescriptor::new_path(vec![
                    s.to_string(),
                    t.to_string(),
                ]))
                .with_total_records(-1)
                .with_app_metadata(d.description.clone().into_bytes());
            infos.push(Ok(info));
        }
        self.audit.record(event).await.map_err(|e| to_status(&e))?;
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        let scope = scope_of(&self.engine, &request)?;
        Ok(Response::new(
            self.info(&scope, request.into_inner()).await?,
        ))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        let scope = scope_of(&self.engine, &request)?;
        let desc = request.into_inner();
        let info = self.info(&scope, desc.clone()).await?;
        // Planning is synchronous: the poll is complete at once.
        Ok(Response::new(
            PollInfo::new().with_info(info).with_descriptor(desc),
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        let p = principal_of(&request)?;
        let scope = scope_of(&self.engine, &request)?;
        let options = IpcWriteOptions::default();
        let cmd = match self.asked("schema", &p, request.get_ref()).await? {
            Asked::Read(c) => c,
            Asked::Metadata(m) => {
                let mut event = AuditEvent::new("schema", Some(&p));
                event.message = metadata_words(&m);
                let schema = match self.sql.metadata_schema(&m) {
                    Ok(s) => s,
                    Err(e) => return Err(self.fail(event, e).await),
                };
                self.audit.record(event).await.map_err(|e| to_status(&e))?;
                let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
                    .try_into()
                    .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
                return Ok(Response::new(result));
            }
        };
        let mut event = event_for("schema", &scope, &cmd);
        let planned = match self.engine.plan(&scope, &cmd, None, None).await {
            Ok(q) => q,
            Err(e) => return Err(self.fail(event, e).await),
        };
        describe_reads(&mut event, &planned);
        self.audit.record(event).await.map_err(|e| to_status(&e))?;
        let result: SchemaResult = SchemaAsIpc::new(&planned.schema, &options)
            .try_into()
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let messages = self.do_get_messages(request).await?;
        Ok(messages.map(|m| m.map_ok(Outgoing::into_flight_data).boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        let scope = scope_of(&self.engine, &request)?;
        let p = Arc::clone(scope.principal());
        let mut stream = request.into_inner();
        // The first message names what is put: only a Flight SQL prepared
        // statement's parameters are taken.
        let first = match stream.message().await {
            Ok(Some(first)) => first,
            Ok(None) => {
                return Err(self
                    .fail(
                        AuditEvent::new("bind", Some(&p)),
                        VeilError::InvalidArgument("DoPut sent no data".into()),
                    )
                    .await);
            }
            Err(status) => {
                let e = VeilError::from_code(status.code(), status.message().to_string());
                return Err(self.fail(AuditEvent::new("bind", Some(&p)), e).await);
            }
        };
        let asked = match &first.flight_descriptor {
            Some(desc) => self.asked("bind", &p, desc).await,
            None => Err(self
                .fail(
                    AuditEvent::new("bind", Some(&p)),
                    VeilError::InvalidArgument("DoPut's first message names no descriptor".into()),
                )
                .await),
        };
        let handle = match (asked, first.flight_descriptor.as_ref()) {
            (Ok(Asked::Read(Command::Sql(_))), Some(desc)) => match flight_sql::decode(&desc.cmd) {
                Some(Ok(SqlCommandKind::CommandPreparedStatementQuery(h))) => {
                    h.prepared_statement_handle
                }
                _ => {
                    return Err(self
                        .fail(AuditEvent::new("bind", Some(&p)), read_only_put())
                        .await);
                }
            },
            (Ok(_), _) => {
                return Err(self
                    .fail(AuditEvent::new("bind", Some(&p)), read_only_put())
                    .await);
            }
            (Err(status), _) => return Err(status),
        };
        let data = flight_sql::flight_data_stream(
            futures::stream::once(futures::future::ready(Ok(first))).chain(stream),
        );
        let (handle, command) = match self.sql.bind(&scope, &handle, data.boxed()).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail(AuditEvent::new("bind", Some(&p)), e).await),
        };
        let mut event = event_for("bind", &scope, &Command::Sql(command));
        event.message = "parameters bound to a prepared statement".into();
        self.audit.record(event).await.map_err(|e| to_status(&e))?;
        let result = PutResult {
            app_metadata: FlightSql::bound(handle).into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        let p = principal_of(&request)?;
        Err(self
            .fail(
                AuditEvent::new("exchange", Some(&p)),
                VeilError::Unimplemented(
                    "Veil serves data read-only; DoExchange is not supported".into(),
                ),
            )
            .await)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        let scope = scope_of(&self.engine, &request)?;
        let action = request.into_inner();
        let results = if FlightSql::handles(&action.r#type) {
            self.sql_action(&scope, &action).await?
        } else {
            self.actions.run(&scope, &action).await?
        };
        Ok(Response::new(
            futures::stream::iter(
                results
                    .into_iter()
                    .map(|b| Ok(arrow_flight::Result::new(b))),
            )
            .boxed(),
        ))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        let p = principal_of(&request)?;
        self.audit
            .record(AuditEvent::new("list_actions", Some(&p)))
            .await
            .map_err(|e| to_status(&e))?;
        let list: Vec<_> = FlightActions::catalog()
            .into_iter()
            .chain(flight_sql::ACTION_TYPES.iter().map(|(a, d)| ActionType {
                r#type: a.to_string(),
                description: d.to_string(),
            }))
            .map(Ok)
            .collect();
        Ok(Response::new(futures::stream::iter(list).boxed()))
    }
}

/// Counts what was served and records the read's end when the stream
/// finishes, fails, or is dropped (client cancelled or disconnected).
struct AuditedStream {
    inner: Stream<Outgoing>,
    /// The inner stream has ended.
    ended: bool,
    audit: Option<(AuditLog, AuditEvent)>,
    rows: u64,
    bytes: u64,
    started: Instant,
    /// Keeps the plan (and its memory reservations) alive while streaming.
    planned: Option<PlannedQuery>,
    failure: FailureNote,
    /// The node is not idle while a read streams (`crate::memory`).
    _in_flight: crate::memory::InFlight,
}

/// The audit form of the error that ended a stream, noted where the error
/// is still a [`VeilError`] (the stream itself carries only its status).
#[derive(Debug, Clone, Default)]
struct FailureNote(Arc<std::sync::Mutex<Option<String>>>);

impl FailureNote {
    fn note(&self, e: &VeilError) {
        let mut slot = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert_with(|| e.audit_message());
    }

    fn take(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// An error of the Flight encoder: Arrow's by cause, the rest Veil's bug.
fn from_flight_error(e: FlightError) -> VeilError {
    match e {
        FlightError::Arrow(a) => crate::error::query::from_arrow(a),
        FlightError::Tonic(s) => VeilError::from_code(s.code(), s.message().to_string()),
        FlightError::NotYetImplemented(_)
        | FlightError::ProtocolError(_)
        | FlightError::DecodeError(_)
        | FlightError::ExternalError(_) => VeilError::internal("encoding a batch failed", e),
    }
}

impl AuditedStream {
    fn finish(&mut self, status: &str, message: Option<String>) {
        let Some((audit, mut event)) = self.audit.take() else {
            return;
        };
        let receipt = self
            .planned
            .as_ref()
            .and_then(|p| p.dp.as_ref())
            .and_then(|slot| slot.lock().ok().and_then(|r| r.clone()));
        self.planned = None;
        event.rows = Some(self.rows);
        event.bytes = Some(self.bytes);
        event.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        event.status = status.to_string();
        if let Some(m) = message {
            event.message = m;
        }
        if let Some(r) = receipt {
            event.message = format!("{}; {}", event.message, r.audit_note());
        }
        event.time_ms = now_ms();
        tracing::info!(
            user = %event.subject,
            dataset = event.dataset.as_deref().unwrap_or(""),
            rows = self.rows,
            bytes = self.bytes,
            ms = event.duration_ms.unwrap_or(0),
            status,
            "read finished"
        );
        let record = async move {
            if let Err(e) = audit.record_trailing(event).await {
                tracing::error!(error = %e, "could not record the end of a read");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(record);
            }
            Err(_) => tracing::error!("no runtime to record the end of a read"),
        }
    }
}

impl futures::Stream for AuditedStream {
    type Item = std::result::Result<Outgoing, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            this.finish("ok", None);
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(message))) => {
                this.bytes += (message.body_len() + message.data.data_header.len()) as u64;
                if let Some(n) = record_batch_rows(&message.data) {
                    this.rows += n;
                }
                Poll::Ready(Some(Ok(message)))
            }
            Poll::Ready(Some(Err(status))) => {
                // Statuses not noted are Veil's own (the message size check).
                let message = this
                    .failure
                    .take()
                    .unwrap_or_else(|| status.message().chars().take(512).collect());
                this.finish(crate::error::status_word(status.code()), Some(message));
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => {
                // The inner stream ended: it is not polled again.
                this.ended = true;
                this.finish("ok", None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for AuditedStream {
    fn drop(&mut self) {
        self.finish(
            "cancelled",
            Some("the client stopped reading before the end".into()),
        );
    }
}

/// Row count of a FlightData carrying a record batch.
fn record_batch_rows(data: &FlightData) -> Option<u64> {
    let msg = datafusion::arrow::ipc::root_as_message(&data.data_header).ok()?;
    msg.header_as_record_batch()
        .map(|b| b.length().max(0) as u64)
}
