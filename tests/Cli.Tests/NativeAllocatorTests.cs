using System.Diagnostics;
using AttributionFleet.Engine;
using Xunit;

namespace AttributionFleet.Cli.Tests;

/// <summary>A fact that needs tcmalloc installed (.ci/services/tcmalloc.sh installs libtcmalloc-minimal4); skipped without it.</summary>
public sealed class TcmallocFactAttribute : FactAttribute
{
    public TcmallocFactAttribute()
    {
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"))
            Skip = "libtcmalloc-minimal4 is not installed (.ci/services/tcmalloc.sh installs it)";
    }
}

/// <summary>
/// The CLI re-executes itself in place (same pid) with tcmalloc preloaded when it is installed, runs on the C
/// library's malloc when told to or when the library is missing, and never loops.
/// </summary>
public class NativeAllocatorTests
{
    private static (string Output, int ExitCode, int Pid) RunFleet(IDictionary<string, string?> environment)
    {
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "fleet.dll"));
        info.ArgumentList.Add("bench");
        info.ArgumentList.Add("allocator");
        info.Environment.Remove(NativeAllocator.SettingVariable);
        info.Environment.Remove("LD_PRELOAD");
        info.Environment.Remove(NativeAllocator.TunablesVariable);
        info.Environment.Remove("FLEET_NATIVE_ALLOCATOR_NOTICE");
        info.Environment.Remove(MklKernels.SettingVariable);
        info.Environment.Remove(OpenMpSpin.Variable);
        info.Environment.Remove(OpenMpSpin.WaitPolicyVariable);
        foreach (var (k, v) in environment) info.Environment[k] = v;
        using var process = Process.Start(info)!;
        int pid = process.Id;
        var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
        Assert.True(process.WaitForExit(60_000), "fleet bench allocator did not exit");
        return (output, process.ExitCode, pid);
    }

    [Fact]
    public void SaysWhichMatrixKernelsRunAndRefusesAnUnknownSetting()
    {
        var (auto, code, _) = RunFleet(new Dictionary<string, string?>());
        Assert.Equal(0, code);
        Assert.Matches("matrix kernels: MKL's (AVX-512 kernels|own choice) \\(", auto);
        var (vendor, vendorCode, _) = RunFleet(new Dictionary<string, string?> { [MklKernels.SettingVariable] = "vendor" });
        Assert.Equal(0, vendorCode);
        Assert.Contains("matrix kernels: MKL's own choice (FLEET_MKL_KERNELS=vendor)", vendor);
        var (unknown, unknownCode, _) = RunFleet(new Dictionary<string, string?> { [MklKernels.SettingVariable] = "fastest" });
        Assert.Equal(2, unknownCode);
        Assert.Equal("fleet bench: FLEET_MKL_KERNELS is 'fastest': use auto (the default) or vendor", unknown.Trim());
    }

    [Fact]
    public void TheReexecutedProcessStartsWithTheEnginesOpenMpSpinUnlessTheUserChoseOne()
    {
        var (tuned, code, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system" });
        Assert.Equal(0, code);
        Assert.Contains($"OpenMP spin: {OpenMpSpin.Variable}={OpenMpSpin.EngineDefault} (the engine's default)", tuned);
        var (own, _, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system", [OpenMpSpin.Variable] = "500" });
        Assert.Contains($"OpenMP spin: {OpenMpSpin.Variable}=500", own);
        var (policy, _, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system", [OpenMpSpin.WaitPolicyVariable] = "PASSIVE" });
        Assert.Contains($"OpenMP spin: {OpenMpSpin.WaitPolicyVariable}=PASSIVE", policy);
        var (untuned, _, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system-untuned" });
        Assert.Contains("OpenMP spin: libgomp's default spin", untuned); // no re-exec: nothing set
    }

    [TcmallocFact]
    public void PreloadsTcmallocInTheSameProcess()
    {
        var (output, code, pid) = RunFleet(new Dictionary<string, string?>());
        Assert.Equal(0, code);
        Assert.Contains("allocator: tcmalloc (", output);
        Assert.Contains($"pid {pid}", output); // execve: the process the caller started, not a child
    }

    [Fact]
    public void SystemSettingKeepsTheCLibraryMalloc()
    {
        var (output, code, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system" });
        Assert.Equal(0, code);
        Assert.Contains("allocator: C library malloc", output);
    }

    [Fact]
    public void MissingLibraryFallsBackWithoutLooping()
    {
        var (output, code, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "/nonexistent/libtcmalloc_minimal.so.4" });
        Assert.Equal(0, code);
        Assert.Contains("allocator: C library malloc", output);
    }

    private static int Count(string text, string part) => (text.Length - text.Replace(part, "").Length) / part.Length;

    [TcmallocFact]
    public void TcmallocSaysNothingOnStderr()
    {
        var (output, code, _) = RunFleet(new Dictionary<string, string?>());
        Assert.Equal(0, code);
        Assert.DoesNotContain("fleet: native allocator:", output);
    }

    [Fact]
    public void SystemRunsGlibcWithTheProjectsTunablesAndSaysSoOnce()
    {
        var (output, code, pid) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system" });
        Assert.Equal(0, code);
        Assert.Contains("allocator: C library malloc, tuned", output);
        Assert.Contains($"{NativeAllocator.TunablesVariable}={NativeAllocator.GlibcTunables}", output);
        Assert.Contains($"pid {pid}", output); // re-executed in place
        Assert.Equal(1, Count(output, "fleet: native allocator:"));
    }

    [Fact]
    public void UntunedSettingKeepsGlibcDefaultsAndSaysSoOnce()
    {
        var (output, code, _) = RunFleet(new Dictionary<string, string?> { [NativeAllocator.SettingVariable] = "system-untuned" });
        Assert.Equal(0, code);
        Assert.Contains("allocator: C library malloc, untuned", output);
        Assert.DoesNotContain("glibc.malloc.", output);
        Assert.Equal(1, Count(output, "fleet: native allocator:"));
    }

    [Fact]
    public void AUsersOwnMallocTunablesAreKept()
    {
        var (output, code, _) = RunFleet(new Dictionary<string, string?>
        {
            [NativeAllocator.SettingVariable] = "system",
            [NativeAllocator.TunablesVariable] = "glibc.malloc.arena_max=1",
        });
        Assert.Equal(0, code);
        Assert.Contains($"{NativeAllocator.TunablesVariable}=glibc.malloc.arena_max=1;", output.Replace("\n", ";"));
    }
}
