using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace AttributionFleet.Engine;

/// <summary>
/// Which of MKL's kernels libtorch's matrix products run on. libtorch's CPU build links Intel MKL statically, and MKL
/// picks its AVX-512 kernels only on CPUs whose vendor string says Intel: on an AMD CPU with AVX-512 (Zen 4, Zen 5) it
/// runs its AVX2 "zen" kernels. Measured on this project's build machine (AMD EPYC, Zen 5, 2 cores), float32 products of
/// bert-base's shapes (2048 × 768 by 768 × 3072): 200–228 GFLOP/s with MKL's choice, 416–511 GFLOP/s with its AVX-512
/// kernels; float64 107 → 192. The whole DeepLift pass went from 0.87 s to 0.58 s (<c>fleet bench profile --layers 4
/// --batch 8</c>), a plain forward from 0.30 s to 0.13 s.
/// <para>
/// MKL asks one exported function, <c>mkl_serv_intel_cpu_true</c>, whether the CPU is Intel's, and keeps the kernels it
/// picked from its first product on. The usual workaround preloads a library defining that function as <c>return 1</c>;
/// that needs a compiled library beside the product. <see cref="Choose"/> does the same in this process: before the
/// first product, it replaces the function's first instruction by <c>mov eax, 1; ret</c>. MKL then picks its kernels by
/// the CPU's features, as it does on Intel's CPUs (it still checks for AVX-512 itself). The results are those of MKL's
/// AVX-512 kernels: other rounding than the AVX2 kernels', the same accuracy (the tests compare with PyTorch-made
/// fixtures and with float64).
/// </para>
/// <para>
/// It changes nothing unless every condition holds: Linux on x86-64, an AMD CPU with AVX-512 F, DQ, BW and VL (as .NET
/// reports them, so the OS saves the registers), the function exported by <c>libtorch_cpu.so</c>, and its code starting
/// as the MKL build this project ships has it (<c>mov eax, [rip + x]</c>: read the cached answer). Anything else is
/// left alone and said so by <see cref="Describe"/>. <c>FLEET_MKL_KERNELS=vendor</c> leaves MKL's own choice.
/// </para>
/// </summary>
public static partial class MklKernels
{
    public const string SettingVariable = "FLEET_MKL_KERNELS";
    private const string Function = "mkl_serv_intel_cpu_true";
    private static readonly byte[] ReturnOne = { 0xB8, 0x01, 0x00, 0x00, 0x00, 0xC3 }; // mov eax, 1; ret
    private static readonly object Gate = new();
    private static string? _state;

    /// <summary>Whether MKL was let use its AVX-512 kernels in this process.</summary>
    public static bool Avx512Lifted { get; private set; }

    /// <summary>One line for logs and benchmarks: which kernels, and why.</summary>
    public static string Describe() => _state ?? "MKL's own choice (not set up: call MklKernels.Choose first)";

    /// <summary>
    /// Lifts MKL's vendor check where the conditions above hold; call it first thing in a process, before any matrix
    /// product (MKL keeps the kernels of its first). Idempotent; returns <see cref="Describe"/>'s line.
    /// </summary>
    public static string Choose()
    {
        lock (Gate) return _state ??= Apply();
    }

    private static string Apply()
    {
        var setting = Environment.GetEnvironmentVariable(SettingVariable) ?? "auto";
        if (setting.Equals("vendor", StringComparison.OrdinalIgnoreCase)) return $"MKL's own choice ({SettingVariable}=vendor)";
        if (!setting.Equals("auto", StringComparison.OrdinalIgnoreCase))
            throw new EngineSettingException(SettingVariable, $"{SettingVariable} is '{setting}': use auto (the default) or vendor");
        if (!OperatingSystem.IsLinux() || !X86Base.X64.IsSupported) return "MKL's own choice (not Linux on x86-64)";
        if (!IsAmd()) return "MKL's own choice (not an AMD CPU: MKL picks by the CPU's features)";
        if (!(Avx512F.IsSupported && Avx512DQ.IsSupported && Avx512BW.IsSupported && Avx512F.VL.IsSupported))
            return "MKL's own choice (an AMD CPU without AVX-512)";
        TorchSharp.torch.get_num_threads(); // loads libtorch, and runs no product
        if (!NativeLibrary.TryLoad("libtorch_cpu.so", out var library) || !NativeLibrary.TryGetExport(library, Function, out var address))
            return $"MKL's own choice (libtorch_cpu.so exports no {Function})";
        return Patch(address);
    }

    private static unsafe string Patch(nint address)
    {
        var code = new Span<byte>((void*)address, ReturnOne.Length);
        if (code.SequenceEqual(ReturnOne)) return Lifted();
        if (code[0] != 0x8B || code[1] != 0x05) // mov eax, [rip + disp32]: any other build's code is not ours to overwrite
            return $"MKL's own choice ({Function} starts {Convert.ToHexString(code)}, not as the MKL build this was made for)";
        long page = Environment.SystemPageSize;
        nint start = (nint)((long)address & ~(page - 1));
        nuint length = (nuint)(((long)address + ReturnOne.Length - (long)start + page - 1) / page * page);
        if (Mprotect(start, length, ProtRead | ProtWrite | ProtExec) != 0)
            return $"MKL's own choice (could not make {Function} writable: errno {Marshal.GetLastPInvokeError()})";
        ReturnOne.CopyTo(code);
        Mprotect(start, length, ProtRead | ProtExec);
        return Lifted();
    }

    private static string Lifted()
    {
        Avx512Lifted = true;
        return "MKL's AVX-512 kernels (its Intel-only check lifted on this AMD CPU with AVX-512; FLEET_MKL_KERNELS=vendor for MKL's own)";
    }

    private static bool IsAmd()
    {
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        Span<int> words = stackalloc int[] { ebx, edx, ecx };
        return System.Text.Encoding.ASCII.GetString(MemoryMarshal.AsBytes(words)) == "AuthenticAMD";
    }

    private const int ProtRead = 1, ProtWrite = 2, ProtExec = 4;

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int Mprotect(nint address, nuint length, int protection);
}
