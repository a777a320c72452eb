//! Session options (Flight's `SetSessionOptions`, `GetSessionOptions` and
//! `CloseSession` actions, which ADBC sends for `adbc.connection.db_schema`)
//! and the search path of each client: the domains its unqualified names
//! resolve in. A client is its `authorization` value (a bearer token is
//! issued per login), so two connections of one user keep paths of their
//! own. arrow-flight has no types for these actions; their messages,
//! from Flight.proto, are written out here.

use std::collections::HashMap;

use super::*;

/// A client's search path is kept this long after its last use.
const IDLE: std::time::Duration = std::time::Duration::from_secs(12 * 60 * 60);
/// The most clients whose paths are kept; the least recently used go first.
const CLIENTS: usize = 10_000;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionOptionValue {
    #[prost(oneof = "OptionValue", tags = "1, 2, 3, 4, 5")]
    pub option_value: Option<OptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringListValue {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OptionValue {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(sfixed64, tag = "3")]
    Int64(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    StringList(StringListValue),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub errors: HashMap<String, SetSessionOptionsError>,
}

/// `SetSessionOptionsResult.Error`: 1 an unknown name, 2 a bad value, 3 an
/// option that cannot be set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSessionOptionsError {
    #[prost(int32, tag = "1")]
    pub value: i32,
}

const INVALID_NAME: i32 = 1;
const INVALID_VALUE: i32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub session_options: HashMap<String, SessionOptionValue>,
}

/// `CloseSessionResult`: status 1 is CLOSED.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// The search paths of clients, by their `authorization` value.
#[derive(Debug, Default)]
pub(crate) struct ClientPaths {
    paths: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

impl ClientPaths {
    pub(crate) fn get(&self, client: &str) -> Vec<String> {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        match paths.get_mut(client) {
            Some((path, used)) => {
                *used = Instant::now();
                path.clone()
            }
            None => Vec::new(),
        }
    }

    pub(crate) fn set(&self, client: &str, path: Vec<String>) {
        let mut paths = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        paths.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        if paths.len() >= CLIENTS
            && let Some(oldest) = paths
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            paths.remove(&oldest);
        }
        if path.is_empty() {
            paths.remove(client);
        } else {
            paths.insert(client.to_string(), (path, now));
        }
    }
}

/// The client a call comes from: its `authorization` value.
pub(crate) fn client_key(metadata: &MetadataMap) -> String {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn result<M: Message>(message: &M) -> Response<BoxStream<arrow_flight::Result>> {
    let body = arrow_flight::Result {
        body: message.encode_to_vec().into(),
    };
    Response::new(Box::pin(futures::stream::iter([Ok(body)])))
}

impl MeshFlightSql {
    /// The search path the caller's statements resolve along.
    pub(crate) fn client_path(&self, metadata: &MetadataMap) -> Vec<String> {
        self.paths.get(&client_key(metadata))
    }

    /// A copy of `session` for one statement, with the search path it was
    /// planned with: a statement that sets the path changes the copy only.
    pub(crate) fn statement_session(session: &Session, claims: &HandleClaims) -> Arc<Session> {
        Arc::new(session.with_search_path(claims.d.clone().unwrap_or_default()))
    }

    /// `USE`, `SET search_path`, `RESET search_path`: the caller's search
    /// path changes; nothing runs. `None` for any other statement.
    #[allow(clippy::result_large_err)]
    pub(crate) fn change_client_path(
        &self,
        session: &Session,
        metadata: &MetadataMap,
        sql: &str,
    ) -> Option<Result<(), Status>> {
        let change = meshql::search_path_change(sql)?;
        let key = client_key(metadata);
        let copy = session.with_search_path(self.paths.get(&key));
        Some(match copy.change_search_path(change) {
            Ok(()) => {
                self.paths.set(&key, copy.search_path().to_vec());
                Ok(())
            }
            Err(e) => Err(to_status(&e, "")),
        })
    }

    /// `SetSessionOptions`: `schema` (a domain, or a list: the search
    /// path) and `catalog` (only `mesh`).
    #[allow(clippy::result_large_err)]
    pub(crate) fn set_session_options(
        &self,
        session: &Session,
        request: &Request<Action>,
    ) -> Result<Response<BoxStream<arrow_flight::Result>>, Status> {
        let set = SetSessionOptionsRequest::decode(&*request.get_ref().body)
            .map_err(|_| Status::invalid_argument("the SetSessionOptions request is not valid"))?;
        let key = client_key(request.metadata());
        let mut errors = HashMap::new();
        let error = |value| SetSessionOptionsError { value };
        for (name, value) in set.session_options {
            let text = match value.option_value {
                None => Some(Vec::new()),
                Some(OptionValue::String(s)) if s.is_empty() => Some(Vec::new()),
                Some(OptionValue::String(s)) => Some(vec![s]),
                Some(OptionValue::StringList(l)) => Some(l.values),
                Some(_) => None,
            };
            match (name.as_str(), text) {
                ("schema" | "search_path", Some(path)) => {
                    let copy = session.with_search_path(Vec::new());
                    let change = match path.as_slice() {
                        [] => meshql::PathChange::Reset,
                        [one] => meshql::PathChange::Use(one.clone()),
                        _ => meshql::PathChange::Set(path),
                    };
                    match copy.change_search_path(change) {
                        Ok(()) => self.paths.set(&key, copy.search_path().to_vec()),
                        Err(_) => {
                            errors.insert(name, error(INVALID_VALUE));
                        }
                    }
                }
                ("catalog", Some(c)) if c.is_empty() || c == [meshql::CATALOG_NAME] => {}
                ("schema" | "search_path" | "catalog", _) => {
                    errors.insert(name, error(INVALID_VALUE));
                }
                _ => {
                    errors.insert(name, error(INVALID_NAME));
                }
            }
        }
        Ok(result(&SetSessionOptionsResult { errors }))
    }

    /// `GetSessionOptions`: the catalog, and the caller's search path.
    pub(crate) fn get_session_options(
        &self,
        request: &Request<Action>,
    ) -> Response<BoxStream<arrow_flight::Result>> {
        let path = self.paths.get(&client_key(request.metadata()));
        let string = |s: String| SessionOptionValue {
            option_value: Some(OptionValue::String(s)),
        };
        let mut options = HashMap::new();
        options.insert("catalog".to_string(), string(meshql::CATALOG_NAME.into()));
        if let Some(first) = path.first() {
            options.insert("schema".to_string(), string(first.clone()));
        }
        options.insert(
            "search_path".to_string(),
            SessionOptionValue {
                option_value: Some(OptionValue::StringList(StringListValue { values: path })),
            },
        );
        result(&GetSessionOptionsResult {
            session_options: options,
        })
    }

    /// `CloseSession`: the caller's search path is forgotten.
    pub(crate) fn close_session(
        &self,
        request: &Request<Action>,
    ) -> Response<BoxStream<arrow_flight::Result>> {
        self.paths.set(&client_key(request.metadata()), Vec::new());
        result(&CloseSessionResult { status: 1 })
    }
}
