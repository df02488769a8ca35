import CLinuxIO

/// Settings of the daemon's own process, made once at start-up.
public enum ProcessTuning {
    /// glibc hands freed memory back to the kernel as soon as 128 KiB is free at the top of a heap.
    /// A daemon moving a blob frees and allocates chunk-sized buffers all the time, so each handed-back
    /// page came back as a page fault on the next allocation (a fresh zeroed page from the kernel:
    /// ~300 faults per MiB received in the namespace swarm, with the store's write buffers). Keeping
    /// up to 32 MiB per heap makes the same memory serve the next chunks. Returns false if glibc
    /// refused a setting (nothing else changes then).
    @discardableResult
    public static func keepFreedMemory() -> Bool {
        gq_keep_freed_memory(32 << 20, 4 << 20, 4 << 20) == 1
    }
}
