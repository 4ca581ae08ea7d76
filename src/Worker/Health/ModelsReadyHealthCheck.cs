using AttributionFleet.Worker.Hosting;
using AttributionFleet.Worker.Models;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AttributionFleet.Worker.Health;

/// <summary>Where model preloading stands, for readiness.</summary>
public sealed class ModelPreloadState
{
    private volatile bool _done;
    private volatile string? _error;
    public bool Done => _done;
    public string? Error => _error;
    public void Finish(string? error) { _error = error; _done = true; }
}

/// <summary>Loads every configured model once at start (so the first batch does not pay for it) and sets libtorch's threads.</summary>
public sealed class ModelPreloader(ModelRegistry registry, ModelPreloadState state, IOptions<WorkerOptions> worker, ILogger<ModelPreloader> log,
    Engine.EngineThreads engineThreads) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        // On an engine thread, as every later libtorch call (see EngineThreads); the registry loads there too.
        engineThreads.Invoke(() => { Engine.EngineRuntime.Configure(worker.Value.TorchThreads); return 0; });
        log.LogInformation("Native allocator: {Allocator}", Engine.NativeAllocator.Describe());
        log.LogInformation("Matrix kernels: {Kernels}", Engine.MklKernels.Describe());
        if (!worker.Value.PreloadModels || !worker.Value.ConsumeJobs)
        {
            state.Finish(null);
            return;
        }
        var errors = new List<string>();
        foreach (var id in registry.PreloadIds)
        {
            if (stoppingToken.IsCancellationRequested) return;
            try
            {
                registry.Acquire(id).Dispose();
            }
            catch (Exception e)
            {
                log.LogError("Model {ModelId} could not be loaded: {Message}", id, e.Message);
                errors.Add($"{id}: {e.Message}");
            }
        }
        state.Finish(errors.Count == 0 ? null : string.Join("; ", errors));
    }, stoppingToken);
}

/// <summary>Readiness: configured models are loaded (preloading finished without errors).</summary>
public sealed class ModelsReadyHealthCheck(ModelPreloadState state, ModelRegistry registry) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var data = new Dictionary<string, object> { ["configured"] = registry.ModelIds.Count, ["loaded"] = registry.LoadedCount };
        return Task.FromResult(
            !state.Done ? HealthCheckResult.Unhealthy("models are loading", data: data)
            : state.Error is { } e ? HealthCheckResult.Unhealthy("models failed to load: " + e, data: data)
            : HealthCheckResult.Healthy("models loaded", data));
    }
}
