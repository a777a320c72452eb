//! Iceberg file IO over the mesh's object stores: the local file system and
//! the S3-compatible buckets of `mesh.yaml`, with the endpoint and
//! credentials configured there, shared with the Parquet products.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

/// Buckets by name, with the stores `mesh.yaml` configures for them.
pub(crate) type Buckets = Arc<HashMap<String, Arc<dyn ObjectStore>>>;

/// Builds [`MeshStorage`] for iceberg-rust's `FileIO`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MeshStorageFactory {
    #[serde(skip)]
    buckets: Buckets,
}

impl MeshStorageFactory {
    pub(crate) fn new(buckets: Buckets) -> Self {
        Self { buckets }
    }
}

#[typetag::serde(name = "meshql-object-store")]
impl StorageFactory for MeshStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(MeshStorage {
            buckets: Arc::clone(&self.buckets),
        }))
    }
}

/// Reads and writes `file://` and `s3://` locations through object_store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MeshStorage {
    #[serde(skip)]
    buckets: Buckets,
}

fn error(what: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unexpected, format!("cannot {what} {path}: {e}"))
}

impl MeshStorage {
    /// The store and key of a location.
    fn resolve(&self, location: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
        if let Some(rest) = location
            .strip_prefix("s3://")
            .or_else(|| location.strip_prefix("s3a://"))
        {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let store = self.buckets.get(bucket).ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!(
                        "{location} is in bucket `{bucket}`, which no storage of mesh.yaml names"
                    ),
                )
            })?;
            let key = Path::parse(key).map_err(|e| error("parse", location, e))?;
            return Ok((Arc::clone(store), key));
        }
        let file = location
            .strip_prefix("file://")
            .or_else(|| location.strip_prefix("file:"))
            .unwrap_or(location);
        if !file.starts_with('/') {
            return Err(Error::new(
                ErrorKind::FeatureUnsupported,
                format!("{location}: meshql reads Iceberg files from file:// and s3:// locations"),
            ));
        }
        // Writers record absolute paths, not always normalized (`a/../b`).
        let mut normal = std::path::PathBuf::from("/");
        for part in std::path::Path::new(file).components() {
            match part {
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                std::path::Component::Normal(p) => normal.push(p),
                _ => {}
            }
        }
        let key = Path::from_absolute_path(&normal).map_err(|e| error("parse", location, e))?;
        Ok((Arc::new(LocalFileSystem::new()), key))
    }
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[async_trait]
#[typetag::serde(name = "meshql-object-store")]
impl Storage for MeshStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        let (store, key) = self.resolve(path)?;
        match store.head(&key).await {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(error("look up", path, e)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let (store, key) = self.resolve(path)?;
        let meta = store
            .head(&key)
            .await
            .map_err(|e| error("look up", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let (store, key) = self.resolve(path)?;
        store
            .get(&key)
            .await
            .map_err(|e| error("read", path, e))?
            .bytes()
            .await
            .map_err(|e| error("read", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        let (store, key) = self.resolve(path)?;
        Ok(Box::new(ObjectRead {
            store,
            key,
            path: path.to_string(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        let (store, key) = self.resolve(path)?;
        store
            .put(&key, bs.into())
            .await
            .map_err(|e| error("write", path, e))?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        let (store, key) = self.resolve(path)?;
        Ok(Box::new(ObjectWrite {
            writer: Some(object_store::buffered::BufWriter::new(store, key)),
            path: path.to_string(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let (store, key) = self.resolve(path)?;
        match store.delete(&key).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(error("delete", path, e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let (store, key) = self.resolve(path)?;
        let mut listing = store.list(Some(&key));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| error("list", path, e))?;
            match store.delete(&meta.location).await {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(error("delete", path, e)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct ObjectRead {
    store: Arc<dyn ObjectStore>,
    key: Path,
    path: String,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        self.store
            .get_range(&self.key, range)
            .await
            .map_err(|e| error("read", &self.path, e))
    }
}

struct ObjectWrite {
    writer: Option<object_store::buffered::BufWriter>,
    path: String,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| error("write", &self.path, "the file is closed"))?;
        writer
            .write_all(&bs)
            .await
            .map_err(|e| error("write", &self.path, e))
    }

    async fn close(&mut self) -> Result<()> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| error("close", &self.path, "the file is closed"))?;
        writer
            .shutdown()
            .await
            .map_err(|e| error("write", &self.path, e))
    }
}
