//! A Rust client for Veil, over arrow-flight.
//!
//! ```no_run
//! # async fn demo() -> Result<(), veil_client::ClientError> {
//! let mut conn = veil_client::Connection::connect("grpc://127.0.0.1:8815", "<jwt>").await?;
//! let batches = conn.scan("clinical.trials", veil_client::Scan::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Each endpoint of a result is read on its own task, so large scans are read
//! in parallel. An endpoint that names locations is read from the first of
//! them that answers (arrow-rs's `FlightClient` ignores locations), over a
//! connection with the same token and TLS settings.

use arrow::record_batch::RecordBatch;
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use veil_proto::{
    ActionAck, AttributeValues, AuditTailRequest, DatasetDescription, DecideAccessRequest,
    DeletePolicyRequest, DeleteUserRequest, DescribeRequest, DropDatasetRequest, ExplainRequest,
    ListAccessRequestsRequest, ListPoliciesRequest, ListUsersRequest, Named, PermissionRequest,
    PolicyWriteRequest, PutUserRequest, RegisterDatasetRequest, ReloadRequest,
    RequestAccessRequest, RevokeAccessRequest, ScanCommand, SearchHit, SearchRequest,
    SetColumnTagsRequest, SetDescriptionRequest, SetUserDisabledRequest, SqlCommand, UserEntry,
    UserRef, WhoAmI, actions,
};

/// Errors from the client; server errors keep their gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to Veil at {address}: {}; {}",
        causes(source),
        connect_advice(source)
    )]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("flight error: {0}")]
    Flight(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Whether `status` declines a direct read that has several parts.
fn in_parts(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.message().starts_with(veil_proto::READ_IN_PARTS)
}

impl From<arrow_flight::error::FlightError> for ClientError {
    fn from(e: arrow_flight::error::FlightError) -> Self {
        match e {
            arrow_flight::error::FlightError::Tonic(s) => ClientError::Status(*s),
            other => ClientError::Flight(other.to_string()),
        }
    }
}

impl ClientError {
    /// The gRPC code when the server answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// What to read from a dataset.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub columns: Vec<String>,
    pub filter: Option<String>,
    pub limit: Option<u64>,
}

impl Scan {
    /// Keep rows matching one SQL expression over the columns you see.
    pub fn with_filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Read only these columns.
    pub fn with_columns(mut self, columns: &[&str]) -> Self {
        self.columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// The URI tonic connects to for a Flight `address`, and whether it is TLS.
/// The same rules as the Python client: `grpc://` and `grpc+tcp://` are
/// plaintext, `grpc+tls://` is TLS, `host:port` alone means
/// `grpc://host:port`; other schemes, and an address without a port, are
/// refused with what to write instead.
fn flight_uri(address: &str) -> Result<(String, bool), ClientError> {
    let address = address.trim();
    let (scheme, rest) = address.split_once("://").unwrap_or(("grpc", address));
    let tls = match scheme {
        "grpc" | "grpc+tcp" => false,
        "grpc+tls" => true,
        "grpc+unix" => {
            return Err(ClientError::Invalid(format!(
                "'{address}': grpc+unix:// is not supported by this client; use grpc://host:port"
            )));
        }
        _ => {
            return Err(ClientError::Invalid(format!(
                "'{address}' is not a Flight address ({scheme}:// is not spoken): use grpc://{rest} for a server without TLS, or grpc+tls://{rest} with TLS"
            )));
        }
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.find(']') {
        // [IPv6]:port
        Some(end) if authority.starts_with('[') => {
            let (host, after) = authority.split_at(end + 1);
            (host, after.strip_prefix(':').unwrap_or(""))
        }
        _ => authority.split_once(':').unwrap_or((authority, "")),
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClientError::Invalid(format!(
            "'{address}' has no port: write {scheme}://{host}:PORT (the demo listens on 8815)"
        )));
    }
    let transport = if tls { "https" } else { "http" };
    Ok((format!("{transport}://{rest}"), tls))
}

/// A connection to one Veil server.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    token: String,
    address: String,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

/// A location that means "the connection you already have" (Flight spec).
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl Connection {
    /// Connect to `grpc://host:port` (plaintext) or `grpc+tls://host:port`
    /// (TLS, verified against the system's trust roots; `SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured). `host:port` alone means
    /// `grpc://host:port`, as in the Python client.
    pub async fn connect(address: &str, token: &str) -> Result<Self, ClientError> {
        Self::open(address, token, None).await
    }

    /// Connect over TLS (`grpc+tls://host:port`), trusting `ca_pem` (instead
    /// of the system's roots) for the server named `domain`.
    pub async fn connect_tls(
        address: &str,
        token: &str,
        ca_pem: &[u8],
        domain: &str,
    ) -> Result<Self, ClientError> {
        use tonic::transport::{Certificate, ClientTlsConfig};
        if !flight_uri(address)?.1 {
            return Err(ClientError::Invalid(format!(
                "a CA certificate was given for '{address}', which is not a TLS address: write grpc+tls://host:port"
            )));
        }
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(domain);
        Self::open(address, token, Some(tls)).await
    }

    /// `tls`: the CA given to [`Connection::connect_tls`], used for TLS
    /// addresses (a plaintext one, such as an endpoint's location, ignores
    /// it); without it a TLS address trusts the system's roots.
    async fn open(
        address: &str,
        token: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, ClientError> {
        let failed = |source| ClientError::Connect {
            address: address.into(),
            source,
        };
        let (uri, is_tls) = flight_uri(address)?;
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(failed)?
            .tcp_nodelay(true);
        if is_tls {
            let config = tls
                .clone()
                .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
            endpoint = endpoint.tls_config(config).map_err(failed)?;
        }
        let channel = endpoint.connect().await.map_err(failed)?;
        Ok(Self {
            channel,
            token: token.to_string(),
            address: address.to_string(),
            tls,
        })
    }

    /// The connection to read an endpoint from: this one when the endpoint
    /// names no location (or this server, or "reuse"); otherwise the first
    /// location that accepts a connection.
    async fn for_locations(&self, locations: &[String]) -> Result<Self, ClientError> {
        if locations.is_empty()
            || locations
                .iter()
                .any(|l| l == REUSE_CONNECTION || same_address(l, &self.address))
        {
            return Ok(self.clone());
        }
        let mut last = None;
        // Over TLS, the token never goes to a plaintext location.
        let tls = flight_uri(&self.address).is_ok_and(|(_, tls)| tls);
        for l in locations {
            if tls && !flight_uri(l).is_ok_and(|(_, tls)| tls) {
                last = Some(ClientError::Invalid(format!(
                    "the endpoint's location {l} is not TLS, and this connection is: not sent the token"
                )));
                continue;
            }
            match Self::open(l, &self.token, self.tls.clone()).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| ClientError::Flight("an endpoint has no usable location".into())))
    }

    fn client(&self) -> Result<FlightClient, ClientError> {
        let inner =
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel.clone())
                .max_decoding_message_size(MAX_MESSAGE);
        let mut c = FlightClient::new_from_inner(inner);
        let v: MetadataValue<_> = format!("Bearer {}", self.token).parse().map_err(|_| {
            ClientError::Invalid("the token has characters not allowed in a header".into())
        })?;
        c.metadata_mut().insert("authorization", v);
        Ok(c)
    }

    /// Datasets you may see, as `schema.name`.
    pub async fn list_datasets(&self) -> Result<Vec<String>, ClientError> {
        let infos: Vec<FlightInfo> = self
            .client()?
            .list_flights(bytes::Bytes::new())
            .await?
            .try_collect()
            .await?;
        Ok(infos
            .into_iter()
            .filter_map(|i| i.flight_descriptor.map(|d| d.path.join(".")))
            .collect())
    }

    /// Plan a read; the returned info's endpoints carry the tickets.
    pub async fn flight_info(
        &self,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, ClientError> {
        Ok(self.client()?.get_flight_info(descriptor).await?)
    }

    /// The policy-applied schema of a read.
    pub async fn schema(
        &self,
        descriptor: FlightDescriptor,
    ) -> Result<arrow::datatypes::Schema, ClientError> {
        Ok(self.client()?.get_schema(descriptor).await?)
    }

    /// Plan a scan; the info's endpoints carry the tickets.
    pub async fn scan_info(&self, dataset: &str, scan: &Scan) -> Result<FlightInfo, ClientError> {
        self.flight_info(scan_descriptor(dataset, scan)).await
    }

    /// Read one ticket.
    pub async fn read_ticket(&self, ticket: Ticket) -> Result<Vec<RecordBatch>, ClientError> {
        Ok(self.client()?.do_get(ticket).await?.try_collect().await?)
    }

    /// Read every endpoint of `info` in parallel; batches in endpoint order
    /// (a read dealt to endpoints in runs, `ReadNotes.dealt_rows`, in the
    /// files' order: the runs taken from the endpoints in turn).
    pub async fn read_all(&self, info: FlightInfo) -> Result<Vec<RecordBatch>, ClientError> {
        let runs = veil_proto::ReadNotes::decode(info.app_metadata.as_ref())
            .map(|n| n.dealt_rows)
            .unwrap_or(0);
        let tasks: Vec<_> = info
            .endpoint
            .into_iter()
            .map(|ep| {
                let conn = self.clone();
                tokio::spawn(async move {
                    let ticket = ep
                        .ticket
                        .ok_or_else(|| ClientError::Flight("an endpoint has no ticket".into()))?;
                    let locations: Vec<String> = ep.location.into_iter().map(|l| l.uri).collect();
                    conn.for_locations(&locations)
                        .await?
                        .read_ticket(ticket)
                        .await
                })
            })
            .collect();
        let mut parts = Vec::with_capacity(tasks.len());
        for t in tasks {
            parts.push(
                t.await
                    .map_err(|e| ClientError::Flight(format!("reader task failed: {e}")))??,
            );
        }
        Ok(match usize::try_from(runs) {
            Ok(runs) if runs > 0 && parts.len() > 1 => in_runs(parts, runs),
            _ => parts.into_iter().flatten().collect(),
        })
    }

    /// Read a dataset through your policies.
    pub async fn scan(&self, dataset: &str, scan: Scan) -> Result<Vec<RecordBatch>, ClientError> {
        let info = self.scan_info(dataset, &scan).await?;
        self.read_all(info).await
    }

    /// Run one read-only SELECT over your catalog: in one call (a direct
    /// read), or, when the server answers that the read has several parts,
    /// through `GetFlightInfo` and its endpoints in parallel.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, ClientError> {
        let descriptor = sql_descriptor(query);
        match self.read_direct(&descriptor.cmd).await {
            Err(ClientError::Status(s)) if in_parts(&s) => {}
            done => return done,
        }
        let info = self.flight_info(descriptor).await?;
        self.read_all(info).await
    }

    /// Read a command (a CMD descriptor's bytes) in one `DoGet`, without
    /// `GetFlightInfo` (README, "Direct reads"). A read that has several
    /// parts is declined: `FAILED_PRECONDITION`, `[READ_IN_PARTS]`.
    pub async fn read_direct(&self, command: &[u8]) -> Result<Vec<RecordBatch>, ClientError> {
        let mut ticket = veil_proto::DIRECT_TICKET_PREFIX.to_vec();
        ticket.extend_from_slice(command);
        self.read_ticket(Ticket::new(ticket)).await
    }

    /// Run an action; returns the result bodies.
    pub async fn action(
        &self,
        name: &str,
        body: Vec<u8>,
    ) -> Result<Vec<bytes::Bytes>, ClientError> {
        Ok(self
            .client()?
            .do_action(Action::new(name, body))
            .await?
            .try_collect()
            .await?)
    }

    pub async fn describe(&self, dataset: &str) -> Result<DatasetDescription, ClientError> {
        let out = self
            .action(
                actions::DESCRIBE,
                DescribeRequest {
                    dataset: dataset.into(),
                }
                .encode_to_vec(),
            )
            .await?;
        let first = out
            .first()
            .ok_or_else(|| ClientError::Flight("describe returned nothing".into()))?;
        DatasetDescription::decode(first.as_ref()).map_err(|e| ClientError::Flight(e.to_string()))
    }

    /// Datasets you can see whose name, description, tags, owners, experts or columns
    /// contain every word of `query`, best first (`limit` 0: 50).
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<SearchHit>, ClientError> {
        self.action(
            actions::SEARCH,
            SearchRequest {
                query: query.into(),
                limit,
            }
            .encode_to_vec(),
        )
        .await?
        .iter()
        .map(|b| SearchHit::decode(b.as_ref()).map_err(|e| ClientError::Flight(e.to_string())))
        .collect()
    }

    /// A few rows of a dataset as you may read them (policies applied).
    pub async fn preview(&self, dataset: &str, rows: u64) -> Result<Vec<RecordBatch>, ClientError> {
        self.scan(dataset, Scan::default().with_limit(rows)).await
    }

    /// Run an action whose answer is one acknowledgement; returns its text.
    async fn acknowledged(&self, name: &str, body: Vec<u8>) -> Result<String, ClientError> {
        let out = self.action(name, body).await?;
        let first = out
            .first()
            .ok_or_else(|| ClientError::Flight(format!("{name} returned nothing")))?;
        Ok(ActionAck::decode(first.as_ref())
            .map_err(|e| ClientError::Flight(e.to_string()))?
            .message)
    }

    /// Register a dataset you own: files under a configured root (`format`,
    /// `location`), or a database relation (`connection` and `table` or
    /// `query`).
    pub async fn register_dataset(
        &self,
        request: RegisterDatasetRequest,
    ) -> Result<String, ClientError> {
        self.acknowledged(actions::REGISTER_DATASET, request.encode_to_vec())
            .await
    }

    pub async fn drop_dataset(&self, name: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::DROP_DATASET,
            DropDatasetRequest { name: name.into() }.encode_to_vec(),
        )
        .await
    }

    /// Set a dataset's description (`column` None) or a column's.
    pub async fn set_description(
        &self,
        dataset: &str,
        column: Option<&str>,
        description: &str,
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::SET_DESCRIPTION,
            SetDescriptionRequest {
                dataset: dataset.into(),
                column: column.unwrap_or_default().into(),
                description: description.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    pub async fn set_column_tags(
        &self,
        dataset: &str,
        column: &str,
        tags: &[String],
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::SET_COLUMN_TAGS,
            SetColumnTagsRequest {
                dataset: dataset.into(),
                column: column.into(),
                tags: tags.to_vec(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Create or replace a user's directory entry.
    pub async fn put_user(
        &self,
        user: UserRef,
        groups: &[String],
        attributes: &[(String, Vec<String>)],
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::PUT_USER,
            PutUserRequest {
                user: Some(user),
                groups: groups.to_vec(),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| AttributeValues {
                        key: k.clone(),
                        values: v.clone(),
                    })
                    .collect(),
            }
            .encode_to_vec(),
        )
        .await
    }

    pub async fn delete_user(&self, user: UserRef) -> Result<String, ClientError> {
        self.acknowledged(
            actions::DELETE_USER,
            DeleteUserRequest { user: Some(user) }.encode_to_vec(),
        )
        .await
    }

    pub async fn list_users(&self) -> Result<Vec<UserEntry>, ClientError> {
        self.action(actions::LIST_USERS, ListUsersRequest {}.encode_to_vec())
            .await?
            .iter()
            .map(|b| UserEntry::decode(b.as_ref()).map_err(|e| ClientError::Flight(e.to_string())))
            .collect()
    }

    pub async fn set_user_disabled(
        &self,
        user: UserRef,
        disabled: bool,
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::SET_USER_DISABLED,
            SetUserDisabledRequest {
                user: Some(user),
                disabled,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Grant a permission (GOVERNANCE, CREATE_DATA_SOURCE, USER_ADMIN, AUDIT).
    pub async fn grant(&self, user: UserRef, permission: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::GRANT_PERMISSION,
            PermissionRequest {
                user: Some(user),
                permission: permission.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    pub async fn revoke(&self, user: UserRef, permission: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::REVOKE_PERMISSION,
            PermissionRequest {
                user: Some(user),
                permission: permission.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Ask the server to re-read its config file.
    pub async fn reload(&self) -> Result<String, ClientError> {
        self.acknowledged(actions::RELOAD, ReloadRequest {}.encode_to_vec())
            .await
    }

    /// The most recent audit events, oldest first, as JSON objects.
    pub async fn audit_tail(&self, limit: u32) -> Result<Vec<String>, ClientError> {
        self.action(
            actions::AUDIT_TAIL,
            AuditTailRequest { limit }.encode_to_vec(),
        )
        .await?
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).map_err(|e| ClientError::Flight(e.to_string())))
        .collect()
    }

    /// Results that are JSON documents, as text.
    async fn json_results(&self, name: &str, body: Vec<u8>) -> Result<Vec<String>, ClientError> {
        self.action(name, body)
            .await?
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).map_err(|e| ClientError::Flight(e.to_string())))
            .collect()
    }

    /// The one JSON document an action answers.
    async fn json_result(&self, name: &str, body: Vec<u8>) -> Result<String, ClientError> {
        self.json_results(name, body)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Flight(format!("{name} returned nothing")))
    }

    /// Datasets open on request that you may not read yet.
    pub async fn list_requestable(&self) -> Result<Vec<String>, ClientError> {
        let infos: Vec<FlightInfo> = self
            .client()?
            .list_flights(bytes::Bytes::from_static(b"requestable"))
            .await?
            .try_collect()
            .await?;
        Ok(infos
            .into_iter()
            .filter_map(|i| i.flight_descriptor.map(|d| d.path.join(".")))
            .collect())
    }

    /// Create a policy from its JSON form (a `[[policies]]` entry).
    pub async fn create_policy(&self, spec_json: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::CREATE_POLICY,
            PolicyWriteRequest {
                spec_json: spec_json.into(),
                expected_version: 0,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Replace a runtime policy; with `expected_version`, only if nobody
    /// changed it since.
    pub async fn update_policy(
        &self,
        spec_json: &str,
        expected_version: Option<u64>,
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::UPDATE_POLICY,
            PolicyWriteRequest {
                spec_json: spec_json.into(),
                expected_version: expected_version.unwrap_or(0),
            }
            .encode_to_vec(),
        )
        .await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::DELETE_POLICY,
            DeletePolicyRequest {
                name: name.into(),
                expected_version: 0,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Policies you govern or that apply to datasets you own, and (for data
    /// owners) every global policy (JSON each);
    /// `dataset` limits them to one dataset's.
    pub async fn list_policies(&self, dataset: Option<&str>) -> Result<Vec<String>, ClientError> {
        self.json_results(
            actions::LIST_POLICIES,
            ListPoliciesRequest {
                dataset: dataset.unwrap_or_default().into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// What `request.user` gets from `request.dataset`, and why (JSON).
    pub async fn explain(&self, request: ExplainRequest) -> Result<String, ClientError> {
        self.json_result(actions::EXPLAIN, request.encode_to_vec())
            .await
    }

    /// Profile columns of a dataset you own (or govern) for
    /// k-anonymization: distinct values, the data's k, a suggested k (JSON).
    /// Name the people to ask about a dataset you own (replaces the list;
    /// none clears it).
    pub async fn set_experts(
        &self,
        dataset: &str,
        experts: Vec<UserRef>,
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::SET_EXPERTS,
            veil_proto::SetExpertsRequest {
                dataset: dataset.into(),
                experts,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Keep a local copy of a database dataset you own and serve reads from
    /// it while fresh (`request.off`: stop).
    pub async fn accelerate(
        &self,
        request: veil_proto::AccelerateRequest,
    ) -> Result<String, ClientError> {
        self.acknowledged(actions::ACCELERATE, request.encode_to_vec())
            .await
    }

    /// Differential privacy budgets this period (JSON each): yours
    /// (owners, governors, auditors: the dataset's and every user's too).
    /// `dataset` `None`: every dataset under such a policy you may read.
    pub async fn dp_budget(&self, dataset: Option<&str>) -> Result<Vec<String>, ClientError> {
        self.json_results(
            actions::DP_BUDGET,
            veil_proto::DpBudgetRequest {
                dataset: dataset.unwrap_or_default().into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Refresh an accelerated dataset's copy now (on the node answering).
    pub async fn refresh(&self, dataset: &str) -> Result<String, ClientError> {
        self.acknowledged(
            actions::REFRESH,
            veil_proto::RefreshRequest {
                dataset: dataset.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Sample a dataset you own (or govern) and propose column tags: the
    /// JSON report (proposals with confidence and evidence, never values).
    /// `sample_rows` and `min_confidence` 0: the server's defaults.
    pub async fn discover(
        &self,
        dataset: &str,
        sample_rows: u32,
        min_confidence: u32,
    ) -> Result<String, ClientError> {
        self.json_result(
            actions::DISCOVER,
            veil_proto::DiscoverRequest {
                dataset: dataset.into(),
                sample_rows,
                min_confidence,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Accept (optionally under your own tag) or reject a tag discovery
    /// proposed for a column; returns the acknowledgement.
    pub async fn decide_tag_proposal(
        &self,
        dataset: &str,
        column: &str,
        tag: &str,
        accept: bool,
        tag_as: Option<&str>,
    ) -> Result<String, ClientError> {
        self.acknowledged(
            actions::DECIDE_TAG_PROPOSAL,
            veil_proto::DecideTagProposalRequest {
                dataset: dataset.into(),
                column: column.into(),
                tag: tag.into(),
                accept,
                tag_as: tag_as.unwrap_or_default().into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    pub async fn profile_k_anonymity(
        &self,
        dataset: &str,
        columns: &[&str],
    ) -> Result<String, ClientError> {
        self.json_result(
            actions::PROFILE_K_ANONYMITY,
            veil_proto::ProfileKAnonymityRequest {
                dataset: dataset.into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Ask to see the originals of masked values of a column under a
    /// reversible or format-preserving mask; returns the request (JSON).
    pub async fn request_unmask(
        &self,
        dataset: &str,
        column: &str,
        values: &[String],
        reason: &str,
    ) -> Result<String, ClientError> {
        self.json_result(
            actions::REQUEST_UNMASK,
            veil_proto::RequestUnmaskRequest {
                dataset: dataset.into(),
                column: column.into(),
                values: values.to_vec(),
                reason: reason.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Approve (or deny) a pending unmask request; returns it (JSON).
    pub async fn decide_unmask(
        &self,
        request_id: &str,
        approve: bool,
        note: &str,
    ) -> Result<String, ClientError> {
        let name = if approve {
            actions::APPROVE_UNMASK
        } else {
            actions::DENY_UNMASK
        };
        self.decide(name, request_id, note).await
    }

    /// Unmask requests you may decide, and your own (JSON each).
    pub async fn list_unmask_requests(
        &self,
        dataset: Option<&str>,
        all: bool,
    ) -> Result<Vec<String>, ClientError> {
        self.list_requests(actions::LIST_UNMASK_REQUESTS, dataset, all)
            .await
    }

    /// The originals of your approved unmask request (JSON).
    pub async fn unmask_result(&self, request_id: &str) -> Result<String, ClientError> {
        self.json_result(
            actions::UNMASK_RESULT,
            veil_proto::UnmaskResultRequest {
                request_id: request_id.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Ask to read a dataset open on request; returns the request (JSON).
    pub async fn request_access(&self, dataset: &str, reason: &str) -> Result<String, ClientError> {
        self.json_result(
            actions::REQUEST_ACCESS,
            RequestAccessRequest {
                dataset: dataset.into(),
                reason: reason.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Approve (`approve`) or deny a pending request; returns it (JSON).
    pub async fn decide_access(
        &self,
        request_id: &str,
        approve: bool,
        note: &str,
    ) -> Result<String, ClientError> {
        let name = if approve {
            actions::APPROVE_ACCESS
        } else {
            actions::DENY_ACCESS
        };
        self.decide(name, request_id, note).await
    }

    /// Approve or deny a request through action `name`.
    async fn decide(
        &self,
        name: &str,
        request_id: &str,
        note: &str,
    ) -> Result<String, ClientError> {
        self.json_result(
            name,
            DecideAccessRequest {
                request_id: request_id.into(),
                note: note.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Requests listed by action `name`.
    async fn list_requests(
        &self,
        name: &str,
        dataset: Option<&str>,
        all: bool,
    ) -> Result<Vec<String>, ClientError> {
        self.json_results(
            name,
            ListAccessRequestsRequest {
                dataset: dataset.unwrap_or_default().into(),
                all,
            }
            .encode_to_vec(),
        )
        .await
    }

    /// Access requests you may decide, and your own (JSON each).
    pub async fn list_access_requests(
        &self,
        dataset: Option<&str>,
        all: bool,
    ) -> Result<Vec<String>, ClientError> {
        self.list_requests(actions::LIST_ACCESS_REQUESTS, dataset, all)
            .await
    }

    /// Withdraw a user's approved access to a dataset.
    pub async fn revoke_access(
        &self,
        dataset: &str,
        user: UserRef,
        note: &str,
    ) -> Result<String, ClientError> {
        self.json_result(
            actions::REVOKE_ACCESS,
            RevokeAccessRequest {
                dataset: dataset.into(),
                user: Some(user),
                note: note.into(),
            }
            .encode_to_vec(),
        )
        .await
    }

    /// The actions the server offers, with what each does.
    pub async fn list_actions(&self) -> Result<Vec<(String, String)>, ClientError> {
        Ok(self
            .client()?
            .list_actions()
            .await?
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .map(|a| (a.r#type, a.description))
            .collect())
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        let out = self.action(actions::WHOAMI, vec![]).await?;
        let first = out
            .first()
            .ok_or_else(|| ClientError::Flight("whoami returned nothing".into()))?;
        WhoAmI::decode(first.as_ref()).map_err(|e| ClientError::Flight(e.to_string()))
    }
}

/// The descriptor of a scan.
pub fn scan_descriptor(dataset: &str, scan: &Scan) -> FlightDescriptor {
    let cmd = ScanCommand {
        dataset: dataset.into(),
        columns: scan.columns.clone(),
        filter: scan.filter.clone().unwrap_or_default(),
        limit: scan.limit,
    };
    FlightDescriptor::new_cmd(cmd.to_any_bytes())
}

/// The descriptor of a SQL query.
pub fn sql_descriptor(query: &str) -> FlightDescriptor {
    FlightDescriptor::new_cmd(
        SqlCommand {
            query: query.into(),
            ..Default::default()
        }
        .to_any_bytes(),
    )
}

/// Whether a location names the server this connection already talks to.
fn same_address(location: &str, address: &str) -> bool {
    fn strip(a: &str) -> &str {
        a.trim_end_matches('/')
            .trim_start_matches("grpc+tls://")
            .trim_start_matches("grpc+tcp://")
            .trim_start_matches("grpc://")
    }
    strip(location) == strip(address)
}

/// An error and its causes, "a: b: c" (tonic's own text is only "transport error").
/// What to check when a connection failed: the certificate when TLS
/// refused it, else the address and its scheme.
fn connect_advice(e: &dyn std::error::Error) -> &'static str {
    let text = causes(e).to_lowercase();
    if text.contains("notvalidforname") || text.contains("not valid for name") {
        "the server's TLS certificate does not name the host in the address: connect by a name it carries (veil admin --tls-domain NAME with --ca-file)"
    } else if text.contains("certificate") {
        "the server's TLS certificate is not trusted here: give the CA that signed it (veil admin --ca-file PEM, or SSL_CERT_FILE=PEM)"
    } else {
        "check that the server runs there and that the scheme matches it (grpc:// for plaintext, grpc+tls:// for TLS)"
    }
}

fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The batches of dealt endpoints in the files' order: `runs` rows of each
/// endpoint in turn (slices, no copy). Endpoint i holds runs i, i + n, ...:
/// once one has run out every later one has, so anything left (nothing,
/// unless the server dealt otherwise) follows in endpoint order, never
/// dropped.
fn in_runs(parts: Vec<Vec<RecordBatch>>, runs: usize) -> Vec<RecordBatch> {
    struct Rows {
        batches: std::collections::VecDeque<RecordBatch>,
    }
    impl Rows {
        fn take(&mut self, mut n: usize, out: &mut Vec<RecordBatch>) -> bool {
            while n > 0 {
                let Some(b) = self.batches.pop_front() else {
                    return false;
                };
                if b.num_rows() > n {
                    self.batches.push_front(b.slice(n, b.num_rows() - n));
                    out.push(b.slice(0, n));
                    return true;
                }
                n -= b.num_rows();
                out.push(b);
            }
            true
        }
    }
    let mut rows: Vec<Rows> = parts
        .into_iter()
        .map(|p| Rows {
            batches: p.into_iter().filter(|b| b.num_rows() > 0).collect(),
        })
        .collect();
    let mut out = Vec::new();
    'turns: loop {
        for r in rows.iter_mut() {
            if r.batches.is_empty() || !r.take(runs, &mut out) {
                break 'turns;
            }
        }
    }
    for r in rows {
        out.extend(r.batches);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs dealt round-robin, in batches cut anywhere, come back in order.
    #[test]
    fn dealt_runs_are_put_back_in_order() {
        use arrow::array::{AsArray, Int64Array};
        use arrow::datatypes::{DataType, Field, Int64Type, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .unwrap()
        };
        for (total, count, runs) in [(23i64, 3usize, 4usize), (12, 2, 3), (5, 4, 2), (0, 2, 3)] {
            let mut dealt: Vec<Vec<i64>> = vec![Vec::new(); count];
            for p in 0..total {
                dealt[(p as usize / runs) % count].push(p);
            }
            // Each endpoint's rows in batches of 1, 2, 3, ... rows.
            let parts: Vec<Vec<RecordBatch>> = dealt
                .into_iter()
                .map(|ids| {
                    let mut out = Vec::new();
                    let (mut at, mut len) = (0, 1);
                    while at < ids.len() {
                        let end = (at + len).min(ids.len());
                        out.push(batch(ids[at..end].to_vec()));
                        at = end;
                        len += 1;
                    }
                    out
                })
                .collect();
            let got: Vec<i64> = in_runs(parts, runs)
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            assert_eq!(
                got,
                (0..total).collect::<Vec<_>>(),
                "{total} {count} {runs}"
            );
        }
    }

    fn refused(address: &str) -> String {
        match flight_uri(address) {
            Err(ClientError::Invalid(m)) => m,
            other => panic!("{address}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn addresses_read_like_the_python_clients() {
        let ok = |a: &str| flight_uri(a).unwrap();
        assert_eq!(
            ok("grpc://127.0.0.1:8815"),
            ("http://127.0.0.1:8815".into(), false)
        );
        assert_eq!(ok("grpc+tcp://h:1"), ("http://h:1".into(), false));
        assert_eq!(
            ok("grpc+tls://veil.example:443"),
            ("https://veil.example:443".into(), true)
        );
        // host:port alone is grpc://host:port
        assert_eq!(
            ok(" 127.0.0.1:8815 "),
            ("http://127.0.0.1:8815".into(), false)
        );
        assert_eq!(ok("grpc://[::1]:8815"), ("http://[::1]:8815".into(), false));

        let m = refused("http://127.0.0.1:8815");
        assert!(m.contains("http:// is not spoken"), "{m}");
        assert!(
            m.contains("grpc://127.0.0.1:8815") && m.contains("grpc+tls://127.0.0.1:8815"),
            "{m}"
        );
        assert!(refused("https://h:1").contains("https:// is not spoken"));
        assert!(refused("grpc+unix:///tmp/s").contains("not supported"));
        for no_port in [
            "grpc://127.0.0.1",
            "127.0.0.1",
            "grpc+tls://h:",
            "grpc://[::1]",
            "grpc://h:port",
        ] {
            let m = refused(no_port);
            assert!(
                m.contains("has no port") && m.contains("8815"),
                "{no_port}: {m}"
            );
        }
    }

    /// A connection over TLS to a port nothing listens on (nothing here
    /// connects: the channel is lazy).
    fn tls_connection() -> Connection {
        let channel = Endpoint::from_static("https://127.0.0.1:9").connect_lazy();
        Connection {
            channel,
            token: "secret-token".into(),
            address: "grpc+tls://127.0.0.1:9".into(),
            tls: None,
        }
    }

    #[tokio::test]
    async fn over_tls_the_token_never_goes_to_a_plaintext_location() {
        let c = tls_connection();
        for plain in [
            "grpc://127.0.0.1:1",
            "grpc+tcp://127.0.0.1:1",
            "127.0.0.1:1",
        ] {
            match c.for_locations(&[plain.to_string()]).await {
                Err(ClientError::Invalid(m)) => {
                    assert!(m.contains("is not TLS") && m.contains(plain), "{m}")
                }
                Err(other) => panic!("{plain}: refused before connecting, got {other}"),
                Ok(_) => panic!("{plain}: a plaintext location was opened"),
            }
        }
        // A TLS location after a plaintext one is tried (and fails to
        // connect here, as nothing listens): the plaintext one was skipped.
        let tried = c
            .for_locations(&["grpc://127.0.0.1:1".into(), "grpc+tls://127.0.0.1:1".into()])
            .await;
        assert!(
            matches!(tried, Err(ClientError::Connect { ref address, .. }) if address == "grpc+tls://127.0.0.1:1"),
            "{:?}",
            tried.err()
        );
        // The connection itself, or "reuse", is kept as is.
        for same in [REUSE_CONNECTION, "grpc+tls://127.0.0.1:9"] {
            let kept = c.for_locations(&[same.to_string()]).await.unwrap();
            assert_eq!(kept.address, c.address);
        }
    }
}
