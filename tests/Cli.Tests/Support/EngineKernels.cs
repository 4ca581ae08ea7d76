using System.Runtime.CompilerServices;

namespace AttributionFleet.Cli.Tests.Support;

/// <summary>
/// The tests run libtorch on the kernels the product runs on: MKL's choice is made before this assembly's first
/// product, as the CLI and the worker make it first thing (<see cref="Engine.MklKernels"/>).
/// </summary>
internal static class EngineKernels
{
    [ModuleInitializer]
    internal static void Choose() => Engine.MklKernels.Choose();
}
