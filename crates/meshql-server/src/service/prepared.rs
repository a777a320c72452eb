//! Prepared statements: created, described, bound to parameters and run;
//! their handles carry the statement and its parameters, signed.

use super::*;

impl MeshFlightSql {
    pub(super) async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (principal, session) = self.caller(request.metadata())?;
        let prepared = self
            .signer
            .check_handle(&cmd.prepared_statement_handle, &principal.user)?;
        let claims = HandleClaims {
            id: Self::new_id(),
            ..prepared
        };
        let (schema, wanted) = self
            .plan_schema(&session, &claims)
            .await
            .map_err(|s| self.refused(&principal, &request, &claims, s))?;
        if claims.p.is_none() && wanted > 0 {
            return Err(Status::invalid_argument(format!(
                "the statement has {wanted} parameter(s) and none are bound; bind them with DoPut first"
            )));
        }
        let info = self.flight_info(&schema, &claims, request.into_inner())?;
        Ok(Response::new(info))
    }

    pub(super) async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let caller = self.caller(request.metadata())?;
        let prepared = self
            .signer
            .check_handle(&query.prepared_statement_handle, &caller.0.user)?;
        let claims = HandleClaims {
            id: Self::new_id(),
            ..prepared
        };
        self.run(caller, claims, client_addr(&request)).await
    }

    pub(super) async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only("an update statement"))
    }

    pub(super) async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (principal, _) = self.caller(request.metadata())?;
        let prepared = self
            .signer
            .check_handle(&query.prepared_statement_handle, &principal.user)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let batch = match (rows, batches.into_iter().find(|b| b.num_rows() > 0)) {
            (1, Some(b)) => b,
            (0, _) | (_, None) => {
                return Err(Status::invalid_argument("no parameter values were sent"));
            }
            (n, _) => {
                return Err(Status::invalid_argument(format!(
                    "{n} rows of parameters were sent; a query takes one row"
                )));
            }
        };
        let claims = HandleClaims {
            p: Some(encode_params(&batch)?),
            ..prepared
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.signer.issue_handle(&claims).into()),
        })
    }

    pub(super) async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let (principal, session) = self.caller(request.metadata())?;
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        if let Some(changed) = self.change_client_path(&session, request.metadata(), &query.query) {
            changed?;
        }
        let claims = HandleClaims {
            u: principal.user.clone(),
            q: query.query,
            id: Self::new_id(),
            p: None,
            d: Some(self.client_path(request.metadata())),
        };
        let statement = Self::statement_session(&session, &claims);
        let (dataset, parameters) = match self.describe(&statement, &claims.q, &claims.id).await {
            Ok(described) => described,
            Err(e) => {
                let status = to_status(&e, &claims.id);
                return Err(self.refused(&principal, &request, &claims, status));
            }
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.signer.issue_handle(&claims).into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&Schema::new(parameters))?,
        })
    }

    pub(super) async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let (principal, _) = self.caller(request.metadata())?;
        // Handles are stateless: closing frees nothing, but only its owner may.
        self.signer
            .check_handle(&query.prepared_statement_handle, &principal.user)?;
        Ok(())
    }

    pub(super) async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.caller(request.metadata())?;
        Err(Status::unimplemented(
            "meshql takes SQL, not Substrait plans",
        ))
    }
}
