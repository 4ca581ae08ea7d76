using System.Runtime.InteropServices;
using Xunit;
using static TorchSharp.torch;

namespace AttributionFleet.Engine.Tests.Runtime;

/// <summary>
/// MKL's AVX-512 kernels on AMD CPUs that have AVX-512 (<see cref="MklKernels"/>): chosen before the first product,
/// only where the CPU qualifies, and the products they give are as accurate as float32 allows.
/// </summary>
public class MklKernelsTests
{
    /// <summary>What /proc/cpuinfo says, read apart from the code under test.</summary>
    private static bool CpuInfoSaysAmdWithAvx512()
    {
        if (!File.Exists("/proc/cpuinfo")) return false;
        var lines = File.ReadLines("/proc/cpuinfo").Take(64).ToList();
        bool amd = lines.Any(l => l.StartsWith("vendor_id") && l.Contains("AuthenticAMD"));
        var flags = lines.FirstOrDefault(l => l.StartsWith("flags"))?.Split(' ') ?? Array.Empty<string>();
        return amd && new[] { "avx512f", "avx512dq", "avx512bw", "avx512vl" }.All(flags.Contains);
    }

    [Fact]
    public void TheChoiceIsMadeBeforeTheTestsAndOnlyWhereTheCpuQualifies()
    {
        var line = MklKernels.Describe();
        Assert.DoesNotContain("not set up", line); // the module initializer ran first
        // .NET's own view too: with AVX-512 switched off for the runtime (DOTNET_EnableAVX512F=0) nothing is lifted.
        bool runtimeHasAvx512 = System.Runtime.Intrinsics.X86.Avx512F.IsSupported && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported
            && System.Runtime.Intrinsics.X86.Avx512DQ.IsSupported && System.Runtime.Intrinsics.X86.Avx512F.VL.IsSupported;
        bool expected = CpuInfoSaysAmdWithAvx512() && runtimeHasAvx512 && Environment.GetEnvironmentVariable(MklKernels.SettingVariable) is null or "auto"
            && RuntimeInformation.ProcessArchitecture == Architecture.X64;
        Assert.True(expected == MklKernels.Avx512Lifted, $"expected lifted={expected}; {line}");
    }

    [Fact]
    public unsafe void TheLiftedCheckAnswersYes()
    {
        if (!MklKernels.Avx512Lifted) return; // nothing was changed: MKL's own answer stands (asserted above)
        Assert.True(NativeLibrary.TryLoad("libtorch_cpu.so", out var library));
        var check = (delegate* unmanaged<int>)NativeLibrary.GetExport(library, "mkl_serv_intel_cpu_true");
        Assert.Equal(1, check());
    }

    [Fact]
    public void Float32ProductsStayWithinTheRoundingBound()
    {
        // |fl(a b) − a b| ≤ γ_k Σ |a_i||b_i| with γ_k = k u / (1 − k u), whatever order the kernel sums in; the float64
        // product of the same (float32-rounded) inputs stands in for a b, ~2^29 times tighter than the bound.
        using var scope = NewDisposeScope();
        const double unitRoundoff = 1.1920928955078125e-07 / 2;
        var generator = new TorchSharp.torch.Generator(7);
        var a = randn(new long[] { 96, 768 }, generator: generator, dtype: ScalarType.Float64);
        var b = randn(new long[] { 768, 3072 }, generator: generator, dtype: ScalarType.Float64);
        var a32 = a.to_type(ScalarType.Float32);
        var b32 = b.to_type(ScalarType.Float32);
        var product = a32.matmul(b32).to_type(ScalarType.Float64);
        var exact = a32.to_type(ScalarType.Float64).matmul(b32.to_type(ScalarType.Float64));
        double k = 768, gamma = k * unitRoundoff / (1 - k * unitRoundoff);
        var bound = a32.abs().to_type(ScalarType.Float64).matmul(b32.abs().to_type(ScalarType.Float64)) * gamma;
        var error = (product - exact).abs();
        Assert.True((error <= bound).all().item<bool>(), $"max error {error.max().item<double>():E3}, over the bound at {(error > bound).sum().item<long>()} entries");
        Assert.True(error.max().item<double>() > 0, "no rounding at all: the product did not run in float32");
    }
}
