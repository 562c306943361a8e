//! Builds the binding source named by the settings.

use std::sync::Arc;

use nexus_binding_store::file_store::FileStore;
use nexus_binding_store::BindingSource;
use nexus_config::StoreSettings;

/// The binding source for `settings`.
pub fn source(settings: &StoreSettings) -> Arc<dyn BindingSource> {
    match settings {
        StoreSettings::File(f) => Arc::new(FileStore::new(f.path.clone(), f.poll_interval)),
    }
}
