//! `elex:host/resources`: the caller's own budget and use, read through a
//! [`ResourcesView`] of the instance's memory budget and budgets.

use crate::bindings::elex::host::resources::{Budget, Host};
use crate::budget::MemoryBudget;
use crate::config::Budgets;

/// What `elex:host/resources` reads of an instance.
pub(crate) struct ResourcesView<'a> {
    pub(crate) memory: &'a MemoryBudget,
    pub(crate) budgets: &'a Budgets,
}

/// The linker's projection to [`ResourcesView`].
pub(crate) struct Resources;

impl wasmtime::component::HasData for Resources {
    type Data<'a> = ResourcesView<'a>;
}

impl Host for ResourcesView<'_> {
    fn current(&mut self) -> Budget {
        Budget {
            memory_limit_bytes: self.memory.limit_bytes,
            memory_used_bytes: self.memory.used_bytes,
            memory_peak_bytes: self.memory.peak_bytes,
            // The store, not its data, holds the fuel left; a guest sees its
            // allowance per call in `elex:host/resources` only as the
            // deadline, which bounds every call whether fuel is metered or
            // not.
            fuel_remaining: None,
            call_deadline_ms: Some(self.budgets.call_deadline.as_millis() as u64),
            call_timeout_ms: self.budgets.call_deadline.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_reads_its_own_budget_and_use() {
        let mut memory = MemoryBudget::new(1 << 20, 100);
        memory.used_bytes = 4096;
        memory.peak_bytes = 8192;
        let budgets = Budgets { call_deadline: std::time::Duration::from_millis(20), ..Budgets::default() };
        let b = ResourcesView { memory: &memory, budgets: &budgets }.current();
        assert_eq!((b.memory_limit_bytes, b.memory_used_bytes, b.memory_peak_bytes), (1 << 20, 4096, 8192));
        assert_eq!((b.call_deadline_ms, b.call_timeout_ms), (Some(20), 20));
    }
}
