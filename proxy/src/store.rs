//! Builds the binding store named by the settings: the source the proxy syncs from, and the
//! admin interface the CLI writes through.

use std::sync::Arc;

use nexus_binding_store::file_store::FileStore;
use nexus_binding_store::redis_store::{default_replica_id, RedisOptions, RedisStore};
use nexus_binding_store::{BindingAdmin, BindingSource};
use nexus_config::{RedisStoreSettings, StoreSettings};

/// A configured store, as both a sync source and an admin target.
#[derive(Debug, Clone)]
pub enum Store {
    /// JSON file.
    File(Arc<FileStore>),
    /// Redis.
    Redis(Arc<RedisStore>),
}

impl Store {
    /// The store for `settings`.
    pub fn open(settings: &StoreSettings) -> Result<Store, String> {
        Ok(match settings {
            StoreSettings::File(f) => {
                Store::File(Arc::new(FileStore::new(f.path.clone(), f.poll_interval)))
            }
            StoreSettings::Redis(r) => Store::Redis(Arc::new(RedisStore::new(redis_options(r))?)),
        })
    }

    /// As a sync source.
    pub fn source(&self) -> Arc<dyn BindingSource> {
        match self {
            Store::File(f) => Arc::clone(f) as Arc<dyn BindingSource>,
            Store::Redis(r) => Arc::clone(r) as Arc<dyn BindingSource>,
        }
    }

    /// As an admin target.
    pub fn admin(&self) -> &dyn BindingAdmin {
        match self {
            Store::File(f) => f.as_ref(),
            Store::Redis(r) => r.as_ref(),
        }
    }
}

/// Maps config to the store's options.
pub fn redis_options(r: &RedisStoreSettings) -> RedisOptions {
    let mut o = RedisOptions::new(r.url.clone());
    o.key_prefix = r.key_prefix.clone();
    o.snapshot_path = r.snapshot_path.clone();
    o.reconcile_interval = r.reconcile_interval;
    o.heartbeat_interval = r.heartbeat_interval;
    o.replica_id = r.replica_id.clone().unwrap_or_else(default_replica_id);
    o
}
