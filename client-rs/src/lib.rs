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
//! in parallel.

use arrow::record_batch::RecordBatch;
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use veil_proto::{
    DatasetDescription, DescribeRequest, Named, ScanCommand, SqlCommand, WhoAmI, actions,
};

/// Errors from the client; server errors keep their gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to Veil at {address}: {source}")]
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

/// A connection to one Veil server.
#[derive(Debug, Clone)]
pub struct Connection {
    channel: Channel,
    token: String,
}

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

impl Connection {
    /// Connect to `grpc://host:port` (plaintext; `grpc+tls://` uses the
    /// system's trust roots only through [`Connection::connect_tls`]).
    pub async fn connect(address: &str, token: &str) -> Result<Self, ClientError> {
        Self::open(address, token, None).await
    }

    /// Connect over TLS, trusting `ca_pem` for the server named `domain`.
    pub async fn connect_tls(
        address: &str,
        token: &str,
        ca_pem: &[u8],
        domain: &str,
    ) -> Result<Self, ClientError> {
        use tonic::transport::{Certificate, ClientTlsConfig};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .domain_name(domain);
        Self::open(address, token, Some(tls)).await
    }

    async fn open(
        address: &str,
        token: &str,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Self, ClientError> {
        let failed = |source| ClientError::Connect {
            address: address.into(),
            source,
        };
        let uri = address
            .replacen("grpc+tls://", "https://", 1)
            .replacen("grpc+tcp://", "http://", 1)
            .replacen("grpc://", "http://", 1);
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(failed)?
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(failed)?;
        }
        let channel = endpoint.connect().await.map_err(failed)?;
        Ok(Self {
            channel,
            token: token.to_string(),
        })
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

    /// Read every endpoint of `info` in parallel; batches in endpoint order.
    pub async fn read_all(&self, info: FlightInfo) -> Result<Vec<RecordBatch>, ClientError> {
        let tasks: Vec<_> = info
            .endpoint
            .into_iter()
            .map(|ep| {
                let conn = self.clone();
                tokio::spawn(async move {
                    let ticket = ep
                        .ticket
                        .ok_or_else(|| ClientError::Flight("an endpoint has no ticket".into()))?;
                    conn.read_ticket(ticket).await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.extend(
                t.await
                    .map_err(|e| ClientError::Flight(format!("reader task failed: {e}")))??,
            );
        }
        Ok(out)
    }

    /// Read a dataset through your policies.
    pub async fn scan(&self, dataset: &str, scan: Scan) -> Result<Vec<RecordBatch>, ClientError> {
        let info = self.scan_info(dataset, &scan).await?;
        self.read_all(info).await
    }

    /// Run one read-only SELECT over your catalog.
    pub async fn sql(&self, query: &str) -> Result<Vec<RecordBatch>, ClientError> {
        let info = self
            .flight_info(FlightDescriptor::new_cmd(
                SqlCommand {
                    query: query.into(),
                }
                .to_any_bytes(),
            ))
            .await?;
        self.read_all(info).await
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
