//! The `aws` connector: EC2 GPU instances (seeds 001 and 003).
//!
//! | action | what it does |
//! |---|---|
//! | `aws.gpu_types` | the GPU instance catalogue and the `gpu_type × gpu_count → instance type` table; pure |
//! | `aws.ami.lookup` | newest Deep Learning AMI of a region (cached), else Ubuntu plus driver install |
//! | `aws.availability` | zones offering a type, spot prices, alternatives |
//! | `aws.instance.create` | launch an instance with GPU setup user data, encrypted gp3, spot, own security group; a resource |
//! | `aws.instance.terminate` | terminate instances and wait |
//! | `aws.security_group.create` | a group with only the given ports open; a resource |
//! | `aws.cost.estimate` | on-demand and spot cost (dated table, live spot prices) |
//!
//! Requests go through [`client::Ec2`]: the EC2 Query API over reqwest, signed with the
//! `aws-sigv4` crate; settings, credentials and endpoint are resolved as the AWS CLI does (see
//! [`client`]). Errors are classified in [`error`].
//!
//! ```
//! use engine_connector::Connector;
//! let ids: Vec<&str> = connector_aws::AwsConnector.actions().iter().map(|a| a.id()).collect();
//! assert_eq!(ids, ["aws.gpu_types", "aws.ami.lookup", "aws.availability", "aws.instance.create",
//!                  "aws.instance.terminate", "aws.security_group.create", "aws.cost.estimate"]);
//! ```

pub mod ami;
pub mod availability;
pub mod catalog;
pub mod client;
pub mod cost;
pub mod error;
pub mod gpu_types;
pub mod instance;
pub mod ops;
pub mod security_group;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod userdata;

use std::sync::Arc;

use engine_connector::{Connector, DynAction};

pub use ami::{AmiLookup, AmiLookupInput, AmiLookupOutput};
pub use availability::{Availability, AvailabilityInput, AvailabilityOutput};
pub use cost::{CostEstimate, CostInput, CostOutput};
pub use error::Error;
pub use gpu_types::{GpuTypes, GpuTypesInput, GpuTypesOutput};
pub use instance::{CreateInput, CreateOutput, InstanceCreate, InstanceTerminate, TerminateInput, TerminateOutput, KIND as INSTANCE_KIND};
pub use security_group::{SecurityGroupCreate, SgCreateInput, SgCreateOutput, KIND as SECURITY_GROUP_KIND};

/// The `aws` connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsConnector;

impl Connector for AwsConnector {
    fn name(&self) -> &'static str {
        "aws"
    }

    fn description(&self) -> &'static str {
        "AWS EC2 GPU instances: catalogue, Deep Learning AMIs, availability, create/terminate, security groups, cost"
    }

    fn actions(&self) -> Vec<Arc<dyn DynAction>> {
        vec![
            Arc::new(GpuTypes),
            Arc::new(AmiLookup),
            Arc::new(Availability),
            Arc::new(InstanceCreate),
            Arc::new(InstanceTerminate),
            Arc::new(SecurityGroupCreate),
            Arc::new(CostEstimate),
        ]
    }
}
