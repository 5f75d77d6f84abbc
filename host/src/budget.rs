//! Per-instance memory and table budgets, enforced by a wasmtime
//! [`ResourceLimiter`] that counts all of an instance's memories together
//! (wasmtime's own `StoreLimits` limits each memory separately).

use wasmtime::ResourceLimiter;

/// Memory use of one instance against its budget.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    /// Most bytes all linear memories may hold together.
    pub limit_bytes: u64,
    /// Bytes held now.
    pub used_bytes: u64,
    /// Most bytes held at any time.
    pub peak_bytes: u64,
    /// Most elements any one table may hold.
    pub table_elements: usize,
    /// Set when a grow was refused: (requested total, limit).
    pub refused: Option<(u64, u64)>,
}

impl MemoryBudget {
    /// A budget of `limit_bytes` of linear memory for all the instance's
    /// memories together and `table_elements` per table, with nothing used
    /// yet.
    pub fn new(limit_bytes: u64, table_elements: usize) -> MemoryBudget {
        MemoryBudget { limit_bytes, used_bytes: 0, peak_bytes: 0, table_elements, refused: None }
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        let total = self.used_bytes.saturating_add(grow);
        if total > self.limit_bytes {
            self.refused = Some((total, self.limit_bytes));
            return Ok(false);
        }
        self.used_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_memory_against_one_limit() {
        let mut b = MemoryBudget::new(100, 10);
        assert!(b.memory_growing(0, 60, None).unwrap());
        // A second memory: 60 + 50 > 100.
        assert!(!b.memory_growing(0, 50, None).unwrap());
        assert_eq!(b.refused, Some((110, 100)));
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!((b.used_bytes, b.peak_bytes), (100, 100));
        assert!(b.table_growing(0, 10, None).unwrap());
        assert!(!b.table_growing(0, 11, None).unwrap());
    }
}
