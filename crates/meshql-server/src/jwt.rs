//! Single sign-on: JWT bearer tokens signed by an identity provider.
//!
//! `sub` is the user, a configurable claim holds the roles (a list, or a
//! space-separated string), and the other string claims become attributes
//! for row filters (`current_attribute('region')`). Expiry is required and
//! checked; audience and issuer are checked when configured.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use meshql::Principal;
use meshql::manifest::JwtConfig;
use serde_json::Value;
use tonic::Status;

/// Checks identity-provider tokens.
pub struct JwtVerifier {
    keys: Vec<(Option<String>, Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
    roles_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Registered claims, which are not attributes.
const REGISTERED: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

impl JwtVerifier {
    /// From `server.jwt` of `mesh.yaml`. `MESHQL_JWT_SECRET` overrides the
    /// HS256 secret, so it need not be written in the file.
    pub fn new(config: &JwtConfig) -> Result<Self, String> {
        let mut keys = Vec::new();
        let secret = std::env::var("MESHQL_JWT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| config.hs256_secret.clone());
        if let Some(secret) = secret {
            keys.push((
                None,
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ));
        }
        if let Some(path) = &config.public_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("server.jwt.publicKeyFile {}: {e}", path.display()))?;
            let what = |e: &dyn std::fmt::Display| {
                format!("server.jwt.publicKeyFile {}: {e}", path.display())
            };
            if text.trim_start().starts_with('{') {
                let set: JwkSet = serde_json::from_str(&text).map_err(|e| what(&e))?;
                for jwk in &set.keys {
                    let alg = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
                        Some("ES256") => Algorithm::ES256,
                        Some("RS256") | None => Algorithm::RS256,
                        Some(other) => return Err(what(&format!("unsupported algorithm {other}"))),
                    };
                    let key = DecodingKey::from_jwk(jwk).map_err(|e| what(&e))?;
                    keys.push((jwk.common.key_id.clone(), alg, key));
                }
            } else if text.contains("BEGIN PUBLIC KEY") || text.contains("BEGIN RSA PUBLIC KEY") {
                // One PEM key: RSA or EC, whichever it parses as.
                match DecodingKey::from_rsa_pem(text.as_bytes()) {
                    Ok(key) => keys.push((None, Algorithm::RS256, key)),
                    Err(_) => {
                        let key =
                            DecodingKey::from_ec_pem(text.as_bytes()).map_err(|e| what(&e))?;
                        keys.push((None, Algorithm::ES256, key));
                    }
                }
            } else {
                return Err(what(&"expected a PEM public key or a JWKS document"));
            }
        }
        if keys.is_empty() {
            return Err(
                "server.jwt: no key: set hs256Secret (or MESHQL_JWT_SECRET) or publicKeyFile"
                    .into(),
            );
        }
        Ok(Self {
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            roles_claim: config.roles_claim.clone(),
        })
    }

    /// The principal a token names, if it is valid.
    #[allow(clippy::result_large_err)]
    pub fn principal(&self, token: &str) -> Result<Principal, Status> {
        let invalid = |why: &str| Status::unauthenticated(format!("invalid bearer token: {why}"));
        let header = decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let candidates = self
            .keys
            .iter()
            .filter(|(kid, alg, _)| *alg == header.alg && (kid.is_none() || *kid == header.kid));
        let mut last = invalid("no key of the identity provider matches its algorithm");
        for (_, alg, key) in candidates {
            let mut validation = Validation::new(*alg);
            validation.set_required_spec_claims(&["exp", "sub"]);
            validation.leeway = 30;
            // A token is not valid before its `nbf`, as after its `exp`.
            validation.validate_nbf = true;
            match &self.audience {
                Some(aud) => validation.set_audience(&[aud]),
                None => validation.validate_aud = false,
            }
            if let Some(iss) = &self.issuer {
                validation.set_issuer(&[iss]);
            }
            match decode::<BTreeMap<String, Value>>(token, key, &validation) {
                Ok(data) => return Ok(self.map(data.claims)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => Status::unauthenticated(
                            "the bearer token has expired; get a new one from the identity provider",
                        ),
                        K::ImmatureSignature => invalid(
                            "the bearer token is not valid yet (its `nbf` is in the future)",
                        ),
                        K::InvalidAudience => invalid("wrong audience"),
                        K::InvalidIssuer => invalid("wrong issuer"),
                        K::MissingRequiredClaim(c) => invalid(&format!("no `{c}` claim")),
                        _ => invalid("bad signature"),
                    };
                }
            }
        }
        Err(last)
    }

    fn map(&self, claims: BTreeMap<String, Value>) -> Principal {
        let mut p = Principal::new(
            claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        match claims.get(&self.roles_claim) {
            Some(Value::Array(roles)) => {
                p.roles = roles
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect();
            }
            Some(Value::String(roles)) => {
                p.roles = roles.split_whitespace().map(String::from).collect();
            }
            _ => {}
        }
        if let Some(Value::Array(groups)) = claims.get("groups") {
            p.groups = groups
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
        }
        for (k, v) in &claims {
            if REGISTERED.contains(&k.as_str()) || *k == self.roles_claim || k == "groups" {
                continue;
            }
            if let Some(s) = v.as_str() {
                p.attributes.insert(k.clone(), s.to_string());
            }
        }
        p
    }
}
