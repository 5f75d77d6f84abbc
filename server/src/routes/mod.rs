//! The service's routes, by concern.

pub(crate) mod agents;
pub(crate) mod memory;
pub(crate) mod observe;
pub(crate) mod plugins;
