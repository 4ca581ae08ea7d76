using AttributionFleet.Contracts.V1;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Fleet.Tests.Support;

/// <summary>
/// Worker child processes (the built AttributionFleet.Worker.dll) and an in-process client on one RabbitMQ broker,
/// with queue names of their own so tests do not see each other's messages.
/// </summary>
public sealed class FleetCluster : IAsyncDisposable
{
    private readonly List<WorkerProcess> _workers = new();
    private ServiceProvider? _client;
    public string Url { get; }
    public string JobQueue { get; }
    public string BatchQueue { get; }
    public Dictionary<string, string> WorkerSettings { get; }
    /// <summary>The job store the workers and the client share: a SQLite file of this cluster unless one is given (e.g. PostgreSQL).</summary>
    public string Store { get; }
    private readonly string? _storeFile;

    public FleetCluster(string url, int textsPerBatch = 4, string? store = null)
    {
        Url = url;
        var tag = Guid.NewGuid().ToString("N")[..10];
        if (store is null) _storeFile = Path.Combine(Path.GetTempPath(), $"fleet-test-{tag}.db");
        Store = store ?? $"Data Source={_storeFile}";
        JobQueue = $"fleet-test-{tag}-jobs";
        BatchQueue = $"fleet-test-{tag}-batches";
        WorkerSettings = new Dictionary<string, string>
        {
            ["Worker__Transport"] = "RabbitMq",
            ["RabbitMq__Url"] = url,
            ["Worker__JobQueue"] = JobQueue,
            ["Worker__BatchQueue"] = BatchQueue,
            ["Worker__TextsPerBatch"] = textsPerBatch.ToString(),
            ["Worker__TorchThreads"] = "1",
            ["Worker__ShutdownTimeoutSeconds"] = "5",
            ["Models__tiny__Path"] = TinyModel.Path,
            ["Store__ConnectionString"] = Store,
            ["Logging__LogLevel__Default"] = "Information",
            ["Logging__LogLevel__MassTransit"] = "Warning",
        };
    }

    public IReadOnlyList<WorkerProcess> Workers => _workers;

    public WorkerProcess StartWorker(string name)
    {
        var (file, args) = WorkerProcess.DotnetCommand(Path.Combine(AppContext.BaseDirectory, "AttributionFleet.Worker.dll"));
        var w = WorkerProcess.Start(file, args, WorkerSettings, name);
        _workers.Add(w);
        return w;
    }

    public async Task StartWorkers(params string[] names)
    {
        var started = names.Select(StartWorker).ToList();
        await Task.WhenAll(started.Select(w => w.WaitReady(TimeSpan.FromSeconds(60))));
    }

    /// <summary>The in-process client (submits and collects; consumes no jobs).</summary>
    public async Task<FleetClient> Client()
    {
        if (_client is not null) return _client.GetRequiredService<FleetClient>();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:Transport"] = "RabbitMq",
            ["Worker:ConsumeJobs"] = "false",
            ["Worker:JobQueue"] = JobQueue,
            ["RabbitMq:Url"] = Url,
            ["Store:ConnectionString"] = Store,
            ["Store:PollIntervalMs"] = "50",
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Warning));
        services.AddAttributionFleet(configuration);
        _client = services.BuildServiceProvider();
        await _client.GetRequiredService<IBusControl>().StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        return _client.GetRequiredService<FleetClient>();
    }

    /// <summary>Submits a job and collects it; <paramref name="onBatch"/> sees every batch as it arrives.</summary>
    public async Task<(JobOutcome Outcome, List<AttributionBatchCompleted> Batches)> Run(SubmitAttributionJob job, TimeSpan timeout,
        Action<AttributionBatchCompleted>? onBatch = null)
    {
        var client = await Client();
        var batches = new List<AttributionBatchCompleted>();
        var collect = client.Collect(job.JobId, b =>
        {
            lock (batches) batches.Add(b);
            onBatch?.Invoke(b);
            return Task.CompletedTask;
        }, null, new CancellationTokenSource(timeout).Token);
        await client.Submit(job);
        return (await collect, batches);
    }

    public string Logs() => string.Join("\n", _workers.Select(w => $"--- {w.Name} ---\n{w.Output}"));

    public async ValueTask DisposeAsync()
    {
        foreach (var w in _workers) w.Dispose();
        if (_client is not null)
        {
            await _client.GetRequiredService<IBusControl>().StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
            await _client.DisposeAsync();
        }
        if (_storeFile is not null)
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var suffix in new[] { "", "-wal", "-shm" })
                try { File.Delete(_storeFile + suffix); } catch (IOException) { }
        }
    }
}
