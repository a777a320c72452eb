//! Metadata commands: catalogs, schemas, tables, table types, keys, SQL
//! info and type info, each showing only what the caller may see.

use super::*;

impl MeshFlightSql {
    pub(super) async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    pub(super) async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(meshql::CATALOG_NAME);
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }

    pub(super) async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    pub(super) async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let (_, session) = self.caller(request.metadata())?;
        let contracts = Self::visible(&session, query.catalog.as_deref(), None);
        let mut builder = query.into_builder();
        let mut domains: Vec<&str> = contracts.iter().map(|c| c.domain.as_str()).collect();
        domains.dedup();
        for d in domains {
            builder.append(meshql::CATALOG_NAME, d);
        }
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }

    pub(super) async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    pub(super) async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let (_, session) = self.caller(request.metadata())?;
        let contracts = Self::visible(&session, query.catalog.as_deref(), None);
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for c in contracts {
            let name = c.qualified_name();
            let schema = if include_schema {
                let schema = session
                    .product_schema(&name)
                    .await
                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                Arc::new(described(&session, &c, schema.as_ref().clone()))
            } else {
                Arc::new(Schema::empty())
            };
            builder
                .append(
                    meshql::CATALOG_NAME,
                    &c.domain,
                    &c.product.name,
                    TABLE_TYPE,
                    &schema,
                )
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }

    pub(super) async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query, request.into_inner())
    }

    pub(super) async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(TABLE_TYPE);
        let batch = builder
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }

    pub(super) async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(&metadata::SQL_INFO.schema(), query, request.into_inner())
    }

    pub(super) async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        let batch = query
            .into_builder(&metadata::SQL_INFO)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }

    pub(super) async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(
            &metadata::primary_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    pub(super) async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        let (_, session) = self.caller(request.metadata())?;
        let contracts = Self::visible(
            &session,
            query.catalog.as_deref(),
            query.db_schema.as_deref(),
        );
        let mut rows = Vec::new();
        for c in contracts.iter().filter(|c| c.product.name == query.table) {
            let mut seq = 0;
            for col in c.product.columns.iter().filter(|col| col.primary_key) {
                seq += 1;
                rows.push((
                    meshql::CATALOG_NAME.to_string(),
                    c.domain.clone(),
                    c.product.name.clone(),
                    col.name.clone(),
                    seq,
                ));
            }
        }
        Ok(Self::batch_stream(metadata::primary_keys(&rows)))
    }

    pub(super) async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    pub(super) async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        Ok(Self::batch_stream(metadata::no_foreign_keys()))
    }

    pub(super) async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    pub(super) async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        Ok(Self::batch_stream(metadata::no_foreign_keys()))
    }

    pub(super) async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(
            &metadata::foreign_keys_schema(),
            query,
            request.into_inner(),
        )
    }

    pub(super) async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        Ok(Self::batch_stream(metadata::no_foreign_keys()))
    }

    pub(super) async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        self.metadata_info(&metadata::XDBC_TYPES.schema(), query, request.into_inner())
    }

    pub(super) async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<BoxStream<FlightData>>, Status> {
        self.caller(request.metadata())?;
        let batch = query
            .into_builder(&metadata::XDBC_TYPES)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Self::batch_stream(batch))
    }
}
