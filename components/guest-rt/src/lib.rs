//! Runtime support shared by elex's guest components.
//!
//! The components are `#![no_std]` so that they import only the interfaces of
//! their WIT world: Rust's `std` on `wasm32-wasip2` pulls in a dozen WASI
//! interfaces (stdio, environment, exit, clocks) even when the code uses none
//! of them. This crate supplies the two things `no_std` + `alloc` code needs:
//! a global allocator (dlmalloc, first over the initial heap, then `memory.grow`) and a panic handler that
//! traps, which the host reports as a guest trap and recovers from.
#![no_std]

/// The global allocator: dlmalloc over `memory.grow`, except that its first
/// request is served from the zeroed space between the end of the static
/// data (`__heap_base`) and the end of the initial linear memory (guests
/// are linked with `--initial-heap`, see `components/.cargo/config.toml`).
/// A small guest therefore never calls `memory.grow` while it is being
/// instantiated and initialised, which saves the host a page-protection
/// change (and its TLB shootdown) per instantiation and per recycle.
#[cfg(target_arch = "wasm32")]
mod heap {
    use core::alloc::{GlobalAlloc, Layout};
    use core::arch::wasm32;
    use core::cell::UnsafeCell;
    use core::ptr;

    const PAGE: usize = 64 * 1024;

    unsafe extern "C" {
        static __heap_base: u8;
    }

    /// The zeroed space after the static data in the initial memory.
    #[derive(Clone, Copy)]
    enum InitialChunk {
        /// Not looked at yet (nothing has been allocated).
        Unknown,
        Free {
            base: usize,
            len: usize,
        },
        Used,
    }

    /// Where dlmalloc gets its memory.
    pub struct Memory {
        initial: UnsafeCell<InitialChunk>,
    }

    // SAFETY: the components run on one thread (wasm32 without threads).
    unsafe impl Send for Memory {}

    unsafe impl dlmalloc::Allocator for Memory {
        fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
            // SAFETY: single-threaded; see `Send` above.
            let initial = unsafe { &mut *self.initial.get() };
            if let InitialChunk::Unknown = initial {
                // The first request, so memory has not grown yet: its end
                // is the end of the initial memory.
                let base = ptr::addr_of!(__heap_base) as usize;
                let end = wasm32::memory_size(0) * PAGE;
                *initial = if end > base {
                    InitialChunk::Free { base, len: end - base }
                } else {
                    InitialChunk::Used
                };
            }
            if let InitialChunk::Free { base, len } = *initial
                && len >= size
            {
                *initial = InitialChunk::Used;
                return (base as *mut u8, len, 0);
            }
            let pages = size.div_ceil(PAGE);
            let previous = wasm32::memory_grow(0, pages);
            if previous == usize::MAX {
                return (ptr::null_mut(), 0, 0);
            }
            ((previous * PAGE) as *mut u8, pages * PAGE, 0)
        }

        fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
            ptr::null_mut()
        }

        fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
            false
        }

        fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
            false
        }

        fn can_release_part(&self, _flags: u32) -> bool {
            false
        }

        fn allocates_zeros(&self) -> bool {
            true
        }

        fn page_size(&self) -> usize {
            PAGE
        }
    }

    pub struct Heap(UnsafeCell<dlmalloc::Dlmalloc<Memory>>);

    // SAFETY: the components run on one thread (wasm32 without threads).
    unsafe impl Sync for Heap {}

    impl Heap {
        pub const fn new() -> Heap {
            Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(Memory {
                initial: UnsafeCell::new(InitialChunk::Unknown),
            })))
        }
    }

    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
        }
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: heap::Heap = heap::Heap::new();

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocation hook. On `wasm32-wasip2` wit-bindgen expects
/// wasi-libc to provide it, but a `no_std` component links no libc, so it is
/// defined here over the global allocator.
///
/// # Safety
/// Called only by the component-model runtime, with the canonical ABI's
/// contract: `old_ptr`/`old_len`/`align` describe a live allocation made by
/// this function (or are null/0), and `align` is a power of two.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    extern crate alloc;
    use alloc::alloc::{Layout, alloc, handle_alloc_error, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: the canonical ABI guarantees a power-of-two `align` and that a
    // non-null `old_ptr` came from this allocator with `old_len`/`align`.
    unsafe {
        let ptr = if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(old_ptr, Layout::from_size_align_unchecked(old_len, align), new_len)
        };
        if ptr.is_null() {
            handle_alloc_error(Layout::from_size_align_unchecked(new_len, align));
        }
        ptr
    }
}

/// `memcmp` for slice and string comparisons. wasi-libc provides it to `std`
/// components; `no_std` ones link no libc, and `compiler_builtins` does not
/// export its copy on this target.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees both ranges are readable.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// `bcmp`: like `memcmp`, but only zero / non-zero matters.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { memcmp(a, b, n) }
}
