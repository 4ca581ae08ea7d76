using System.Diagnostics;
using System.Reflection;
using AttributionFleet.Contracts.V1;
using AttributionFleet.Engine.Models;
using AttributionFleet.Engine.Text;
using AttributionFleet.Worker.Client;
using AttributionFleet.Worker.Hosting;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AttributionFleet.Cli.Commands;

/// <summary>
/// <c>fleet bench fleet</c>: end-to-end texts/s of N jobs through RabbitMQ with 1 and 2 worker processes, against the
/// engine alone in one process; the ratio is the messaging overhead.
/// </summary>
public static class BenchFleetCommand
{
    public const string Usage =
        "fleet bench fleet [--jobs 4] [--texts 32] [--workers 1,2] [--texts-per-batch 8] [--method deeplift] [--model DIR] [--repeats 3] [--poll-ms 1000]\n" +
        "                  [--rabbitmq amqp://guest:guest@localhost:5672/] (default: FLEET_TEST_RABBITMQ)";

    public static int Run(string[] args, TextWriter stdout)
    {
        var cl = new CommandLine(args, new[] { "jobs", "texts", "workers", "texts-per-batch", "method", "model", "rabbitmq", "repeats", "poll-ms" }, Array.Empty<string>());
        return RunAsync(cl, stdout).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(CommandLine cl, TextWriter stdout)
    {
        int jobs = cl.Int("jobs", 4), textsPerJob = cl.Int("texts", 32), perBatch = cl.Int("texts-per-batch", 8), repeats = cl.Int("repeats", 3);
        if (repeats < 1) throw new UsageException($"--repeats must be positive, got {repeats}");
        int pollMs = cl.Int("poll-ms", 1000); // how often the client reads the store while it waits (the job end event wakes it at once)
        if (pollMs < 10) throw new UsageException($"--poll-ms must be at least 10, got {pollMs}");
        var method = cl.Value("method") ?? "deeplift";
        var workerCounts = (cl.Value("workers") ?? "1,2").Split(',').Select(w => int.TryParse(w, out var n) && n > 0 ? n : throw new UsageException("--workers takes counts like 1,2")).ToList();
        var url = cl.Value("rabbitmq") ?? Environment.GetEnvironmentVariable("FLEET_TEST_RABBITMQ")
            ?? throw new UsageException("give --rabbitmq amqp://user:password@host:5672/ or set FLEET_TEST_RABBITMQ (there is no default user)");
        string? tempModel = null;
        var modelDir = cl.Value("model") ?? (tempModel = CreateModel());
        int cores = Environment.ProcessorCount;
        try
        {
            var allJobs = Enumerable.Range(0, jobs).Select(j => Texts(textsPerJob, j)).ToList();
            int total = jobs * textsPerJob;
            stdout.WriteLine($"bench fleet: {jobs} jobs x {textsPerJob} texts ({total} texts), method {method}, {perBatch} texts per batch, {cores} cores, model {modelDir}");

            // The engine alone runs in this process on an engine thread of its own, as a worker runs it; each repeat times
            // the engine alone and the fleet on the same jobs, and the figure is the median of those paired ratios
            // (this machine's speed drifts by tens of percent between minutes, more than the overhead being measured).
            using var engineThread = new Engine.EngineThreads(1);
            using var engine = await engineThread.Run(() => EngineAlone.Load(modelDir, method, allJobs[0].Take(perBatch).ToList()));
            foreach (int workers in workerCounts)
            {
                int threads = Math.Max(1, cores / workers);
                var ratios = new List<double>();
                await ThroughFleet(url, modelDir, allJobs, method, perBatch, workers, threads, pollMs, async fleetRun =>
                {
                    for (int r = 0; r < repeats; r++)
                    {
                        // Alternate which runs first (engine, fleet, fleet, engine, …), so a drift within the repeats cancels.
                        double engineRate = 0, seconds = 0, inEngine = 0;
                        async Task TimeEngine() => engineRate = total / await engineThread.Run(() => engine.Seconds(allJobs, perBatch));
                        async Task TimeFleet() => (seconds, inEngine) = await fleetRun();
                        if (r % 2 == 0) { await TimeEngine(); await TimeFleet(); }
                        else { await TimeFleet(); await TimeEngine(); }
                        double rate = total / seconds;
                        ratios.Add(engineRate / rate);
                        stdout.WriteLine($"  repeat {r + 1}: engine alone, 1 process ({cores} torch threads) {engineRate,7:0.0} texts/s; " +
                            $"fleet via RabbitMQ, {workers} worker process{(workers == 1 ? "" : "es")} ({threads} torch threads each) {rate,7:0.0} texts/s; engine/fleet = {engineRate / rate:0.000}x; " +
                            $"the workers' engine calls {inEngine / workers:0.00} s of {seconds:0.00} s ({(seconds - inEngine / workers) / seconds:P1} outside them; " +
                            $"engine alone / engine in the workers = {engineRate / (total / (inEngine / workers)):0.000}x)");
                    }
                });
                ratios.Sort();
                stdout.WriteLine($"  {workers} worker{(workers == 1 ? "" : "s")}: engine/fleet = {ratios[ratios.Count / 2]:0.000}x (median of {repeats} paired runs; {ratios[0]:0.000}–{ratios[^1]:0.000}x)");
            }
            return 0;
        }
        finally
        {
            if (tempModel is not null) Directory.Delete(tempModel, recursive: true);
        }
    }

    private static string CreateModel()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"fleet-bench-model-{Guid.NewGuid():N}");
        using var model = RandomModels.Create(RandomModels.BertConfig(layers: 2, hidden: 128, heads: 4, intermediate: 256, vocab: 1000, labels: 2), seed: 1, std: 0.05);
        RandomModels.Save(model, dir);
        return dir;
    }

    private static List<JobText> Texts(int count, int job)
    {
        var random = new Random(job);
        return Enumerable.Range(0, count)
            .Select(i => new JobText { Id = $"{job}-{i}", Text = string.Join(' ', Enumerable.Range(0, random.Next(5, 40)).Select(k => $"w{k}")) })
            .ToList();
    }

    /// <summary>The engine in this process: the model loaded once and warmed up, then timed over every job's batches.</summary>
    private sealed class EngineAlone : IDisposable
    {
        private readonly LoadedModel _model;
        private readonly TextExplainer _explainer;
        private readonly ExplainRequest _request;

        private EngineAlone(LoadedModel model, string method)
        {
            _model = model;
            _explainer = new TextExplainer(model);
            _request = new ExplainRequest { Method = method };
        }

        public static EngineAlone Load(string modelDir, string method, List<JobText> warmUp)
        {
            Engine.EngineRuntime.Configure(Environment.ProcessorCount); // as a worker with Worker:TorchThreads does
            var engine = new EngineAlone(LoadedModel.Load(modelDir), method);
            engine._explainer.Explain(warmUp.Select(t => t.Text).ToList(), engine._request); // warm-up, as the workers get
            return engine;
        }

        /// <summary>Seconds to explain every job, each cut into batches of texts of nearby lengths as the job planner cuts them.</summary>
        public double Seconds(List<List<JobText>> jobs, int perBatch)
        {
            var watch = Stopwatch.StartNew();
            foreach (var job in jobs)
            {
                var texts = job.Select(t => t.Text).ToList();
                var lengths = _explainer.Tokenize(texts).Select(t => t.Ids.Length).ToList();
                int fewest = (texts.Count + perBatch - 1) / perBatch;
                foreach (var batch in LengthBuckets.Plan(lengths, perBatch, BucketCostModel.For(_model.Device.type, _model.Config.HiddenSize, Engine.Architectures.ArchitectureRegistry.Of(_model.Config).PacksTokens), fewest))
                    _explainer.Explain(batch.Select(i => texts[i]).ToList(), _request);
            }
            return watch.Elapsed.TotalSeconds;
        }

        public void Dispose() => _model.Dispose();
    }

    /// <summary>
    /// Starts the workers, warms them up, and hands <paramref name="measure"/> a function that runs every job through them:
    /// the wall time, and the time the workers spent in their engine calls (each batch's explain time, from the store).
    /// </summary>
    private static async Task ThroughFleet(string url, string modelDir, List<List<JobText>> jobs, string method, int perBatch,
        int workerCount, int threads, int pollMs, Func<Func<Task<(double Seconds, double EngineSeconds)>>, Task> measure)
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        var env = new Dictionary<string, string>
        {
            ["Worker__Transport"] = "RabbitMq",
            ["RabbitMq__Url"] = url,
            ["Worker__JobQueue"] = $"bench-{tag}-jobs",
            ["Worker__BatchQueue"] = $"bench-{tag}-batches",
            ["Worker__TextsPerBatch"] = perBatch.ToString(),
            ["Worker__TorchThreads"] = threads.ToString(),
            ["Models__bench__Path"] = modelDir,
            ["Logging__LogLevel__Default"] = "Warning",
            // The job store the workers commit to and the client reads: a SQLite file of this run.
            ["Store__ConnectionString"] = $"Data Source={Path.Combine(Path.GetTempPath(), $"bench-{tag}-jobs.db")}",
        };
        var (file, prefix) = SelfCommand();
        var workers = Enumerable.Range(0, workerCount).Select(i => WorkerProcess.Start(file, prefix.Append("worker"), env, $"bench-{i}")).ToList();
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Worker:Transport"] = "RabbitMq",
            ["Worker:ConsumeJobs"] = "false",
            ["Worker:JobQueue"] = env["Worker__JobQueue"],
            ["RabbitMq:Url"] = url,
            ["Store:ConnectionString"] = env["Store__ConnectionString"],
            ["Store:PollIntervalMs"] = pollMs.ToString(),
        }).Build();
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Warning));
        services.AddAttributionFleet(configuration);
        await using var provider = services.BuildServiceProvider();
        var bus = provider.GetRequiredService<IBusControl>();
        try
        {
            await Task.WhenAll(workers.Select(w => w.WaitReady(TimeSpan.FromSeconds(90))));
            await bus.StartAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
            var client = provider.GetRequiredService<FleetClient>();
            // Warm-up: one small job per worker so every worker has run the model once.
            await Task.WhenAll(Enumerable.Range(0, workerCount).Select(i => RunJob(client, jobs[0].Take(perBatch).ToList(), method)));
            var reader = provider.GetRequiredService<Worker.Store.IJobReader>();
            await measure(async () =>
            {
                var watch = Stopwatch.StartNew();
                var ids = await Task.WhenAll(jobs.Select(j => RunJob(client, j, method)));
                double seconds = watch.Elapsed.TotalSeconds, engineMs = 0;
                foreach (var id in ids)
                    foreach (int b in await reader.BatchIndexes(id))
                        engineMs += (await reader.Batch(id, b))?.ExplainMilliseconds ?? 0;
                return (seconds, engineMs / 1000);
            });
        }
        finally
        {
            foreach (var w in workers) w.Dispose();
            await bus.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        }
    }

    private static async Task<Guid> RunJob(FleetClient client, List<JobText> texts, string method)
    {
        var job = new SubmitAttributionJob
        {
            JobId = Guid.NewGuid(),
            ModelId = "bench",
            Texts = texts,
            Options = new AttributionOptions { Method = method },
            SubmittedAt = DateTimeOffset.UtcNow,
        };
        int received = 0;
        var collect = client.Collect(job.JobId, b => { received += b.Results.Count; return Task.CompletedTask; }, null, new CancellationTokenSource(TimeSpan.FromMinutes(10)).Token);
        await client.Submit(job);
        var outcome = await collect;
        if (!outcome.Succeeded) throw new InvalidOperationException($"bench job failed: {outcome.Failed!.ReasonCode}: {outcome.Failed.Message}");
        if (received != texts.Count) throw new InvalidOperationException($"bench job returned {received} of {texts.Count} texts");
        return job.JobId;
    }

    /// <summary>How to run this CLI again: the apphost, or <c>dotnet fleet.dll</c>.</summary>
    private static (string File, string[] Prefix) SelfCommand()
    {
        var process = Environment.ProcessPath ?? "dotnet";
        var name = Path.GetFileNameWithoutExtension(process);
        return name == "dotnet" ? (process, new[] { Assembly.GetEntryAssembly()!.Location }) : (process, Array.Empty<string>());
    }
}
