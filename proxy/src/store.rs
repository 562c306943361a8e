//! Builds the binding store named by the settings: the source the proxy syncs from, and the
//! admin interface the CLI writes through.

use std::sync::Arc;

use nexus_binding_store::file_store::FileStore;
use nexus_binding_store::redis_store::{
    default_replica_id, RedisEndpoint, RedisOptions, RedisStore, RedisTls, SentinelOptions,
    WipedStore,
};
use nexus_binding_store::{BindingAdmin, BindingSource};
use nexus_config::{RedisEndpointSettings, RedisStoreSettings, StoreSettings};

/// A configured store, as both a sync source and an admin target.
#[derive(Debug, Clone)]
pub enum Store {
    /// JSON file.
    File(Arc<FileStore>),
    /// Redis.
    Redis(Arc<RedisStore>),
}

impl Store {
    /// The store for `settings` (admin writes into a Redis that looks wiped are refused).
    pub fn open(settings: &StoreSettings) -> Result<Store, OpenError> {
        Self::open_admin(settings, WipedStore::Refuse)
    }

    /// The store for an admin command: as [`Store::open`], with what a write into a Redis
    /// that looks wiped does.
    pub fn open_admin(settings: &StoreSettings, wiped: WipedStore) -> Result<Store, OpenError> {
        Ok(match settings {
            StoreSettings::File(f) => Store::File(Arc::new(
                FileStore::new(f.path.clone(), f.poll_interval).with_wiped_store(wiped),
            )),
            StoreSettings::Redis(r) => {
                let mut opts = redis_options(r)?;
                opts.wiped_store = wiped;
                let redis =
                    RedisStore::new(opts).map_err(|message| OpenError { key: None, message })?;
                Store::Redis(Arc::new(redis))
            }
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

/// Why the configured store could not be opened.
#[derive(Debug)]
pub struct OpenError {
    /// The config key whose value it is (a `[store.tls]` file), when one is to blame; `check`
    /// places the problem at it, and at the store's address otherwise.
    pub key: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(key) => write!(f, "{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl OpenError {
    fn at(key: &'static str, message: String) -> Self {
        Self {
            key: Some(key),
            message,
        }
    }
}

/// The keys of `[store.tls]` files, which name their problems.
pub const TLS_CA_FILE: &str = "store.tls.ca_file";
/// See [`TLS_CA_FILE`].
pub const TLS_CLIENT_CERT_FILE: &str = "store.tls.client_cert_file";
/// See [`TLS_CA_FILE`].
pub const TLS_CLIENT_KEY_FILE: &str = "store.tls.client_key_file";

/// Reads a client certificate and its key as the TLS client will, each named by its own key
/// when it cannot be used: a certificate chain that does not parse, no private key, or one
/// the TLS library cannot sign with.
fn check_client_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<(), OpenError> {
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    // The PEM reader's own words ("section end \"PRIVATE KEY\" missing"): Pingora's context
    // around them speaks of a certificate whichever file it read.
    let said = |e: &pingora::Error| e.root_cause().to_string();
    match pingora::tls::load_pem_file_ca(&c) {
        Ok(der) if !der.is_empty() => {}
        Ok(_) => {
            return Err(OpenError::at(
                TLS_CLIENT_CERT_FILE,
                format!("{c} holds no certificate"),
            ))
        }
        Err(e) => {
            return Err(OpenError::at(
                TLS_CLIENT_CERT_FILE,
                format!("{c}: {}", said(&e)),
            ))
        }
    }
    // The certificate reads: what fails from here is the key's.
    let key_der = match pingora::tls::load_certs_and_key_files(&c, &k) {
        Ok(Some((_, key_der))) => key_der,
        Ok(None) => {
            return Err(OpenError::at(
                TLS_CLIENT_KEY_FILE,
                format!(
                    "{k} holds no private key (PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
                     KEY)"
                ),
            ))
        }
        Err(e) => {
            return Err(OpenError::at(
                TLS_CLIENT_KEY_FILE,
                format!("{k}: {}", said(&e)),
            ))
        }
    };
    pingora::tls::install_default_crypto_provider();
    let provider = pingora::tls::CryptoProvider::get_default().ok_or_else(|| OpenError {
        key: None,
        message: "no TLS crypto provider is installed".to_owned(),
    })?;
    provider
        .key_provider
        .load_private_key(key_der)
        .map(|_| ())
        .map_err(|e| {
            OpenError::at(
                TLS_CLIENT_KEY_FILE,
                format!("{k}: not a usable private key: {e}"),
            )
        })
}

/// Maps config to the store's options, reading the TLS files it names.
pub fn redis_options(r: &RedisStoreSettings) -> Result<RedisOptions, OpenError> {
    let endpoint = match &r.endpoint {
        RedisEndpointSettings::Url(u) => RedisEndpoint::Url(u.clone()),
        RedisEndpointSettings::Sentinel(s) => RedisEndpoint::Sentinel(SentinelOptions {
            master_name: s.master_name.clone(),
            nodes: s.nodes.clone(),
            master_tls: s.tls,
            username: s.username.clone(),
            password: s.password.clone(),
            db: s.db,
        }),
    };
    let read = |key: &'static str, path: &std::path::Path| {
        nexus_config::files::read_regular(path, nexus_config::files::MAX_CONFIG_BYTES)
            .map_err(|e| OpenError::at(key, format!("cannot read {}: {e}", path.display())))
    };
    // Read as the TLS client will: a damaged file is named by its key here, where redis-rs
    // would say "Unable to parse TLS trust anchors" of the store's URL.
    if let Some(ca) = r.tls.ca_file.as_deref() {
        crate::server::check_ca_bundle(ca).map_err(|e| OpenError::at(TLS_CA_FILE, e))?;
    }
    if let Some((cert, key)) = &r.tls.client_cert {
        check_client_pair(cert, key)?;
    }
    let mut o = RedisOptions::with_endpoint(endpoint);
    o.tls = RedisTls {
        ca_pem: r
            .tls
            .ca_file
            .as_deref()
            .map(|p| read(TLS_CA_FILE, p))
            .transpose()?,
        client_cert_pem: match &r.tls.client_cert {
            Some((cert, key)) => Some((
                read(TLS_CLIENT_CERT_FILE, cert)?,
                read(TLS_CLIENT_KEY_FILE, key)?,
            )),
            None => None,
        },
    };
    o.key_prefix = r.key_prefix.clone();
    o.snapshot_path = r.snapshot_path.clone();
    o.reconcile_interval = r.reconcile_interval;
    o.heartbeat_interval = r.heartbeat_interval;
    o.replica_id = r.replica_id.clone().unwrap_or_else(default_replica_id);
    Ok(o)
}
