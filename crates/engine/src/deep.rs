//! Work that recurses once per directory level (up to 512 levels: the
//! backup walk, restore planning, listing, `check`) runs on a thread of its
//! own with a known stack, so a frontend calling from a thread with a small
//! stack (1 MiB or less on some platforms) cannot overflow it.

use crate::error::{Error, Result};

/// Stack of such a thread: the deepest tree stored (512 levels) started and
/// finished at once by the walk, with a wide margin. Only the pages touched
/// are ever committed.
pub(crate) const DEEP_STACK: usize = 32 * 1024 * 1024;

/// Runs `work` on a thread with [`DEEP_STACK`] and returns its result; a
/// panic in it is resumed here, as if it had run on the caller's thread.
pub(crate) fn on_deep_stack<T: Send>(work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("cairn-deep".into())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, work)
            .map_err(Error::Thread)?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
