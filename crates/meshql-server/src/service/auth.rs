//! Logging in: the Flight handshake, with Basic credentials in a header or
//! in the payload, answered with a bearer token.

use super::*;

impl MeshFlightSql {
    pub(super) async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        let principal = match request.metadata().get("authorization") {
            Some(value) => {
                let value = value
                    .to_str()
                    .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
                let (user, password) = parse_basic(value)?;
                self.login(&user, &password)?
            }
            None => {
                // Older clients send Flight's BasicAuth message as the payload.
                let mut stream = request.into_inner();
                let first = stream
                    .message()
                    .await?
                    .ok_or_else(|| Status::unauthenticated("authentication required"))?;
                let basic = arrow_flight::BasicAuth::decode(&*first.payload)
                    .map_err(|_| Status::unauthenticated("authentication required"))?;
                self.login(&basic.username, &basic.password)?
            }
        };
        let token = self
            .signer
            .issue_token(&principal.user, self.options.token_ttl.as_secs());
        tracing::info!(user = principal.user, "logged in");
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<BoxStream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(response)])));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("cannot encode the token"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }
}
