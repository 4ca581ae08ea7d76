namespace AttributionFleet.Engine;

/// <summary>
/// How long libtorch's OpenMP workers spin before they sleep. libgomp's idle workers busy-wait after each parallel
/// region, by default for 300,000 turns (<c>GOMP_SPINCOUNT</c>), milliseconds on this hardware. Between two torch ops
/// that is what makes the next one start at once; but between a torch op and the engine's own fused loops (which run on
/// .NET's thread pool) a spinning worker holds a core the loop wants: in <c>fleet bench profile</c> at batch 1–2 the
/// fused softmax sometimes took 0.06–0.10 s instead of 0.01. With 10,000 turns, the run (33 texts of 115–129
/// tokens, <c>fleet explain --input</c>, bert-base-sized, 2 cores, farm-bench, alternating pairs, medians of three calls)
/// took 0.970×, 0.989× and 1.009× the wall time of the default and 0.938×, 0.963× and 0.975× its CPU time: the time is
/// within this machine's noise, the CPU a few percent less (what other threads of a worker get). 1,000 turns measured
/// 0.977× wall, <c>OMP_WAIT_POLICY=PASSIVE</c> 0.983× (one call each).
/// libgomp reads the variable once, when it loads, so it is set where the process re-executes itself anyway
/// (<see cref="NativeAllocator.PreloadOrContinue"/>). A <c>GOMP_SPINCOUNT</c> or <c>OMP_WAIT_POLICY</c> the user set is
/// kept.
/// </summary>
public static class OpenMpSpin
{
    public const string Variable = "GOMP_SPINCOUNT";
    public const string WaitPolicyVariable = "OMP_WAIT_POLICY";

    /// <summary>The spin count the engine's processes start with (see the summary).</summary>
    public const string EngineDefault = "10000";

    /// <summary>Adds <see cref="EngineDefault"/> to a process environment unless the user chose a spin count or a wait policy.</summary>
    internal static void AddDefault(IDictionary<string, string> environment)
    {
        if (!environment.ContainsKey(Variable) && !environment.ContainsKey(WaitPolicyVariable)) environment[Variable] = EngineDefault;
    }

    /// <summary>One line for benchmark headers: the setting this process runs with.</summary>
    public static string Describe() =>
        Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } count
            ? $"{Variable}={count}" + (count == EngineDefault ? " (the engine's default)" : "")
            : Environment.GetEnvironmentVariable(WaitPolicyVariable) is { Length: > 0 } policy
                ? $"{WaitPolicyVariable}={policy}"
                : "libgomp's default spin (300,000 turns: this process did not re-execute)";
}
