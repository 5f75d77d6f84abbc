//! Runtime support shared by elex's guest components.
//!
//! The components are `#![no_std]` so that they import only the interfaces of
//! their WIT world: Rust's `std` on `wasm32-wasip2` pulls in a dozen WASI
//! interfaces (stdio, environment, exit, clocks) even when the code uses none
//! of them. This crate supplies the two things `no_std` + `alloc` code needs:
//! a global allocator (dlmalloc over `memory.grow`) and a panic handler that
//! traps, which the host reports as a guest trap and recovers from.
#![no_std]

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

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
