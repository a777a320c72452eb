//! The shell against a remote meshql server, over Flight SQL.

use std::sync::Arc;

use arrow::array::Array;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, HandshakeRequest, IpcMessage};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};
use meshql::manifest::Contract;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::backend::Backend;

/// How to reach and log in to a server.
pub struct Connect {
    /// `grpc://host:port` or `grpc+tls://host:port`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate.
    pub tls_ca: Option<std::path::PathBuf>,
}

pub struct Remote {
    client: FlightServiceClient<Channel>,
    authorization: String,
    contracts: Vec<Contract>,
}

/// A status as the shell prints it: the server's message, and the code
/// where the message alone would not say what happened.
fn message(status: &Status) -> String {
    match status.code() {
        tonic::Code::Unavailable if status.message().contains("transport") => {
            format!("cannot reach the server: {}", status.message())
        }
        _ => status.message().to_string(),
    }
}

impl Remote {
    pub async fn connect(c: Connect) -> Result<Self, String> {
        let (scheme, rest) = c
            .url
            .split_once("://")
            .ok_or_else(|| format!("--connect: `{}` is not grpc://HOST:PORT", c.url))?;
        let tls = match scheme {
            "grpc" | "grpc+tcp" | "http" => false,
            "grpc+tls" | "https" => true,
            other => {
                return Err(format!(
                    "--connect: unknown scheme `{other}`; use grpc:// or grpc+tls://"
                ));
            }
        };
        let http = format!("{}://{rest}", if tls { "https" } else { "http" });
        let mut endpoint = Endpoint::from_shared(http.clone())
            .map_err(|e| format!("--connect: `{}`: {e}", c.url))?
            .connect_timeout(std::time::Duration::from_secs(10))
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .max_frame_size(Some(1024 * 1024));
        if tls {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &c.tls_ca {
                let pem =
                    std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                config = config.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS: {e}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", c.url))?;
        let mut client =
            FlightServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let authorization = match (&c.token, &c.user) {
            (Some(token), _) => format!("Bearer {token}"),
            (None, Some(user)) => {
                let password = c.password.clone().unwrap_or_default();
                let basic = base64_basic(user, &password);
                let mut req = Request::new(futures::stream::iter([HandshakeRequest::default()]));
                req.metadata_mut().insert(
                    "authorization",
                    basic
                        .parse()
                        .map_err(|_| "the user name cannot be sent".to_string())?,
                );
                let resp = client.handshake(req).await.map_err(|s| message(&s))?;
                resp.metadata()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| "the server sent no bearer token".to_string())?
            }
            (None, None) => return Err("--connect needs --user (and a password) or --token".into()),
        };
        let mut remote = Self {
            client,
            authorization,
            contracts: Vec::new(),
        };
        remote.load_catalog().await?;
        Ok(remote)
    }

    fn req<T>(&self, msg: T) -> Result<Request<T>, String> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert(
            "authorization",
            self.authorization
                .parse()
                .map_err(|_| "the token cannot be sent".to_string())?,
        );
        Ok(req)
    }

    async fn run(
        &self,
        cmd: impl ProstMessageExt,
    ) -> Result<(SchemaRef, FlightRecordBatchStream), String> {
        let mut client = self.client.clone();
        let desc = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
        let info = client
            .get_flight_info(self.req(desc)?)
            .await
            .map_err(|s| message(&s))?
            .into_inner();
        let schema = Arc::new(
            info.clone()
                .try_decode_schema()
                .map_err(|e| format!("the server sent an unreadable schema: {e}"))?,
        );
        if info.endpoint.is_empty() {
            // Nothing to fetch (`USE sales`).
            return Ok((
                schema,
                FlightRecordBatchStream::new_from_flight_data(futures::stream::empty()),
            ));
        }
        let ticket = info
            .endpoint
            .first()
            .and_then(|e| e.ticket.clone())
            .ok_or_else(|| "the server sent no ticket".to_string())?;
        let stream = client
            .do_get(self.req(ticket)?)
            .await
            .map_err(|s| message(&s))?
            .into_inner();
        Ok((
            schema,
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(FlightError::from)),
        ))
    }

    /// The products this principal sees, with their contracts, from
    /// GetTables' schemas.
    async fn load_catalog(&mut self) -> Result<(), String> {
        let (_, stream) = self
            .run(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema: true,
            })
            .await?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|e| flight_message(&e))?;
        for batch in batches {
            let Ok(i) = batch.schema().index_of("table_schema") else {
                continue;
            };
            let Some(schemas) = batch
                .column(i)
                .as_any()
                .downcast_ref::<arrow::array::BinaryArray>()
            else {
                continue;
            };
            for row in 0..schemas.len() {
                let bytes = bytes::Bytes::copy_from_slice(schemas.value(row));
                let Ok(schema) = Schema::try_from(IpcMessage(bytes)) else {
                    continue;
                };
                let Some(contract) = schema
                    .metadata()
                    .get("meshql.contract")
                    .and_then(|j| serde_json::from_str::<Contract>(j).ok())
                else {
                    continue;
                };
                self.contracts.push(contract);
            }
        }
        self.contracts.sort_by_key(Contract::qualified_name);
        Ok(())
    }
}

fn flight_message(e: &FlightError) -> String {
    match e {
        FlightError::Tonic(s) => message(s),
        other => other.to_string(),
    }
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[async_trait]
impl Backend for Remote {
    async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream), String> {
        let (schema, stream) = self
            .run(CommandStatementQuery {
                query: sql.to_string(),
                transaction_id: None,
            })
            .await?;
        let stream = stream.map(|r| r.map_err(|e| DataFusionError::Execution(flight_message(&e))));
        let adapter = RecordBatchStreamAdapter::new(Arc::clone(&schema), stream);
        Ok((schema, Box::pin(adapter)))
    }

    fn contracts(&self) -> Vec<Contract> {
        self.contracts.clone()
    }

    fn product_names(&self) -> Vec<String> {
        self.contracts
            .iter()
            .map(Contract::qualified_name)
            .collect()
    }
}
