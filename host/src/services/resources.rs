//! `elex:host/resources`: the caller's own budget and use.

use crate::bindings::elex::host::resources::{Budget, Host};
use crate::instance::InstanceState;

impl Host for InstanceState {
    fn current(&mut self) -> Budget {
        Budget {
            memory_limit_bytes: self.memory.limit_bytes,
            memory_used_bytes: self.memory.used_bytes,
            memory_peak_bytes: self.memory.peak_bytes,
            // Fuel metering is off in this host build (epoch deadlines bound
            // CPU time instead).
            fuel_remaining: None,
            call_deadline_ms: Some(self.budgets.call_deadline.as_millis() as u64),
            call_timeout_ms: self.budgets.call_deadline.as_millis() as u64,
        }
    }
}
