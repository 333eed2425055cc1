//! Loading a native plugin inside the confined runner, and calling it through the C ABI.
//!
//! Runs only after [`crate::sandbox::confine`] returned: `dlopen` runs the library's
//! constructors, which are plugin code.

use std::os::fd::{AsRawFd, OwnedFd};

use ironclaw_plugin_sdk::{ABI_VERSION, SYMBOL_ABI_VERSION, SYMBOL_FREE, SYMBOL_INVOKE};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW, Symbol};

#[derive(Debug, thiserror::Error)]
pub enum PluginHostError {
    #[error("failed to load the plugin library")]
    Load(#[source] libloading::Error),
    #[error("the plugin library lacks the symbol {0}")]
    Symbol(&'static str, #[source] libloading::Error),
    #[error("the plugin was built for ABI version {found}, this runner speaks version {ABI_VERSION}")]
    AbiMismatch { found: u32 },
    #[error("the plugin returned no response")]
    NoResponse,
}

type AbiVersionFn = extern "C" fn() -> u32;
type InvokeFn = unsafe extern "C" fn(*const u8, usize, *mut usize) -> *mut u8;
type FreeFn = unsafe extern "C" fn(*mut u8, usize);

/// Loads the library behind `library` (a descriptor opened before privileges were dropped),
/// checks its ABI version before any other call, and runs one request through it.
pub fn invoke(library: &OwnedFd, request: &[u8]) -> Result<Vec<u8>, PluginHostError> {
    let path = format!("/proc/self/fd/{}", library.as_raw_fd());
    // SAFETY: loading runs the library's constructors. That is plugin code, and it is meant to
    // run here: the process is fully confined (namespaces, Landlock, seccomp, no privileges).
    let lib = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_LOCAL) }.map_err(PluginHostError::Load)?;
    // SAFETY: the ABI-version symbol's type is fixed by the SDK for every ABI version.
    let abi_version: Symbol<AbiVersionFn> = unsafe { lib.get(SYMBOL_ABI_VERSION.as_bytes()) }
        .map_err(|e| PluginHostError::Symbol(SYMBOL_ABI_VERSION, e))?;
    let found = abi_version();
    if found != ABI_VERSION {
        return Err(PluginHostError::AbiMismatch { found });
    }
    // SAFETY: the library declared our ABI version, which fixes these two signatures.
    let invoke: Symbol<InvokeFn> =
        unsafe { lib.get(SYMBOL_INVOKE.as_bytes()) }.map_err(|e| PluginHostError::Symbol(SYMBOL_INVOKE, e))?;
    // SAFETY: as above.
    let free: Symbol<FreeFn> =
        unsafe { lib.get(SYMBOL_FREE.as_bytes()) }.map_err(|e| PluginHostError::Symbol(SYMBOL_FREE, e))?;

    let mut len = 0usize;
    // SAFETY: `request` outlives the call and `len` is a valid out pointer, as the ABI requires.
    let ptr = unsafe { invoke(request.as_ptr(), request.len(), &mut len) };
    if ptr.is_null() {
        return Err(PluginHostError::NoResponse);
    }
    // SAFETY: the ABI promises `ptr` points to `len` initialised bytes until freed.
    let response = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
    // SAFETY: `ptr`/`len` came from this library's invoke and are freed once.
    unsafe { free(ptr, len) };
    // The process exits right after; unloading would only run plugin destructors for nothing.
    std::mem::forget(lib);
    Ok(response)
}
