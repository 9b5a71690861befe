//! Environments: where the broker and the services under test come from.
//!
//! - *container* (feature `containers`): testcontainers starts a [`Broker`] and each
//!   service's image on the host network (see "Known limitations" in the crate docs for
//!   why not a bridge network); services without an image run as child processes;
//! - *embedded*: the mock cluster in-process; services in-process or as child processes;
//! - *external*: bootstrap servers and an app URL; nothing is started.

mod broker;
mod config;
#[cfg(feature = "containers")]
mod container;
mod embedded;
mod image;
mod process;
mod ready;
mod running;
mod service;
#[cfg(feature = "containers")]
mod topics;

pub use broker::{ApacheKafka, Broker, Tansu};
pub use config::{EnvironmentConfig, EnvironmentError, EnvironmentKind};
pub use image::ImageRef;
pub use ready::Ready;
pub use running::Environment;
pub use service::{AppHandle, AppStart, Service};
#[cfg(feature = "containers")]
pub use topics::create_topics;
