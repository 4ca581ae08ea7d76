using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace AttributionFleet.Engine;

/// <summary>Process-wide settings for the engine: MKL's kernels, threads and the native allocator.</summary>
public static partial class EngineRuntime
{
    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int Mallopt(int param, int value);

    /// <summary>
    /// Under the C library's malloc (no <see cref="NativeAllocator"/> preloaded), pins glibc's mmap threshold at
    /// 128 KiB. By default glibc raises it (up to 32 MiB) after large blocks are freed, after which the many
    /// activation-sized blocks of an attribution pass come from the heap and are not returned: measured on a 2-layer
    /// bert-base-sized model, batch 16 × 128, peak RSS 2.8 GiB → 1.9 GiB (at about twice the time: every block's
    /// pages are zeroed again by the kernel; tcmalloc avoids both).
    /// <paramref name="threads"/> &gt; 0 sets libtorch's intra-op threads (default: libtorch's, the physical cores).
    /// First of all it lets MKL use its AVX-512 kernels where it would not (<see cref="MklKernels"/>), before any product.
    /// </summary>
    public static void Configure(int threads = 0)
    {
        MklKernels.Choose();
        if (OperatingSystem.IsLinux() && NativeAllocator.Loaded() is null)
        {
            try { Mallopt(MmapThreshold, 128 * 1024); }
            catch (DllNotFoundException) { }
            catch (EntryPointNotFoundException) { }
        }
        if (threads > 0) set_num_threads(threads);
    }
}
