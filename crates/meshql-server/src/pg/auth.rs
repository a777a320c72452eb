//! Logging in over the PostgreSQL protocol: the database must be `mesh`;
//! on a plain connection the password is checked by SCRAM-SHA-256 against
//! the user's `scramSha256` verifier (a user without one, or who does not
//! exist, goes through the same exchange and fails the same way); over TLS
//! the client sends the password itself, which is the `users.yaml`
//! password or a JWT of the configured identity provider.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::Conn;
use super::scram::{Exchange, Verifier};
use crate::MeshFlightSql;

/// The SCRAM exchange of a connection, between its messages.
#[derive(Default)]
struct Scram(Mutex<Option<Exchange>>);

pub struct Startup {
    flight: Arc<MeshFlightSql>,
    /// Each principal's session with `pg_catalog`, which connections copy.
    sessions: Mutex<std::collections::HashMap<String, meshql::Session>>,
    /// Password checks (argon2, tens of milliseconds and 19 MiB each) at
    /// once: a flood of logins waits here instead of exhausting memory.
    checks: tokio::sync::Semaphore,
    manager: Arc<ConnectionManager>,
    keys: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
}

impl Startup {
    pub fn new(flight: Arc<MeshFlightSql>, manager: Arc<ConnectionManager>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = super::sql::SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.search_path = String::new();
        Self {
            flight,
            sessions: Mutex::new(Default::default()),
            checks: tokio::sync::Semaphore::new(2),
            manager,
            keys: RandomPidSecretKeyGenerator::default(),
            parameters,
        }
    }
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn failed(user: &str) -> PgWireError {
    fatal(
        "28P01",
        format!("password authentication failed for user \"{user}\""),
    )
}

/// The search path a connection starts with: `options=-c search_path=...`
/// of the connection string.
fn startup_path<C: ClientInfo>(client: &C) -> Option<meshql::PathChange> {
    let options = client.metadata().get("options")?;
    let mut parts = options.split_whitespace().peekable();
    while let Some(part) = parts.next() {
        let setting = match part {
            "-c" => parts.next().unwrap_or_default().to_string(),
            p if p.starts_with("-c") => p[2..].to_string(),
            p if p.starts_with("--") => p[2..].to_string(),
            _ => continue,
        };
        if let Some((name, value)) = setting.split_once('=')
            && name.eq_ignore_ascii_case("search_path")
        {
            return meshql::search_path_change(&format!(
                "SET search_path = '{}'",
                value.replace('\'', "''")
            ));
        }
    }
    None
}

impl Startup {
    async fn logged_in<C>(&self, client: &mut C, principal: meshql::Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = self.session(&principal).await?.with_search_path(Vec::new());
        if let Some(change) = startup_path(client) {
            session
                .change_search_path(change)
                .map_err(|e| fatal("3F000", e.to_string()))?;
        }
        tracing::info!(user = %principal.user, client = %client.socket_addr(), "postgres login");
        client.session_extensions().insert(Conn {
            principal,
            session,
            settings: Mutex::new(Default::default()),
            cursors: tokio::sync::Mutex::new(Default::default()),
        });
        let (pid, key) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.manager.register(pid, key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, &self.parameters).await
    }

    /// `principal`'s session with `pg_catalog`, built once.
    async fn session(&self, principal: &meshql::Principal) -> PgWireResult<meshql::Session> {
        let key = format!("{principal:?}");
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let session = super::catalog::postgres_session(
            self.flight.mesh().session(principal.clone()),
            principal,
        )
        .await
        .map_err(|e| fatal("XX000", e))?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() > 1024 {
            sessions.clear();
        }
        sessions.insert(key, session.clone());
        Ok(session)
    }

    fn user<C: ClientInfo>(client: &C) -> String {
        client
            .metadata()
            .get(pgwire::api::METADATA_USER)
            .cloned()
            .unwrap_or_default()
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let database = client
                    .metadata()
                    .get(pgwire::api::METADATA_DATABASE)
                    .cloned()
                    .unwrap_or_else(|| meshql::CATALOG_NAME.to_string());
                if database != meshql::CATALOG_NAME {
                    return Err(fatal(
                        "3D000",
                        format!(
                            "database \"{database}\" does not exist: meshql serves one database, `{}` (dbname={})",
                            meshql::CATALOG_NAME,
                            meshql::CATALOG_NAME
                        ),
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let method = if client.is_secure() {
                    Authentication::CleartextPassword
                } else {
                    client.session_extensions().insert(Scram::default());
                    Authentication::SASL(vec!["SCRAM-SHA-256".to_string()])
                };
                client
                    .send(PgWireBackendMessage::Authentication(method))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = Self::user(client);
                if client.is_secure() {
                    let password = message.into_password()?.password;
                    let flight = Arc::clone(&self.flight);
                    let (u, p) = (user.clone(), password);
                    // argon2 takes tens of milliseconds: off the serving
                    // threads, two at a time.
                    let _permit = self
                        .checks
                        .acquire()
                        .await
                        .map_err(|_| fatal("57P01", "the server is shutting down"))?;
                    let principal = tokio::task::spawn_blocking(move || {
                        let looks_like_jwt = p.split('.').count() == 3 && !p.contains(' ');
                        if looks_like_jwt
                            && let Ok(principal) = flight.authorization(&format!("Bearer {p}"))
                        {
                            return Some(principal);
                        }
                        flight.login(&u, &p).ok()
                    })
                    .await
                    .ok()
                    .flatten();
                    match principal {
                        Some(principal) if principal.user == user => {
                            self.logged_in(client, principal).await?;
                        }
                        Some(principal) => {
                            return Err(fatal(
                                "28000",
                                format!(
                                    "the token is for user \"{}\", not \"{user}\"",
                                    principal.user
                                ),
                            ));
                        }
                        None => {
                            tracing::info!(user, "postgres login refused");
                            return Err(failed(&user));
                        }
                    }
                    return Ok(());
                }
                let scram = client
                    .session_extensions()
                    .get::<Scram>()
                    .ok_or_else(|| fatal("08P01", "no authentication in progress"))?;
                let started = scram.0.lock().unwrap_or_else(|p| p.into_inner()).take();
                match started {
                    None => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(fatal(
                                "28000",
                                format!(
                                    "authentication method {} is not offered; use SCRAM-SHA-256",
                                    initial.auth_method
                                ),
                            ));
                        }
                        let verifier = self
                            .flight
                            .mesh()
                            .scram_verifier(&user)
                            .and_then(Verifier::parse)
                            .unwrap_or_else(Verifier::impossible);
                        let data = initial.data.unwrap_or_default();
                        let (exchange, server_first) = Exchange::start(verifier, &data)
                            .map_err(|e| fatal("08P01", format!("SCRAM: {e}")))?;
                        *scram.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(exchange);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into_bytes().into()),
                            ))
                            .await?;
                    }
                    Some(exchange) => {
                        let response = message.into_sasl_response()?;
                        let Some(server_final) = exchange.finish(&response.data) else {
                            tracing::info!(user, "postgres login refused");
                            return Err(failed(&user));
                        };
                        let principal = self
                            .flight
                            .mesh()
                            .principal(&user)
                            .map_err(|_| failed(&user))?;
                        client
                            .feed(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        self.logged_in(client, principal).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
