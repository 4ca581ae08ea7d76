using System.Runtime.InteropServices;
using System.Text;

namespace AttributionFleet.Engine;

/// <summary>
/// Where libtorch's CPU tensors get their memory. An attribution pass allocates and frees activation-sized blocks
/// (6–50 MB on bert-base) a few hundred times. glibc malloc either keeps them in its heap, which fragments (peak RSS
/// 2.4 GB for a 2-layer bert-base-sized pass of 16 × 128, 5.4 GB for 12 layers), or, with the mmap threshold pinned
/// low, maps and unmaps each one, so the kernel zeroes every page again (40 % of the pass in system time).
/// tcmalloc reuses freed pages without zeroing and without that fragmentation: measured on the 2-layer pass,
/// DeepLift forward 1.37 s with tcmalloc, 2.7–3.5 s glibc-mmap, 1.6–2.7 s glibc-heap; peak RSS 1.39, 1.31, 2.3 GB
/// (<c>fleet bench profile</c> under each allocator).
/// <para>
/// A malloc can only be replaced before the process starts (LD_PRELOAD). <see cref="PreloadOrContinue"/>, called
/// first thing in an entry point, re-executes the same process image (execve: same pid, same arguments, same
/// stdio) with tcmalloc preloaded when the library is installed (Debian: <c>libtcmalloc-minimal4</c>) and not yet
/// loaded. Without tcmalloc (a fresh machine, or <c>system</c>) it re-executes with <see cref="GlibcTunables"/> instead:
/// glibc's malloc kept on its heap for every block: no chunk is ever mapped on its own (<c>mmap_max=0</c>), so blocks are
/// not mapped, zeroed by the kernel and unmapped each time; never trimmed back to the system in a pass (trim threshold
/// 4 GiB, top pad 64 MiB: freed pages are reused, not returned and faulted in again); one arena per two threads at most
/// (libtorch's worker threads otherwise each fragment an arena of their own). The mmap threshold alone (at its 32 MiB
/// maximum) was not enough: in this process glibc still mapped and unmapped 3–24 MB chunks by the thousand (strace:
/// 2,663 munmaps in a 2-layer benchmark, 920k page faults against tcmalloc's 180k; the heap's brk cannot grow past the
/// runtime's own mappings, so glibc falls back to mapping chunks). With <c>mmap_max=0</c>: 2-layer DeepLift, 16 × 128,
/// 0.053 s/text against 0.084 (peak RSS 1.14 GB against 0.88). Transparent huge pages for the heap (<c>hugetlb=1</c>)
/// measured slower (0.061) and are off. <c>FLEET_NATIVE_ALLOCATOR</c>: <c>auto</c> (default: tcmalloc, else tuned glibc), <c>system</c> (tuned glibc),
/// <c>system-untuned</c> (glibc's defaults: for comparisons), or a library path to preload. A <c>GLIBC_TUNABLES</c> already
/// naming <c>glibc.malloc.*</c> is the user's and is kept. On the C library's malloc the process says so in one line on
/// stderr, once (<see cref="NoticeOnce"/>).
/// </para>
/// </summary>
public static partial class NativeAllocator
{
    public const string SettingVariable = "FLEET_NATIVE_ALLOCATOR";
    private const string AttemptedVariable = "FLEET_NATIVE_ALLOCATOR_PRELOADED";
    private const string NoticeVariable = "FLEET_NATIVE_ALLOCATOR_NOTICE";
    public const string TunablesVariable = "GLIBC_TUNABLES";

    /// <summary>glibc malloc settings for activation-sized blocks (see the class summary for each one's reason).</summary>
    public const string GlibcTunables =
        "glibc.malloc.mmap_max=0:glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:" +
        "glibc.malloc.top_pad=67108864:glibc.malloc.arena_max=2";

    private static readonly string[] Candidates =
    {
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib64/libtcmalloc_minimal.so.4",
        "/usr/lib/libtcmalloc_minimal.so.4",
    };

    [LibraryImport("libc", EntryPoint = "execve", SetLastError = true)]
    private static partial int Execve(IntPtr path, IntPtr[] argv, IntPtr[] envp);

    /// <summary>
    /// Re-executes this process with tcmalloc preloaded, or with <see cref="GlibcTunables"/> when tcmalloc is missing or
    /// <c>system</c> is set, or returns: not Linux, <c>system-untuned</c>, already loaded or tuned, or already tried once
    /// (a failed preload is reported by the loader and then ignored). Returning on the C library's malloc, it prints
    /// <see cref="NoticeOnce"/>'s line.
    /// </summary>
    public static void PreloadOrContinue()
    {
        if (!OperatingSystem.IsLinux()) return;
        var setting = Environment.GetEnvironmentVariable(SettingVariable) ?? "auto";
        bool untuned = setting.Equals("system-untuned", StringComparison.OrdinalIgnoreCase);
        bool system = setting.Equals("system", StringComparison.OrdinalIgnoreCase);
        if (!untuned && Environment.GetEnvironmentVariable(AttemptedVariable) is null && Loaded() is null)
        {
            var library = system ? null
                : setting.Equals("auto", StringComparison.OrdinalIgnoreCase) ? Candidates.FirstOrDefault(File.Exists) : setting;
            if (library is not null && File.Exists(library))
                Reexec(e =>
                {
                    e["LD_PRELOAD"] = e.TryGetValue("LD_PRELOAD", out var old) && old.Length > 0 ? library + ":" + old : library;
                    e[AttemptedVariable] = library;
                });
            else if (!UserTunedMalloc())
                Reexec(e =>
                {
                    var old = e.TryGetValue(TunablesVariable, out var t) && t.Length > 0 ? t + ":" : "";
                    e[TunablesVariable] = old + GlibcTunables;
                    e[AttemptedVariable] = "glibc-tunables";
                });
        }
        NoticeOnce(Console.Error);
    }

    /// <summary>
    /// One line on <paramref name="stderr"/> when this process runs on the C library's malloc (once per process tree:
    /// child processes inherit the mark).
    /// </summary>
    public static void NoticeOnce(TextWriter stderr)
    {
        if (Loaded() is not null || Environment.GetEnvironmentVariable(NoticeVariable) is not null) return;
        Environment.SetEnvironmentVariable(NoticeVariable, "1");
        stderr.WriteLine($"fleet: native allocator: {Describe()}");
    }

    /// <summary>glibc's malloc is tuned by this process's own settings (the re-exec) or by the user's GLIBC_TUNABLES.</summary>
    public static bool GlibcTuned() => Environment.GetEnvironmentVariable(TunablesVariable)?.Contains("glibc.malloc.", StringComparison.Ordinal) == true;

    private static bool UserTunedMalloc() => GlibcTuned();

    private static void Reexec(Action<Dictionary<string, string>> change)
    {
        string[] argv;
        try { argv = Encoding.UTF8.GetString(File.ReadAllBytes("/proc/self/cmdline")).TrimEnd('\0').Split('\0'); }
        catch (IOException) { return; }
        var environment = Environment.GetEnvironmentVariables().Cast<System.Collections.DictionaryEntry>()
            .ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? "");
        change(environment);
        OpenMpSpin.AddDefault(environment); // read by libgomp when it loads: only a fresh process image takes it
        Exec("/proc/self/exe", argv, environment.Select(p => p.Key + "=" + p.Value));
    }

    /// <summary>The path of the replacement allocator mapped into this process, or null for the C library's malloc.</summary>
    public static string? Loaded()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            return File.ReadLines("/proc/self/maps")
                .Select(l => l.IndexOf('/') is var i and >= 0 ? l[i..] : "")
                .FirstOrDefault(p => Path.GetFileName(p).StartsWith("libtcmalloc", StringComparison.Ordinal));
        }
        catch (IOException) { return null; }
    }

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    /// <summary>
    /// Returns the allocator's free pages to the system (tcmalloc: MallocExtension_ReleaseFreeMemory; glibc:
    /// malloc_trim). For measurements and idle periods, not for hot paths: the pages are zeroed again when reused.
    /// </summary>
    public static void ReleaseFreeMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        if (Loaded() is { } path && NativeLibrary.TryLoad(path, out var handle) &&
            NativeLibrary.TryGetExport(handle, "MallocExtension_ReleaseFreeMemory", out var release))
        {
            unsafe { ((delegate* unmanaged<void>)release)(); }
            return;
        }
        try { MallocTrim(0); }
        catch (EntryPointNotFoundException) { }
    }

    /// <summary>One line for logs and benchmark headers.</summary>
    public static string Describe() =>
        Loaded() is { } path ? $"tcmalloc ({path})"
        : GlibcTuned() ? "C library malloc, tuned (GLIBC_TUNABLES); tcmalloc is faster: install libtcmalloc-minimal4"
        : "C library malloc, untuned (the slow path: install libtcmalloc-minimal4, or leave FLEET_NATIVE_ALLOCATOR unset)";

    private static void Exec(string path, string[] argv, IEnumerable<string> environment)
    {
        var args = argv.Select(Marshal.StringToCoTaskMemUTF8).Append(IntPtr.Zero).ToArray();
        var envp = environment.Select(Marshal.StringToCoTaskMemUTF8).Append(IntPtr.Zero).ToArray();
        var file = Marshal.StringToCoTaskMemUTF8(path);
        Execve(file, args, envp); // returns only on failure: carry on with the C library's malloc
        foreach (var p in args.Concat(envp).Append(file)) Marshal.FreeCoTaskMem(p);
    }
}
