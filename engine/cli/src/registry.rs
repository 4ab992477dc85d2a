//! The built-in connectors, each under its cargo feature. Registration is explicit.

use engine_connector::Registry;

/// Every connector compiled in.
#[must_use]
pub fn builtin() -> Registry {
    let mut r = Registry::new();
    #[cfg(feature = "connector-shell")]
    r.register(&connector_shell::ShellConnector);
    #[cfg(feature = "connector-http")]
    r.register(&connector_http::HttpConnector::new());
    #[cfg(feature = "connector-lock")]
    r.register(&connector_lock::LockConnector);
    #[cfg(feature = "connector-ssh")]
    r.register(&connector_ssh::SshConnector);
    #[cfg(feature = "connector-gpu")]
    r.register(&connector_gpu::GpuConnector);
    #[cfg(feature = "connector-container")]
    r.register(&connector_container::ContainerConnector::new());
    #[cfg(feature = "connector-aws")]
    r.register(&connector_aws::AwsConnector);
    #[cfg(feature = "connector-scaleway")]
    r.register(&connector_scaleway::ScalewayConnector);
    #[cfg(feature = "connector-proxmox")]
    r.register(&connector_proxmox::ProxmoxConnector);
    #[cfg(feature = "connector-kubernetes")]
    r.register(&connector_kubernetes::KubernetesConnector);
    r
}

/// Finds out-of-process connectors: the path a workflow declares, else `engine-connector-NAME`
/// on `PATH`.
pub struct Plugins;

impl engine_spec::ConnectorResolver for Plugins {
    fn resolve(&self, name: &str, path: Option<&std::path::Path>) -> Result<Option<Vec<std::sync::Arc<dyn engine_connector::DynAction>>>, String> {
        let path = match path {
            Some(p) => {
                if !p.exists() {
                    return Err(format!("`{}` does not exist", p.display()));
                }
                p.to_path_buf()
            }
            None => match engine_plugin::find(name) {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        engine_plugin::describe_blocking(name, &path).map(|c| Some(c.actions))
    }
}
