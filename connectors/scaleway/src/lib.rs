//! The `scaleway` connector: Instance API (GPU) servers, seeds 000 and 002.
//!
//! | action | what it does |
//! |---|---|
//! | `scaleway.availability` | stock per commercial type in a zone, and the first one that can be had |
//! | `scaleway.prices` | €/h per type with its GPUs (live, else a dated table) |
//! | `scaleway.images` | seed 000's image pick (GPU OS for GPU types) resolved to the zone's image id |
//! | `scaleway.server.create` | seed 002's sequence: image-only create, grow the SBS boot volume before the first start, start, IP, ports, SSH; a resource |
//! | `scaleway.server.delete` | power off, delete the server and its volumes |
//! | `scaleway.volume.resize` | grow a block volume and wait |
//! | `scaleway.security_group.ensure_ports` | add the missing inbound rules; a resource |
//!
//! Requests go through [`client::Scw`] (reqwest, `X-Auth-Token`); settings and credentials are
//! resolved as `scw` does (see [`client`]). Errors are classified in [`error`].
//!
//! ```
//! use engine_connector::Connector;
//! let ids: Vec<&str> = connector_scaleway::ScalewayConnector.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["scaleway.availability", "scaleway.prices", "scaleway.images", "scaleway.server.create",
//!                  "scaleway.server.delete", "scaleway.volume.resize", "scaleway.security_group.ensure_ports"]);
//! ```

pub mod catalog;
pub mod client;
pub mod error;
pub mod ops;
pub mod query;
pub mod server;
pub mod volume;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use error::Error;
pub use query::{Availability, AvailabilityInput, AvailabilityOutput, Images, ImagesInput, ImagesOutput, Prices, PricesInput, PricesOutput};
pub use server::{CreateInput, CreateOutput, DeleteInput, DeleteOutput, ServerCreate, ServerDelete, KIND as SERVER_KIND};
pub use volume::{EnsurePorts, EnsurePortsInput, EnsurePortsOutput, ResizeInput, ResizeOutput, VolumeResize, RULES_KIND};

/// The `scaleway` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScalewayConnector;

impl Connector for ScalewayConnector {
    fn name(&self) -> &'static str {
        "scaleway"
    }

    fn description(&self) -> &'static str {
        "Scaleway Instances: GPU servers with the seed-002 sequence, availability, prices, GPU OS images, volumes, security groups"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![
            Arc::new(Availability),
            Arc::new(Prices),
            Arc::new(Images),
            Arc::new(ServerCreate),
            Arc::new(ServerDelete),
            Arc::new(VolumeResize),
            Arc::new(EnsurePorts),
        ]
    }
}
